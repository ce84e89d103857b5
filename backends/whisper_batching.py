"""Whisper's model calls across requests and streams: batched (``batch_size`` > 1), or made
one at a time in order of urgency (:class:`GatedWhisperModel`, without batching).

faster-whisper's algorithm runs per job, unchanged, each job in its own thread: windows, seek,
prompts, temperature fallback, word timestamps. What changes is the model underneath it:
:class:`BatchedWhisperModel` stands in for the CTranslate2 ``Whisper`` object and sends its
``generate``, ``detect_language`` and ``align`` calls through a
:class:`~speechgw.batching.CallBatcher`, which runs the calls of concurrent jobs as one batched
call.

``encode`` is deferred where a window's encoding is used once: a job's mel features go to
``generate`` (which accepts features as well as encoder output) and are encoded there, in the
batch, so the encoder is batched too and nothing moves between host and device in between.
A job whose windows are used twice or more (word timing: ``align`` after ``generate``, which
``segment_times: sentences`` makes for every window; each window's language heard before it
is decoded) has its encodes batched as calls of their own instead, and their outputs kept on
the host for each later call, so that each window goes through the encoder once, not once per
call (:meth:`BatchedWhisperModel.encodings_kept`).

Without batching, :class:`GatedWhisperModel` stands in for the model the same way and makes
every call (``encode`` too, not deferred) through a :class:`~speechgw.batching.PriorityGate`:
one call per model worker at a time (two on CUDA: one running, one queued), a stream's final
first, so that it waits for a call of a long recording rather than for the whole recording.

A job's texts are what they would be alone, up to batch numerics (BENCHMARKS.md). Calls that
cannot share a batch run in separate ones: CTranslate2 requires the start-of-transcript token
at the same position in every prompt, so prompts are grouped by length (a stream's context
makes its prompt longer), and the decoding options (beam, temperature, sampling) must match;
mel features and encoder outputs do not share a batch either.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from speechgw.batching import CallBatcher, PriorityGate
from speechgw.jobs import SAMPLE_RATE

from .whisper_clips import listen
from .whisper_vad import Heard

__all__ = ["BatchedWhisperModel", "GatedWhisperModel", "run_batch", "speech_windows"]

WINDOW_SECONDS = 30.0
"""Whisper's window: a recording longer than this is split when ``batch_split_recordings``."""


def _frozen(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``generate``'s keyword options as part of a batch's kind (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


def _thawed(frozen: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}


def _stack(windows: Sequence[Any]) -> Any:
    """One StorageView of a batch's windows: mel features, each ``[1, n_mels, frames]``, or
    encoder outputs kept on the host, each ``[1, frames, width]`` (in the encoder's type)."""
    import ctranslate2

    arrays = [np.asarray(w) for w in windows]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(arrays)))


def _storage(window: Any) -> Any:
    """A window as CTranslate2 takes it outside a batch: a kept encoder output (numpy, on the
    host) as a StorageView; mel features as they came."""
    if not isinstance(window, np.ndarray):
        return window
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(window))


def _form(window: Any) -> tuple[int, ...]:
    """What a window is, as part of a batch's kind: mel features and encoder outputs differ
    in shape, and CTranslate2 takes a batch of one or the other."""
    return tuple(int(n) for n in window.shape[1:])


