"""The Backend interface: what every recogniser behind the gateway offers the core.

A backend knows no protocol. It gets 16 kHz mono float32 audio and a :class:`JobSpec`, and it
returns a :class:`Transcript` or raises a :class:`~speechgw.errors.SpeechGWError`. A backend
that recognises live streams natively (endpointing included) also implements
:meth:`Backend.stream`. One instance serves every connection (one model per process);
per-job state stays in the call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .batching import BatchStats
from .jobs import JobSpec, Task, Transcript

if TYPE_CHECKING:
    from .live_audio import LiveAudio
    from .progress import OnSegment

__all__ = ["Backend", "Capabilities", "InterimSkipped"]


class InterimSkipped(Exception):
    """A backend had no free capacity for a best-effort job (``JobSpec.interim`` or
    ``JobSpec.early_final``) and did not run it: finals, of this stream or any other, always go
    first. Not an error."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do; the router uses it to skip backends that cannot serve a job."""

    languages: frozenset[str] | None
    """ISO 639-1 codes it recognises; None means any code the caller sends."""
    tasks: frozenset[Task]
    streaming: bool = False
    """It recognises a live stream itself, deciding where utterances end (:meth:`Backend.stream`);
    otherwise the gateway cuts streams into utterances with a voice-activity detector."""
    detects_language: bool = False
    """It takes jobs whose language is None and says in the transcript which one it heard."""
    detects_among: int = 0
    """It takes jobs whose language is None when they name the languages the audio may be in
    (:attr:`JobSpec.languages`), up to this many of those it recognises, and says which it
    heard: Google, told a language and up to three alternatives."""
    word_timestamps: bool = False
    """It times each word when a job asks (``JobSpec.word_timestamps``)."""
    early_finals: bool = False
    """It takes ``JobSpec.early_final`` jobs on idle capacity only. Streams send such
    decodes to no other backend: for one billed per call (a cloud API), each final decoded
    ahead that the speaker's next words make worthless would cost money."""

    def supports(self, language: str | None, task: Task, among: tuple[str, ...] = ()) -> bool:
        """Whether it recognises ``language`` and does ``task``. For ``language`` None: it
        detects the language (among the languages ``among`` when any are given, at least one
        of which it recognises), or, given ``among``, it recognises one to
        :attr:`detects_among` of them."""
        if task not in self.tasks:
            return False
        if language is None:
            known = len(self.among(among))
            return (self.detects_language and (known > 0 or not among)) or (
                0 < known <= self.detects_among
            )
        return self.languages is None or language in self.languages

    def among(self, languages: tuple[str, ...]) -> tuple[str, ...]:
        """Those of ``languages`` it recognises, in their order."""
        if self.languages is None:
            return languages
        return tuple(code for code in languages if code in self.languages)

    def serves(self, spec: JobSpec) -> bool:
        """Whether it can do everything ``spec`` asks."""
        return self.supports(spec.language, spec.task, spec.languages) and (
            self.word_timestamps or not spec.word_timestamps
        )


class Backend(ABC):
    """A recogniser. Subclasses declare ``Options``, the dataclass of their YAML settings."""

    Options: ClassVar[type[Any]]

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.options = options

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load models or open channels; called once before the server accepts connections."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` took; called once at shutdown."""

    @property
    def ready(self) -> bool:
        """Whether :meth:`start` has completed; reported by ``/health`` and the metrics."""
        return True

    @property
    def info(self) -> dict[str, object]:
        """What ``/health`` shows of it besides readiness (a local model's device, say), so
        that an operator can see where it runs; JSON values only."""
        return {}

    @property
    def idle(self) -> bool:
        """Whether a best-effort job (``JobSpec.interim`` or ``early_final``) would find free
        capacity this instant. Streams ask before they copy an utterance out for one, so that
        a busy backend costs them a look, not a copy of the utterance per audio chunk only to
        have it skipped. A backend that never skips such jobs answers True."""
        return True

    @property
    def room_for_interim(self) -> bool:
        """:attr:`idle`, for an interim: a backend may also fit interims beside work that
        would keep an early final waiting (a local model: between a recording's calls, within
        a share of its time)."""
        return self.idle

    @property
    def waiting(self) -> int:
        """Jobs handed to it that wait for its compute this instant: for a place among the
        jobs it runs at once, or, a job under way, for the model between two of its calls (a
        recording's next window while a stream's final goes first). Read at each scrape for
        ``speechgw_backend_waiting``: the queue an operator adds capacity for. A backend that
        queues nothing of its own (a remote service) answers 0."""
        return 0

    @property
    def batch_stats(self) -> BatchStats | None:
        """How full its batched model calls have been (``speechgw_batch_*`` metrics), for a
        backend that batches the calls of concurrent jobs; None for one that does not."""
        return None

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    async def transcribe(self, audio: np.ndarray, spec: JobSpec) -> Transcript:
        """Recognise one whole recording (16 kHz mono float32) and return its transcript.

        Must not block the event loop: heavy work belongs in a worker thread.
        """

    async def transcribe_progressive(
        self, audio: np.ndarray, spec: JobSpec, on_segment: OnSegment
    ) -> Transcript:
        """:meth:`transcribe`, reporting each segment to ``on_segment`` (from any thread) as
        soon as it is recognised, for a client that takes the text as it comes; the returned
        transcript holds them all again. A cancelled call should stop decoding soon.

        This default reports nothing before the end (the gateway then hands the client the
        whole transcript's segments at once): enough for a recogniser that answers in one go.
        """
        return await self.transcribe(audio, spec)

    def stream(self, audio: LiveAudio, spec: JobSpec) -> AsyncGenerator[Transcript, None]:
        """Recognise a live stream, for a backend whose capabilities say ``streaming``.

        Read the audio through ``audio.reader()``; yield one transcript per final utterance,
        its segments timed in seconds from the stream's first sample, and ``audio.commit()``
        the samples each one settles, so that a restarted session (a new reader) replays only
        what is not yet recognised. Stop when the reader returns None. Raise
        :class:`~speechgw.errors.BackendUnavailable` to give up: the gateway hands the
        uncommitted audio to the route's fallback backend.
        """
        raise NotImplementedError(f"backend {self.name!r} does not recognise streams itself")
