"""Turns of a live stream as a client that shows them sees them: where speech began and
ended (:class:`SpeechEdge`), and a stream whose client says itself where each turn ends
(:class:`ClientTurns`, a push-to-talk button) instead of a pause.

Protocol-free: the Realtime adapter reports the edges as ``input_audio_buffer.speech_started``
and ``speech_stopped``, but any protocol with turn events could.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import numpy as np

from .audio import from_pcm16, to_pcm16
from .config import StreamingConfig
from .jobs import SAMPLE_RATE

__all__ = ["ClientTurns", "OnSpeech", "SpeechEdge", "TurnTaking"]


@dataclasses.dataclass(frozen=True, slots=True)
class SpeechEdge:
    """An utterance began (``started``) or ended, ``at_sample`` samples (16 kHz) into the
    stream. An ended one was ``kept`` (it will be recognised, and answered once) or dropped
    (too little speech: noise, a cough)."""

    started: bool
    at_sample: int
    kept: bool = False

    @property
    def at_ms(self) -> int:
        return self.at_sample * 1000 // SAMPLE_RATE


OnSpeech = Callable[[SpeechEdge], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class TurnTaking:
    """A stream whose client follows its turns: ``on_speech`` hears each :class:`SpeechEdge`;
    ``client_ends_turns``: the client ends each turn itself (:class:`ClientTurns`), else a
    pause of ``end_silence_ms`` does, the utterance starting ``start_padding_ms`` before its
    speech (both: the server's ``streaming`` settings when None)."""

    on_speech: OnSpeech
    client_ends_turns: bool = False
    end_silence_ms: int | None = None
    start_padding_ms: int | None = None

    def applied_to(self, config: StreamingConfig) -> StreamingConfig:
        """The server's streaming settings with this client's pause and lead-in."""
        changes = {
            name: value
            for name, value in (
                ("end_silence_ms", self.end_silence_ms),
                ("start_padding_ms", self.start_padding_ms),
            )
            if value is not None
        }
        return dataclasses.replace(config, **changes) if changes else config


class ClientTurns:
    """The segmenter of a stream whose client ends each turn itself (:meth:`flush`, its
    commit): everything between two commits is one utterance, pauses and silence included, as
    the client chose it. A turn that reaches ``max_utterance_seconds`` is ended there (memory
    stays bounded whatever the client does), and the rest begins the next.

    Duck-types the parts of :class:`~speechgw.segmenter.Segmenter` that
    :class:`~speechgw.stream.Stream` uses; it never foresees an end, so no early final is
    decoded for it.
    """

    lead_in_padding = 0
    trailing_silence = 0

    def __init__(self, config: StreamingConfig) -> None:
        self._pieces: list[np.ndarray] = []
        self._held = 0  # samples in _pieces
        self._limit = max(1, int(config.max_utterance_seconds * SAMPLE_RATE))
        self._fed = 0  # samples fed before this turn's first
        self.utterances_started = 0
        self.edges: list[SpeechEdge] = []

    @property
    def speaking(self) -> bool:
        return self._held > 0

    @property
    def buffered_samples(self) -> int:
        return self._held

    def open_utterance(self) -> np.ndarray | None:
        if not self._pieces:
            return None
        return from_pcm16(np.concatenate(self._pieces))

    def closing_length(self) -> int | None:
        return None

    def closing_utterance(self) -> np.ndarray | None:
        return None

    def feed(self, samples: np.ndarray) -> list[np.ndarray]:
        closed: list[np.ndarray] = []
        pcm = to_pcm16(samples)
        while len(pcm):
            if not self._pieces:
                self.utterances_started += 1
                self.edges.append(SpeechEdge(True, self._fed))
            taken = pcm[: self._limit - self._held]
            self._pieces.append(taken)
            self._held += len(taken)
            pcm = pcm[len(taken) :]
            if self._held >= self._limit:
                closed.extend(self.flush())
        return closed

    def flush(self) -> list[np.ndarray]:
        """End the turn (the client's commit, or the stream's end)."""
        if not self._pieces:
            return []
        utterance = from_pcm16(np.concatenate(self._pieces))
        self._fed += self._held
        self.edges.append(SpeechEdge(False, self._fed, kept=True))
        self._pieces, self._held = [], 0
        return [utterance]

    def discard(self) -> None:
        """Forget the turn so far (the client cleared it)."""
        self._fed += self._held
        self._pieces, self._held = [], 0