def run_batch(model: Any, kind: Hashable, items: Sequence[Any]) -> list[Any]:
    """Run one batch of calls on the real CTranslate2 ``model`` (the batcher's function)."""
    assert isinstance(kind, tuple)
    if kind[0] == "encode":
        # on the host, where it can be cut per window (a view each) and go into any later
        # batch; the next call moves it back to the device (as faster-whisper does with
        # several GPUs), about a megabyte per window for tiny.en in float16
        encoded = np.asarray(model.encode(_stack(items), to_cpu=True))
        return [encoded[i : i + 1] for i in range(len(items))]
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
        self._thread = threading.local()
        # numpy reads CTranslate2's encoder outputs in every type but bfloat16
        self._keepable = "bfloat16" not in str(getattr(inner, "compute_type", ""))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextlib.contextmanager
    def encodings_kept(self, enabled: bool = True) -> Iterator[None]:
        """Within this block, the windows this thread's job encodes are encoded at once, in a
        batch of encodes, and kept for every call that takes them (use it where each window
        is used more than once: word timing, a language heard per window)."""
        self._thread.keep = enabled and self._keepable
        try:
            yield
        finally:
            self._thread.keep = False

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        if not getattr(self._thread, "keep", False) or _batch_of(features) != 1:
            # deferred: the calls that take the window encode its mel features in their
            # batch; the "encoder output" is the features themselves
            return features
        return self._batcher.call(("encode", _form(features)), features)

    def detect_language(self, features: Any) -> list[Any]:
        if _batch_of(features) != 1:
            return self._inner.detect_language(_storage(features))
        return [self._batcher.call(("detect", _form(features)), features)]

    def generate(self, features: Any, prompts: list[list[int]], **options: Any) -> list[Any]:
        if _batch_of(features) != 1 or len(prompts) != 1 or options.get("asynchronous"):
            return self._inner.generate(_storage(features), prompts, **options)
        (prompt,) = prompts
        kind = ("generate", len(prompt), _frozen(options), _form(features))
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
        # encoder output, the one kept since generate when the job keeps its encodings): in
        # the batch, in order of urgency like every other model call. CTranslate2 takes texts
        # of any lengths in one batch and gives each the alignment it gets alone
        # (tests/test_batching.py)
        if (
            _batch_of(features) != 1
            or len(text_tokens) != 1
            or not text_tokens[0]
            or isinstance(num_frames, list)
        ):
            return self._inner.align(
                _storage(features), start_sequence, text_tokens, num_frames, **options
            )
        kind = ("align", tuple(start_sequence), _frozen(options), _form(features))
        return [self._batcher.call(kind, (features, list(text_tokens[0]), int(num_frames)))]


class GatedWhisperModel:
    """The CTranslate2 Whisper model as faster-whisper sees it, each call made in its turn
    (:class:`~speechgw.batching.PriorityGate`); every other attribute passes through."""

    def __init__(self, inner: Any, gate: PriorityGate) -> None:
        self._inner = inner
        self._gate = gate
        self._thread = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextlib.contextmanager
    def first_encoding_kept(self) -> Iterator[None]:
        """Within this block, the first window this thread's job encodes is kept with its mel
        features, and encoding those features again returns it: a job decoded a second time
        from its start (its output echoed its prompt, so it is decoded again without) runs
        the encoder once, where the encoder is most of an utterance's decode (1.23 s of a
        slow CPU's 1.58 s for tiny.en)."""
        self._thread.keeping = True
        try:
            yield
        finally:
            self._thread.keeping = False
            self._thread.kept = None

    def encode(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self._thread, "keeping", False):
            return self._gate.run(self._inner.encode, features, *args, **kwargs)
        mel = np.asarray(features)  # faster-whisper's features are on the host
        kept = getattr(self._thread, "kept", None)
        if kept is not None and kept[0].shape == mel.shape and np.array_equal(kept[0], mel):
            return kept[1]
        output = self._gate.run(self._inner.encode, features, *args, **kwargs)
        if kept is None:
            self._thread.kept = (mel.copy(), output)
        return output

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._gate.run(self._inner.generate, *args, **kwargs)

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        return self._gate.run(self._inner.detect_language, *args, **kwargs)

    def align(self, *args: Any, **kwargs: Any) -> Any:
        return self._gate.run(self._inner.align, *args, **kwargs)


def _batch_of(features: Any) -> int:
    shape = getattr(features, "shape", None)
    return int(shape[0]) if shape else 1


def speech_windows(audio: np.ndarray) -> tuple[list[tuple[int, int]], Heard]:
    """Spans of ``audio`` (sample offsets) of at most :data:`WINDOW_SECONDS` each, cut at the
    pauses Silero VAD finds (faster-whisper's, as its ``BatchedInferencePipeline`` uses), each
    running from its first speech to its last: windows that can be decoded at once. Unlike
    that pipeline's chunks, a span keeps the pauses inside it, so its timestamps map back by
    adding its start. With them, what Silero heard (to time segments and words by their
    speech).

    Silero hears the recording brought up to a normal level, five minutes at a time
    (:func:`~.whisper_clips.listen`), as for a recording decoded whole: as recorded,
    it heard no speech in some of ../shared/audio's recordings made 50 dB quieter, and these
    came back empty where Whisper, decoding them whole, had most of their words
    (``bench/split_accuracy.py --quieter 50``)."""
    heard = listen(audio, threshold=0.5, min_silence_ms=160, max_speech_s=WINDOW_SECONDS)
    limit = int(WINDOW_SECONDS * SAMPLE_RATE)
    spans: list[tuple[int, int]] = []
    for start, end in heard.spans:
        if spans and end - spans[-1][0] <= limit:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans, heard
