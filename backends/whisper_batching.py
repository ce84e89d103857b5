"""Whisper's model calls across requests and streams: batched (``batch_size`` > 1), or made
one at a time in order of urgency (:class:`GatedWhisperModel`, without batching).

faster-whisper's algorithm runs per job, unchanged, each job in its own thread: windows, seek,
prompts, temperature fallback, word timestamps. What changes is the model underneath it:
:class:`BatchedWhisperModel` stands in for the CTranslate2 ``Whisper`` object and sends its
``generate``, ``detect_language`` and ``align`` calls through a
:class:`~speechgw.batching.CallBatcher`, which runs the calls of concurrent jobs as one batched
call. ``encode`` is deferred: a job's mel features go to ``generate`` (which accepts features
as well as encoder output) and are encoded there, in the batch, so the encoder is batched too
and nothing moves between host and device in between; ``align`` (word timing) takes them the
same way.

Without batching, :class:`GatedWhisperModel` stands in for the model the same way and makes
every call (``encode`` too, not deferred) through a :class:`~speechgw.batching.PriorityGate`:
one call per model worker at a time (two on CUDA: one running, one queued), a stream's final
first, so that it waits for a call of a long recording rather than for the whole recording.

A job's texts are what they would be alone, up to batch numerics (BENCHMARKS.md). Calls that
cannot share a batch run in separate ones: CTranslate2 requires the start-of-transcript token
at the same position in every prompt, so prompts are grouped by length (a stream's context
makes its prompt longer), and the decoding options (beam, temperature, sampling) must match.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from speechgw.batching import CallBatcher, PriorityGate

__all__ = ["BatchedWhisperModel", "GatedWhisperModel", "run_batch", "speech_windows"]

WINDOW_SECONDS = 30.0
"""Whisper's window: a recording longer than this is split when ``batch_split_recordings``."""


def _frozen(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``generate``'s keyword options as part of a batch's kind (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


def _thawed(frozen: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}


def _stack(features: Sequence[Any]) -> Any:
    """One StorageView of a batch's mel features, each ``[1, n_mels, frames]``."""
    import ctranslate2

    arrays = [np.asarray(f, dtype=np.float32) for f in features]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(arrays)))


def run_batch(model: Any, kind: Hashable, items: Sequence[Any]) -> list[Any]:
    """Run one batch of calls on the real CTranslate2 ``model`` (the batcher's function)."""
    assert isinstance(kind, tuple)
    if kind[0] == "generate":
        features = _stack([mel for mel, _ in items])
        prompts = [prompt for _, prompt in items]
        return list(model.generate(features, prompts, **_thawed(kind[2])))
    if kind[0] == "detect":
        return list(model.detect_language(_stack(items)))
    if kind[0] == "align":
        features = _stack([mel for mel, _, _ in items])
        tokens = [text for _, text, _ in items]
        frames = [count for _, _, count in items]
        return list(model.align(features, list(kind[1]), tokens, frames, **_thawed(kind[2])))
    raise ValueError(f"unknown batched call {kind!r}")


class BatchedWhisperModel:
    """The CTranslate2 Whisper model as faster-whisper sees it, with batched calls.

    Only calls for one window (a batch of one, which is what faster-whisper makes) are
    batched; anything else passes straight through, as does every other attribute.
    """

    def __init__(self, inner: Any, batcher: CallBatcher) -> None:
        self._inner = inner
        self._batcher = batcher

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        # deferred: generate and detect_language take the mel features and encode them in
        # their batch (align does too); the "encoder output" is the features themselves
        return features

    def detect_language(self, features: Any) -> list[Any]:
        if _batch_of(features) != 1:
            return self._inner.detect_language(features)
        return [self._batcher.call(("detect",), features)]

    def generate(self, features: Any, prompts: list[list[int]], **options: Any) -> list[Any]:
        if _batch_of(features) != 1 or len(prompts) != 1 or options.get("asynchronous"):
            return self._inner.generate(features, prompts, **options)
        (prompt,) = prompts
        kind = ("generate", len(prompt), _frozen(options))
        return [self._batcher.call(kind, (features, prompt))]

    def align(
        self,
        features: Any,
        start_sequence: list[int],
        text_tokens: list[list[int]],
        num_frames: int | list[int],
        **options: Any,
    ) -> list[Any]:
        # word timing (faster-whisper's find_alignment: one window's text against its
        # features, which the deferred encode hands it, so align encodes them again): in the
        # batch, so that the encoder runs once for the batch there too, and in order of urgency
        # like every other model call. CTranslate2 takes texts of any lengths in one batch and
        # gives each the alignment it gets alone (tests/test_batching.py)
        if (
            _batch_of(features) != 1
            or len(text_tokens) != 1
            or not text_tokens[0]
            or isinstance(num_frames, list)
        ):
            return self._inner.align(features, start_sequence, text_tokens, num_frames, **options)
        kind = ("align", tuple(start_sequence), _frozen(options))
        return [self._batcher.call(kind, (features, list(text_tokens[0]), int(num_frames)))]


class GatedWhisperModel:
    """The CTranslate2 Whisper model as faster-whisper sees it, each call made in its turn
    (:class:`~speechgw.batching.PriorityGate`); every other attribute passes through."""

    def __init__(self, inner: Any, gate: PriorityGate) -> None:
        self._inner = inner
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._gate.run(self._inner.encode, *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._gate.run(self._inner.generate, *args, **kwargs)

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        return self._gate.run(self._inner.detect_language, *args, **kwargs)

    def align(self, *args: Any, **kwargs: Any) -> Any:
        return self._gate.run(self._inner.align, *args, **kwargs)


def _batch_of(features: Any) -> int:
    shape = getattr(features, "shape", None)
    return int(shape[0]) if shape else 1


def speech_windows(audio: np.ndarray, sample_rate: int = 16000) -> list[tuple[int, int]]:
    """Spans of ``audio`` (sample offsets) of at most :data:`WINDOW_SECONDS` each, cut at the
    pauses Silero VAD finds (faster-whisper's, as its ``BatchedInferencePipeline`` uses), each
    running from its first speech to its last: windows that can be decoded at once. Unlike
    that pipeline's chunks, a span keeps the pauses inside it, so its timestamps map back by
    adding its start."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(max_speech_duration_s=WINDOW_SECONDS, min_silence_duration_ms=160)
    stamps = get_speech_timestamps(audio, options, sampling_rate=sample_rate)
    limit = int(WINDOW_SECONDS * sample_rate)
    spans: list[tuple[int, int]] = []
    for stamp in stamps:
        if spans and stamp["end"] - spans[-1][0] <= limit:
            spans[-1] = (spans[-1][0], stamp["end"])
        else:
            spans.append((stamp["start"], stamp["end"]))
    return spans
