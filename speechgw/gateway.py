"""The Gateway: the one shared layer every protocol adapter goes through.

An adapter asks the gateway to authenticate a key, to route a :class:`JobSpec` (early, so that
an unsupported language is refused before any audio is sent), to run a job, and to close the
books on a request. Authentication, routing with fallback, metrics and the access log live here
once, so that no adapter has its own copy and a client cannot tell which protocol or backend
served it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .admission import Admission
from .auth import Keyring
from .backend import Backend
from .config import Config
from .errors import (
    AudioTooLong,
    BackendUnavailable,
    InternalError,
    SpeechGWError,
)
from .jobs import AudioJob, JobSpec, Transcript, new_request_id
from .metrics import GatewayMetrics
from .postprocess import OFF as POSTPROCESS_OFF
from .postprocess import Postprocessor, PostprocessResult
from .router import Route, Router
from .store import Store, UsageRecord
from .stream import OnError, OnTranscript, Stream

__all__ = ["Gateway", "Request"]

_LOGGER = logging.getLogger(__name__)
_ACCESS = logging.getLogger("speechgw.access")


@dataclass(slots=True)
class Request:
    """The books of one request (a batch request, or one utterance of a stream)."""

    protocol: str
    request_id: str = field(default_factory=new_request_id)
    spec: JobSpec | None = None
    audio_seconds: float = 0.0
    backend: str = "-"
    started: float | None = None
    """Monotonic time when the audio was in hand: processing latency counts from here."""

    def start_clock(self) -> None:
        self.started = time.monotonic()


class Gateway:
    """Authentication, routing, execution and accounting, shared by every protocol."""

    def __init__(
        self,
        config: Config,
        backends: Mapping[str, Backend],
        keyring: Keyring,
        metrics: GatewayMetrics,
        store: Store | None = None,
        postprocessor: Postprocessor | None = None,
    ) -> None:
        self.config = config
        self.backends = dict(backends)
        self.keyring = keyring
        self.metrics = metrics
        self.store = store
        self.postprocessor = postprocessor or Postprocessor(config.postprocess)
        self.router = Router(config.routing, self.backends)
        self.admission = Admission(lambda: self.config.limits)
        self._readers: set[asyncio.Task[Any]] = set()
        self._retired: list[Backend] = []
        self.draining = False

    # --- the steps of a request, in order ---------------------------------------------------

    def begin(self, protocol: str) -> Request:
        return Request(protocol=protocol)

    def authenticate(self, presented_key: object) -> str:
        """The key's name; raises :class:`~speechgw.errors.Unauthorized`. Costs no backend."""
        return self.keyring.authenticate(presented_key)

    def route(self, spec: JobSpec) -> Route:
        """Backends for ``spec``; raises ``UnsupportedLanguage`` / ``UnsupportedTask``."""
        return self.router.route(spec)

    @contextlib.contextmanager
    def admit_connection(self) -> Iterator[None]:
        """Hold one of ``limits.max_connections`` places (both protocols together)."""
        with self.admission.hold("connections", self.config.limits.max_connections, "connections"):
            yield

    @contextlib.contextmanager
    def admit_key(self, key_name: str) -> Iterator[None]:
        """A request of ``key_name``: its rate limit and its share of connections. Applies
        only when keys are configured (otherwise every caller is the same "anonymous").

        Raises:
            RateLimited: the key is over ``limits.rate_limit_per_key``.
            ServerBusy: the key holds ``limits.max_connections_per_key`` connections already.
        """
        if not self.keyring.enabled:
            yield
            return
        self.admission.take(key_name)
        limit = self.config.limits.max_connections_per_key
        with self.admission.hold(f"key:{key_name}", limit, f"connections for key {key_name!r}"):
            yield

    @contextlib.contextmanager
    def admit_job(self) -> Iterator[None]:
        """Hold one of ``limits.max_pending_jobs`` places while a batch job is decoded and run.

        Raises:
            ServerBusy: every place is taken; the client is told when to retry.
        """
        with self.admission.hold("jobs", self.config.limits.max_pending_jobs, "jobs"):
            yield

    @contextlib.contextmanager
    def admit_stream(self) -> Iterator[None]:
        """Hold one of ``limits.max_streams`` places for an open stream (raises ServerBusy)."""
        with self.admission.hold("streams", self.config.limits.max_streams, "streams"):
            self.metrics.active_streams.inc()
            try:
                yield
            finally:
                self.metrics.active_streams.dec()

    def check_duration(self, samples: int, rate: int) -> None:
        """Refuse audio over ``limits.max_audio_seconds`` before spending anything on it."""
        seconds = samples / rate
        limit = self.config.limits.max_audio_seconds
        if seconds > limit:
            raise AudioTooLong(f"the audio lasts {seconds:.1f} s; the limit is {limit:g} s")

    async def transcribe(self, request: Request, job: AudioJob, route: Route) -> Transcript:
        """Run ``job`` through ``route``, falling back on failure.

        A backend that raises :class:`BackendUnavailable` or fails unexpectedly hands the job to
        the next backend of the route, with a log line and a ``speechgw_fallbacks_total`` count.
        Errors about the request itself (bad audio, unsupported task) are not retried.
        """
        request.spec = job.spec
        request.audio_seconds = job.duration
        with self.metrics.in_flight.track_inprogress():
            return await self._run_route(request, job, route)

    async def _run_route(self, request: Request, job: AudioJob, route: Route) -> Transcript:
        last_error: SpeechGWError = BackendUnavailable("no backend could serve the request")
        for i, backend in enumerate(route):
            if i:
                self.note_fallback(request.request_id, route[i - 1], backend, last_error)
            started = time.monotonic()
            try:
                transcript = await backend.transcribe(job.audio, job.spec)
            except (BackendUnavailable, InternalError) as exc:
                last_error = exc
                continue
            except SpeechGWError:
                raise
            except Exception as exc:
                _LOGGER.exception(
                    "request %s: backend %r crashed", request.request_id, backend.name
                )
                last_error = InternalError(f"backend {backend.name!r} failed: {type(exc).__name__}")
                continue
            finally:
                self.metrics.backend_latency.labels(backend.name).observe(
                    time.monotonic() - started
                )
            request.backend = backend.name
            return transcript
        raise last_error

    def note_fallback(
        self, request_id: str, failed: Backend, spare: Backend, error: SpeechGWError
    ) -> None:
        """Log and count a hand-over from a failed backend to the route's next one."""
        self.metrics.fallbacks.labels(failed.name, spare.name).inc()
        _LOGGER.warning(
            "request %s: backend %r failed (%s); falling back to %r",
            request_id,
            failed.name,
            error.message,
            spare.name,
        )

    async def postprocess(self, request: Request, transcript: Transcript) -> PostprocessResult:
        """LLM correction when the request (or the server default) wants it; never raises."""
        spec = request.spec
        if spec is None or not self.postprocessor.wanted(spec.postprocess):
            return POSTPROCESS_OFF
        result = await self.postprocessor.correct(transcript.text, spec.language)
        machine = self.metrics.machine_label(spec.caller.machine_id)
        self.metrics.postprocess.labels(machine, spec.task).observe(result.milliseconds / 1000)
        if result.error:
            _LOGGER.warning(
                "request %s: post-processing failed: %s", request.request_id, result.error
            )
        return result

    async def settle(self, request: Request) -> None:
        """Record a success in the usage ledger; returns once the row is durable, so the
        caller sends the reply after it and nothing a client received goes unrecorded.

        Raises:
            InternalError: the row could not be committed (the reply must not be sent).
        """
        spec = request.spec
        if self.store is None or spec is None:
            return
        elapsed = time.monotonic() - request.started if request.started is not None else 0.0
        record = UsageRecord(
            request_id=request.request_id,
            at=time.time(),
            key_name=spec.caller.key_name,
            protocol=request.protocol,
            backend=request.backend,
            task=spec.task,
            language=spec.language,
            machine_id=spec.caller.machine_id,
            audio_seconds=round(request.audio_seconds, 3),
            processing_seconds=round(elapsed, 3),
        )
        try:
            await self.store.record(record)
        except Exception as exc:
            raise InternalError("the usage ledger could not record the request") from exc

    def finish(
        self, request: Request, error: SpeechGWError | None = None, *, uncounted: str = ""
    ) -> None:
        """Count the request in the metrics and write its one access-log line.

        ``uncounted`` names an outcome that is logged but not counted as a request, because
        no answer was delivered: ``abandoned`` (the client left first) or ``no_speech`` (an
        utterance of noise, which gets no reply and is not billed either).
        """
        spec = request.spec
        machine = self.metrics.machine_label(spec.caller.machine_id if spec else "unknown")
        task = spec.task if spec else "transcribe"
        status = uncounted or ("ok" if error is None else error.error)
        elapsed = time.monotonic() - request.started if request.started is not None else 0.0
        if error is not None:
            self.metrics.errors.labels(request.protocol, error.error).inc()
        if not uncounted:
            self.metrics.requests.labels(machine, task, status).inc()
            if error is None:
                self.metrics.audio_seconds.labels(machine, task).inc(request.audio_seconds)
                self.metrics.processing.labels(machine, task).observe(elapsed)
        _ACCESS.info(
            "request=%s protocol=%s key=%s machine_id=%s language=%s task=%s audio_s=%.2f "
            "processing_ms=%d backend=%s outcome=%s",
            request.request_id,
            request.protocol,
            spec.caller.key_name if spec else "-",
            machine,
            spec.language if spec else "-",
            task,
            request.audio_seconds,
            round(elapsed * 1000),
            request.backend,
            status,
        )

    def open_stream(
        self,
        spec: JobSpec,
        route: Route,
        rate: int,
        on_transcript: OnTranscript,
        on_error: OnError,
    ) -> Stream:
        """A live stream of ``rate`` Hz audio for ``spec``; see :class:`~speechgw.stream.Stream`."""
        return Stream(self, spec, route, rate, self.config.streaming, on_transcript, on_error)

    def note_error(self, protocol: str, error: SpeechGWError) -> None:
        """Count an error that belongs to no request (a bad message on a stream)."""
        self.metrics.errors.labels(protocol, error.error).inc()

    def reconfigure(
        self, config: Config, backends: Mapping[str, Backend], keyring: Keyring
    ) -> None:
        """Switch to a reloaded config in one step (the event loop runs nothing in between).
        Backends no longer configured are closed at shutdown, not now: requests in flight may
        still be using them."""
        retired = [b for b in self.backends.values() if b not in backends.values()]
        self._retired.extend(retired)
        self.config = config
        self.backends = dict(backends)
        self.keyring = keyring
        self.router = Router(config.routing, self.backends)
        self.postprocessor = Postprocessor(config.postprocess)
        for backend in self.backends.values():
            self.metrics.backend_ready.labels(backend.name).set(1 if backend.ready else 0)

    def track_reader(self, task: asyncio.Task[Any]) -> None:
        """A long-lived connection's reading loop: :meth:`drain` cancels it at shutdown."""
        if self.draining:
            task.cancel()
            return
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    def drain(self) -> None:
        """Shutdown has begun: stop reading live streams so that they flush and close."""
        self.draining = True
        if self._readers:
            _LOGGER.info("shutting down: closing %d open streams", len(self._readers))
        for task in list(self._readers):
            task.cancel()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()
            self.metrics.backend_ready.labels(backend.name).set(1 if backend.ready else 0)

    async def close(self) -> None:
        if self.store is not None:
            self.store.close()
        for backend in [*self.backends.values(), *self._retired]:
            try:
                await backend.close()
            except Exception:
                _LOGGER.exception("backend %r failed to close", backend.name)
            self.metrics.backend_ready.labels(backend.name).set(0)

    @property
    def ready(self) -> bool:
        return all(b.ready for b in self.backends.values())
