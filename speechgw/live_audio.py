"""LiveAudio: a live stream's 16 kHz audio on its way to a backend that recognises streams
itself (and decides where utterances end).

Such a backend runs recognition *sessions* that it must restart (a vendor's session limit, a
transient failure), and a restart must lose nothing: the audio a session was sent but never
answered for has to be sent again. So the buffer keeps every sample from the last *committed*
position (what the backend has recognised for good) onwards, and a backend reads it through a
:class:`Reader` that starts at the committed position; opening a new reader replays from
there. The same uncommitted audio is what the gateway hands to a fallback backend if the
streaming backend gives up.

Memory is bounded twice: :meth:`LiveAudio.put` waits (back-pressure on the client) while more
than ``unread_limit`` samples wait unread, or while more than ``retained_limit`` samples are
uncommitted. Samples are kept as 16-bit PCM, the form streaming APIs take.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable

import numpy as np

from .audio import from_pcm16, to_pcm16
from .jobs import SAMPLE_RATE

__all__ = ["FullBufferLog", "LiveAudio", "Reader"]

_LOGGER = logging.getLogger(__name__)


class FullBufferLog:
    """The contract's ``Audio stream buffer full`` line for one stream's input buffer: once
    each time the input starts waiting for room, not for every message or utterance that
    waits while a fast client keeps the buffer full (a line per few seconds of audio)."""

    def __init__(self, logger: logging.Logger, stream_id: str, held: str) -> None:
        self._logger = logger
        self._stream_id = stream_id
        self._held = held  # what the seconds in the line are, e.g. "queued"
        self._pausing = False  # the input has waited for room since it last found some

    def room(self) -> None:
        """The input found room without waiting."""
        self._pausing = False

    def full(self, held_seconds: float) -> None:
        """The input waits for room, the buffer holding ``held_seconds`` of audio."""
        if not self._pausing:
            self._pausing = True
            self._logger.warning(
                "stream %s: Audio stream buffer full (%.1f s %s); pausing its input",
                self._stream_id,
                held_seconds,
                self._held,
            )


_COMPACT_AT = 1024  # dropped chunk slots kept before the lists are compacted


class LiveAudio:
    """Uncommitted audio of one stream, in arrival order, with its arrival times."""

    def __init__(self, unread_limit: int, retained_limit: int, stream_id: str = "") -> None:
        self._full_log = FullBufferLog(_LOGGER, stream_id, "not recognised yet")
        self._unread_limit = unread_limit
        self._retained_limit = max(retained_limit, unread_limit)
        # chunks from index _head on are live; _starts[i] is chunk i's first sample
        self._starts: list[int] = []
        self._chunks: list[np.ndarray] = []
        self._arrivals: list[float] = []
        self._head = 0
        self._committed = 0
        self._end = 0
        self._closed = False
        self._abandoned = False
        self._reader: Reader | None = None
        self._last_arrival: float | None = None  # of the last committed sample
        self._changed = _Changed()

    # --- the producer: the gateway's stream ------------------------------------------------

    async def put(self, samples: np.ndarray) -> bool:
        """Append 16 kHz samples (int16, or float32 in [-1, 1]); waits while the buffer is
        full. Returns False (and keeps nothing) once the audio has been :meth:`abandon`-ed: the
        caller takes it elsewhere. Cancelling the wait keeps nothing either."""
        if not len(samples):
            return not self._abandoned
        if self._abandoned or self._has_room():
            self._full_log.room()
        else:
            self._full_log.full((self._end - self._committed) / SAMPLE_RATE)
        await self._changed.wait_for(lambda: self._abandoned or self._has_room())
        if self._abandoned:
            return False
        self.put_nowait(samples)
        return True

    def put_nowait(self, samples: np.ndarray) -> None:
        """Append samples whether or not the buffer has room, unless the audio has been
        abandoned: for a caller that must not drop what it holds and cannot wait (a stream's
        reader stopped by a shutdown with a message in hand); one message over the limit."""
        if self._abandoned or not len(samples):
            return
        self._starts.append(self._end)
        self._chunks.append(to_pcm16(samples))
        self._arrivals.append(time.monotonic())
        self._end += len(samples)
        self._changed.notify()

    def _has_room(self) -> bool:
        position = self._reader.position if self._reader is not None else self._committed
        return (
            self._end - position <= self._unread_limit
            and self._end - self._committed <= self._retained_limit
        )

    def close(self) -> None:
        """No more audio will come: readers get None once they have read it all."""
        self._closed = True
        self._changed.notify()

    def abandon(self) -> np.ndarray:
        """Stop: take every uncommitted sample back (16 kHz float32) and refuse further puts.
        The backend's reader sees the end of the audio."""
        self._abandoned = True
        pending = self._chunks[self._head :]
        self._chunks, self._starts, self._arrivals, self._head = [], [], [], 0
        self._committed = self._end
        self._changed.notify()
        if not pending:
            return np.zeros(0, np.float32)
        return from_pcm16(np.concatenate(pending))

    # --- the consumer: a backend ------------------------------------------------------------

    @property
    def committed(self) -> int:
        """Samples from the stream's start that the backend has recognised for good."""
        return self._committed

    @property
    def end(self) -> int:
        """Samples received so far."""
        return self._end

    def reader(self) -> Reader:
        """A reader from the committed position (a new session replays what is uncommitted).
        Any earlier reader stops: it reads None from now on."""
        self._reader = Reader(self, self._committed)
        self._changed.notify()  # the superseded reader's waits end
        return self._reader

    async def wait_for_audio(self) -> bool:
        """Wait until there is uncommitted audio; False once the stream has ended without
        more. A backend calls it before opening a session, so that an idle client holds no
        session open."""
        await self._changed.wait_for(
            lambda: self._end > self._committed or self._closed or self._abandoned
        )
        return self._end > self._committed and not self._abandoned

    def commit(self, position: int) -> None:
        """Everything before ``position`` is recognised for good: forget it. Positions past
        what the current reader has read, or before the last commit, are clamped."""
        if self._abandoned:
            return
        limit = self._reader.position if self._reader is not None else self._end
        position = max(min(position, limit), self._committed)
        if position == self._committed:
            return
        self._last_arrival = self._arrivals[self._index(position - 1)]
        self._committed = position
        # drop whole chunks before the position; slice the one it falls in
        index = self._index(position)
        if self._starts[index] < position:
            cut = position - self._starts[index]
            self._chunks[index] = self._chunks[index][cut:]
            self._starts[index] = position
        for i in range(self._head, index):
            self._chunks[i] = _EMPTY
        self._head = index
        if self._head >= _COMPACT_AT and self._head * 2 >= len(self._chunks):
            del self._starts[: self._head], self._chunks[: self._head]
            del self._arrivals[: self._head]
            self._head = 0
        self._changed.notify()

    def arrival(self, position: int) -> float:
        """When (``time.monotonic()``) the sample just before ``position`` arrived: the start
        of an utterance's processing latency, if it ends at ``position``."""
        if position <= self._committed:
            return self._last_arrival if self._last_arrival is not None else time.monotonic()
        return self._arrivals[self._index(min(position, self._end) - 1)]

    def _index(self, position: int) -> int:
        """The live chunk holding sample ``position`` (``committed <= position < end``); for
        ``position == end``, the last chunk (whose end it is)."""
        return max(bisect.bisect_right(self._starts, position, lo=self._head) - 1, self._head)

    def _read(self, reader: Reader, max_samples: int) -> np.ndarray:
        index = self._index(reader.position)
        pieces, wanted, position = [], max_samples, reader.position
        while wanted and index < len(self._chunks):
            chunk = self._chunks[index]
            offset = position - self._starts[index]
            piece = chunk[offset : offset + wanted]
            pieces.append(piece)
            wanted -= len(piece)
            position += len(piece)
            index += 1
        reader.position = position
        self._changed.notify()  # room for the producer
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


