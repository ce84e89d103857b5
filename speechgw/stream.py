"""One live stream through the gateway: resample, recognise utterance by utterance, deliver
the results in order.

Two ways to recognise, chosen by the route's first backend:

- *native*: a backend that recognises streams itself (``Capabilities.streaming``) reads the
  audio from a :class:`~speechgw.live_audio.LiveAudio` buffer and decides where utterances end;
  each final transcript it yields becomes one reply. If it gives up mid-stream, the audio it
  had not answered for goes, with the rest of the stream, to the route's fallback backends;
- *utterances*: webrtcvad cuts the stream into utterances and each is a job for the route, as a
  batch request would be (with fallback per utterance).

Protocol-free: an adapter feeds native-rate float32 samples and gets each utterance's
transcript (or error) through callbacks. Memory is bounded per stream: audio waits in buffers
capped in seconds, and when they are full :meth:`Stream.feed` waits, so the adapter stops
reading the socket and TCP pushes back on the client. Audio is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np

from .config import StreamingConfig
from .errors import InternalError, SpeechGWError
from .jobs import SAMPLE_RATE, AudioJob, JobSpec, Transcript
from .live_audio import LiveAudio
from .router import Route
from .segmenter import Segmenter, StreamResampler

if TYPE_CHECKING:
    from .gateway import Gateway, Request

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

    def put_nowait(self, utterance: np.ndarray) -> None:
        """Queue over the limit: for the consumer itself, which must not wait on its own
        queue (audio handed over from a failed streaming backend, bounded by that buffer)."""
        self._items.append(utterance)
        self._samples += len(utterance)

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


_RETAINED_SECONDS = 330.0
"""Most audio a native streaming backend may leave unanswered before the client is paused;
streaming recognition APIs end a session after about five minutes anyway."""


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
        self.spec = spec
        self.route = route
        self.config = config
        self.rate = rate
        self._resampler = StreamResampler(rate)
        buffer_samples = int(config.buffer_seconds * SAMPLE_RATE)
        self._live: LiveAudio | None = None
        if route[0].capabilities.streaming:
            self._live = LiveAudio(buffer_samples, int(_RETAINED_SECONDS * SAMPLE_RATE))
        self._live_closed = False  # end() has told the streaming backend there is no more
        # the utterance pipeline: from the start, or after a streaming backend gave up
        self._utterance_spec = dataclasses.replace(spec, segmented=True)
        self._segmenter = Segmenter(config)
        self._queue = _UtteranceQueue(buffer_samples, spec.request_id)
        self._on_transcript = on_transcript
        self._on_error = on_error
        self._backlog: deque[np.ndarray] = deque()  # closed utterances not yet queued
        self._session_samples = 0
        self._session_limit = int(config.session_limit_seconds * SAMPLE_RATE)
        self.sessions = 1

    async def feed(self, samples: np.ndarray) -> None:
        """Take native-rate samples; waits while the stream's buffer is full (back-pressure)."""
        samples = self._resampler.feed(samples)
        if self._live is not None and await self._live.put(samples):
            return
        await self._segment(samples)

    async def end(self) -> None:
        """No more input: recognise what is buffered, then let :meth:`run` finish."""
        tail = self._resampler.flush()
        if self._live is not None and await self._live.put(tail):
            self._live.close()
            self._live_closed = True
            return
        await self._segment(tail)
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
        """Recognise until :meth:`end` and everything buffered is answered."""
        if self._live is not None and await self._run_native(self._live):
            return
        await self._run_utterances()

    # --- native: the backend recognises the stream ------------------------------------------

    async def _run_native(self, live: LiveAudio) -> bool:
        """Deliver the streaming backend's finals; False if it gave up and the utterance
        pipeline takes over."""
        backend = self.route[0]
        try:
            async with contextlib.aclosing(backend.stream(live, self.spec)) as finals:
                async for transcript in finals:
                    await self._deliver_final(backend.name, live, transcript)
            return True
        except SpeechGWError as exc:
            error = exc
        except Exception:
            _LOGGER.exception("stream %s: backend %r failed", self.spec.request_id, backend.name)
            error = InternalError(f"backend {backend.name!r} failed")
        pending = live.abandon()
        self._live = None
        _LOGGER.warning(
            "stream %s: streaming backend %r gave up (%s) with %.1f s unanswered",
            self.spec.request_id,
            backend.name,
            error.message,
            len(pending) / SAMPLE_RATE,
        )
        spares = self.route[1:]
        if spares:
            self.gateway.note_fallback(self.spec.request_id, backend, spares[0], error)
            self.route = spares
            # the unanswered audio goes first, before anything the client sends next (no
            # other feed runs until this returns)
            self._backlog.extend(self._segmenter.feed(pending))
            self._queue_backlog_now()
        else:
            # nobody else can answer for that audio: the client hears of it once, and the
            # rest of the stream goes to the same backend utterance by utterance
            request = self._request(backend.name)
            request.audio_seconds = len(pending) / SAMPLE_RATE
            self.gateway.finish(request, error)
            await self._on_error(error)
        if self._live_closed:  # the client had finished: nothing more will come
            self._backlog.extend(self._segmenter.flush())
            self._queue_backlog_now()
            await self._queue.close()
        return False

    def _queue_backlog_now(self) -> None:
        while self._backlog:
            self._queue.put_nowait(self._backlog.popleft())

    def _request(self, backend: str) -> Request:
        request = self.gateway.begin(self.spec.protocol)
        request.spec = self.spec
        request.backend = backend
        return request

    async def _deliver_final(self, backend: str, live: LiveAudio, transcript: Transcript) -> None:
        request = self._request(backend)
        # billed: the speech the backend timed (an utterance with its pauses, not the
        # silence between utterances); latency counts from the arrival of its last sample
        request.audio_seconds = sum(s.end - s.start for s in transcript.segments)
        end = transcript.segments[-1].end if transcript.segments else 0.0
        request.started = live.arrival(round(end * SAMPLE_RATE))
        self.gateway.metrics.backend_latency.labels(backend).observe(
            time.monotonic() - request.started
        )
        if not transcript.text:
            self.gateway.finish(request, uncounted="no_speech")
            return
        try:
            await self.gateway.settle(request)
        except SpeechGWError as exc:
            self.gateway.finish(request, exc)
            await self._on_error(exc)
            return
        self.gateway.finish(request)
        await self._on_transcript(transcript)

    # --- utterances: webrtcvad cuts, the route transcribes ----------------------------------

    async def _run_utterances(self) -> None:
        """Transcribe queued utterances in order until :meth:`end` and the queue is drained."""
        first = True
        while (utterance := await self._queue.get()) is not None:
            request = self._request("-")
            request.start_clock()
            # the spec bills the audio the client sent: not the lead-in silence added to the
            # stream's first utterance
            synthetic = self._segmenter.lead_in_padding if first else 0
            first = False
            try:
                job = AudioJob(self._utterance_spec, utterance)
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
