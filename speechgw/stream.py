"""One live stream through the gateway: resample, cut into utterances, transcribe each, deliver
the results in order.

Protocol-free: an adapter feeds native-rate float32 samples and gets each utterance's
transcript (or error) through callbacks. Memory is bounded per stream: utterances wait in a
queue capped in seconds of audio, and when it is full :meth:`Stream.feed` waits, so the adapter
stops reading the socket and TCP pushes back on the client. Audio is never dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np

from .config import StreamingConfig
from .errors import InternalError, SpeechGWError
from .jobs import SAMPLE_RATE, AudioJob, JobSpec, Transcript
from .router import Route
from .segmenter import Segmenter, StreamResampler

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["Stream"]

_LOGGER = logging.getLogger(__name__)

OnTranscript = Callable[[Transcript], Awaitable[None]]
OnError = Callable[[SpeechGWError], Awaitable[None]]


class _UtteranceQueue:
    """FIFO of utterances bounded by their total length in samples."""

    def __init__(self, limit: int, stream_id: str) -> None:
        self._items: deque[np.ndarray] = deque()
        self._samples = 0
        self._limit = limit
        self._closed = False
        self._changed = asyncio.Condition()
        self._stream_id = stream_id

    @property
    def samples(self) -> int:
        return self._samples

    async def put(self, utterance: np.ndarray) -> None:
        async with self._changed:
            if self._items and self._samples + len(utterance) > self._limit:
                _LOGGER.warning(
                    "stream %s: Audio stream buffer full (%.1f s queued); pausing its input",
                    self._stream_id,
                    self._samples / SAMPLE_RATE,
                )
                await self._changed.wait_for(
                    lambda: not self._items or self._samples + len(utterance) <= self._limit
                )
            self._items.append(utterance)
            self._samples += len(utterance)
            self._changed.notify_all()

    async def get(self) -> np.ndarray | None:
        """The next utterance, or None once the queue is closed and empty."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._items or self._closed)
            if not self._items:
                return None
            utterance = self._items.popleft()
            self._samples -= len(utterance)
            self._changed.notify_all()
            return utterance

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


class Stream:
    """A live stream's pipeline. Run :meth:`run` in a task; :meth:`feed`; then :meth:`end`."""

    def __init__(
        self,
        gateway: Gateway,
        spec: JobSpec,
        route: Route,
        rate: int,
        config: StreamingConfig,
        on_transcript: OnTranscript,
        on_error: OnError,
    ) -> None:
        self.gateway = gateway
        self.spec = dataclasses.replace(spec, segmented=True)  # its jobs are VAD-cut utterances
        self.route = route
        self.config = config
        self.rate = rate
        self._resampler = StreamResampler(rate)
        self._segmenter = Segmenter(config)
        self._queue = _UtteranceQueue(int(config.buffer_seconds * SAMPLE_RATE), spec.request_id)
        self._on_transcript = on_transcript
        self._on_error = on_error
        self._backlog: deque[np.ndarray] = deque()  # closed utterances not yet queued
        self._session_samples = 0
        self._session_limit = int(config.session_limit_seconds * SAMPLE_RATE)
        self.sessions = 1

    async def feed(self, samples: np.ndarray) -> None:
        """Take native-rate samples; waits while the stream's buffer is full (back-pressure)."""
        await self._segment(self._resampler.feed(samples))

    async def end(self) -> None:
        """No more input: recognise what is buffered, then let :meth:`run` finish."""
        await self._segment(self._resampler.flush())
        self._backlog.extend(self._segmenter.flush())
        await self._enqueue_backlog()
        await self._queue.close()

    async def _enqueue_backlog(self) -> None:
        # An utterance leaves the backlog only once it is in the queue: if the wait for room
        # is cancelled (a shutdown stops the reader), it is still here for end() to queue.
        while self._backlog:
            await self._queue.put(self._backlog[0])
            self._backlog.popleft()

    async def _segment(self, samples: np.ndarray) -> None:
        if len(samples):
            self._session_samples += len(samples)
            self._backlog.extend(self._segmenter.feed(samples))
        await self._enqueue_backlog()
        # A recognition session ends at the first utterance boundary after its limit, so no
        # utterance straddles two sessions: nothing is cut, lost or repeated by the restart.
        if self._session_samples >= self._session_limit and not self._segmenter.speaking:
            self.sessions += 1
            self._session_samples = 0
            _LOGGER.info(
                "stream %s: recognition session %d begins", self.spec.request_id, self.sessions
            )

    async def run(self) -> None:
        """Transcribe queued utterances in order until :meth:`end` and the queue is drained."""
        first = True
        while (utterance := await self._queue.get()) is not None:
            request = self.gateway.begin(self.spec.protocol)
            request.start_clock()
            # the spec bills the audio the client sent: not the lead-in silence added to the
            # stream's first utterance
            synthetic = self._segmenter.lead_in_padding if first else 0
            first = False
            try:
                job = AudioJob(self.spec, utterance)
                transcript = await self.gateway.transcribe(request, job, self.route)
                request.audio_seconds = (len(utterance) - synthetic) / SAMPLE_RATE
                if transcript.text:  # only recognised speech is billed, before its reply
                    await self.gateway.settle(request)
            except SpeechGWError as exc:
                self.gateway.finish(request, exc)
                await self._on_error(exc)
                continue
            except Exception:
                _LOGGER.exception("stream %s: utterance failed", self.spec.request_id)
                error = InternalError("internal server error")
                self.gateway.finish(request, error)
                await self._on_error(error)
                continue
            if transcript.text:
                self.gateway.finish(request)
                await self._on_transcript(transcript)
            else:
                self.gateway.finish(request, uncounted="no_speech")