_EMPTY = np.zeros(0, "<i2")


class _Changed:
    """Wakes every waiter when the buffer changes. Unlike ``asyncio.Condition`` it needs no
    lock, so synchronous methods (commit, abandon) can notify; all callers share one loop."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; cancelling the wait changes nothing."""
        while not predicate():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class Reader:
    """A backend session's view of the live audio, from where the session began."""

    def __init__(self, audio: LiveAudio, position: int) -> None:
        self._audio = audio
        self.start = position
        """The stream sample this session's first sample is: session times are offsets
        from here."""
        self.position = position

    @property
    def current(self) -> bool:
        return self._audio._reader is self and not self._audio._abandoned

    async def read(self, max_samples: int) -> np.ndarray | None:
        """Up to ``max_samples`` of 16-bit PCM; waits for audio. None at the end of the
        stream, or once this reader has been superseded. Cancel-safe: a cancelled read
        consumes nothing."""
        audio = self._audio
        await audio._changed.wait_for(
            lambda: not self.current or self.position < audio._end or audio._closed
        )
        if not self.current or self.position >= audio._end:
            return None
        return audio._read(self, max_samples)

    @property
    def seconds(self) -> float:
        """Audio this reader has read, in seconds."""
        return (self.position - self.start) / SAMPLE_RATE
