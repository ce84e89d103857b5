"""What flows through the gateway: the AudioJob a protocol adapter builds, and the Transcript
a backend returns. These types know no protocol and no vendor."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "AudioJob",
    "Caller",
    "Decoding",
    "JobRequest",
    "JobSpec",
    "Segment",
    "Task",
    "Transcript",
    "Word",
    "new_request_id",
]

SAMPLE_RATE = 16_000
"""Every sample that reaches a backend is 16 kHz mono float32 in [-1, 1]."""

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the API key's *name* (never the key) and the client's machine id."""

    key_name: str = "anonymous"
    machine_id: str = "unknown"


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a client asked for, as its protocol adapter read and validated it; the gateway
    adds who asked (after the key is checked) to make a :class:`JobSpec`."""

    language: str | None
    """ISO 639-1; None asks the backend to detect it."""
    locale: str | None = None
    """The client's BCP-47 tag for ``language`` (``"pt-BR"``), where its protocol has one."""
    task: Task = "transcribe"
    machine_id: str = "unknown"
    postprocess: bool | None = None
    model: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    word_probabilities: bool = False
    languages: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything about a job except its audio: what routing and capability checks look at.

    ``language`` is an ISO 639-1 code (``"en"``), or None to have the backend detect it (only
    backends whose capabilities say ``detects_language`` are routed such jobs); ``protocol``
    names the adapter that built the job (``"batch"``, ``"streaming"``, ``"openai"``) and
    ``model`` the model name the client asked for, if its protocol has one, so that routing
    rules can match on them.
    """

    language: str | None
    task: Task
    protocol: str
    caller: Caller = field(default_factory=Caller)
    postprocess: bool | None = None
    request_id: str = ""
    prompt: str | None = None
    """Text said just before this audio (a stream's previous replies, or a client's own
    vocabulary hint): a recogniser that can condition on it (Whisper's initial prompt) hears
    the audio in context, as it would inside the whole recording."""
    model: str | None = None
    locale: str | None = None
    """The client's BCP-47 tag for ``language`` (``"pt-BR"``, ``"es-419"``), canonical, where
    its protocol has one: a backend with a model per region (Google) hears Brazilian
    Portuguese as Brazilian. Its language subtag is always ``language`` (or an alias of it,
    ``iw-IL`` for ``he``); backends without regions ignore it."""
    temperature: float | None = None
    """Sampling temperature to start from (a recogniser's default schedule when None or 0)."""
    word_timestamps: bool = False
    """The client wants each word timed (:attr:`Transcript.words`); costs extra compute, so
    backends do it only when asked, and only backends that can are routed such jobs."""
    word_probabilities: bool = False
    """The client wants to know how sure the recogniser is of each word (OpenAI's
    ``logprobs``): a backend that can tell (Whisper, Google) gives its segments' words with
    :attr:`Word.probability`; one that cannot answers as usual. Best-effort, so no job is
    routed or refused for it: OpenAI's whisper-1 gives no logprobs either."""
    languages: tuple[str, ...] = ()
    """For a job whose ``language`` is None: the languages (ISO 639-1) the client says the audio
    is in, one or more of them (OpenAI's ``languages[]``). A backend that detects the language
    chooses among these only, so a hard recording is not heard as a language nobody speaks in
    it; only backends that recognise at least one of them are routed the job. Empty: any."""
    keywords: tuple[str, ...] = ()
    """Words or phrases the client expects in the audio (OpenAI's ``keywords[]``: names,
    jargon): a recogniser that can be biased toward them (Whisper's hotwords, Google's phrase
    hints) is; one that cannot answers as usual."""
    interim: bool = False
    """A best-effort look at an utterance still being spoken (an interim result): a backend
    decodes it cheaply, and raises :class:`~speechgw.backend.InterimSkipped` rather than make
    any other job wait for it. Never billed."""
    early_final: bool = False
    """A stream utterance's final, decoded while the pause that will end the utterance is
    still running (``streaming.early_finals``): decoded exactly as its final, but best-effort
    like an interim (raise :class:`~speechgw.backend.InterimSkipped` rather than make any other
    job wait), because the speaker may go on and make it worthless."""
    interim_results: bool = False
    """For a live stream: the client wants interim results. A backend that recognises streams
    itself yields them as transcripts with ``interim`` set."""
    segmented: bool = False
    """The audio is one utterance cut from a live stream by a voice-activity detector, not a
    whole recording. Noise that fooled the detector is the classic trigger of recogniser
    hallucinations ("You", "Thank you."), so backends may filter such jobs more strictly."""


@dataclass(frozen=True, slots=True)
class AudioJob:
    """One unit of work for a backend: a whole recording (a batch request, or one utterance
    cut from a stream), as 16 kHz mono float32 samples, with what to do with it.

    A live stream is not one job: the adapter opens a :class:`~speechgw.stream.Stream` with a
    :class:`JobSpec` and feeds it; the stream turns each utterance into an ``AudioJob``.
    """

    spec: JobSpec
    audio: np.ndarray

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Decoding:
    """How a Whisper-family decoder arrived at a segment: the statistics of OpenAI's
    ``verbose_json`` segments, which clients use to judge them (a segment with a high
    ``no_speech_prob`` and a low ``avg_logprob`` is likely noise heard as words)."""

    seek: int
    """Where the decoder's 30 s window started, in mel frames of 10 ms."""
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


@dataclass(frozen=True, slots=True)
class Segment:
    """A timed piece of a transcript; times are seconds from the start of the job's audio."""

    text: str
    start: float
    end: float
    decoding: Decoding | None = None
    """The decoder's statistics, from a backend that has them (Whisper; not Google)."""
    words: tuple[Word, ...] = ()
    """The segment's words, when the job asked for them: a segment reported while the rest
    of its recording is still being decoded (a stream of OpenAI deltas) carries its own."""


@dataclass(frozen=True, slots=True)
class Word:
    """One timed word (only when the job asked for ``word_timestamps`` or
    ``word_probabilities``)."""

    text: str
    start: float
    end: float
    probability: float | None = None
    """How sure the recogniser is of the word, 0 to 1 (Whisper: the mean probability of its
    tokens), where it says."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """A backend's answer. An empty ``text`` means "no speech", never "the backend failed":
    failures are raised as errors. ``language`` is the one recognised: the job's, or the one
    detected when the job named none."""

    text: str
    segments: tuple[Segment, ...]
    language: str
    backend: str = ""
    interim: bool = False
    """Not final: the words so far of an utterance still being spoken (streams only)."""
    languages: tuple[str, ...] = ()
    """Every language its words were heard in, in the order first heard, where the backend
    tells (a recording that changes language, heard window by window); empty: ``language``
    alone."""

    @property
    def words(self) -> tuple[Word, ...]:
        """Every segment's words, in order (empty unless the job asked for them)."""
        return tuple(word for segment in self.segments for word in segment.words)


_request_counter = itertools.count(1)
_process_tag = os.urandom(5).hex()


def new_request_id() -> str:
    """A short id unique within this process and, with 40 random bits per process, unlikely to
    repeat across restarts or the replicas of a fleet sharing one ledger."""
    return f"{_process_tag}-{next(_request_counter):06d}"
