"""The Gateway: the one shared layer every protocol adapter goes through.

An adapter asks the gateway to authenticate a key, to route a :class:`JobSpec` (early, so that
an unsupported language is refused before any audio is sent), to run a job, and to close the
books on a request. Authentication, routing with fallback, metrics and the access log live here
once, so that no adapter has its own copy and a client cannot tell which protocol or backend
served it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .auth import Keyring
from .backend import Backend
from .config import Config
from .errors import AudioTooLong, BackendUnavailable, InternalError, SpeechGWError
from .jobs import SAMPLE_RATE, JobSpec, Transcript, new_request_id
from .metrics import GatewayMetrics
from .router import Route, Router
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
    ) -> None:
        self.config = config
        self.backends = dict(backends)
        self.keyring = keyring
        self.metrics = metrics
        self.router = Router(config.routing, self.backends)

    # --- the steps of a request, in order ---------------------------------------------------

    def begin(self, protocol: str) -> Request:
        return Request(protocol=protocol)

    def authenticate(self, presented_key: object) -> str:
        """The key's name; raises :class:`~speechgw.errors.Unauthorized`. Costs no backend."""
        return self.keyring.authenticate(presented_key)

    def route(self, spec: JobSpec) -> Route:
        """Backends for ``spec``; raises ``UnsupportedLanguage`` / ``UnsupportedTask``."""
        return self.router.route(spec)

    def check_duration(self, samples: int, rate: int) -> None:
        """Refuse audio over ``limits.max_audio_seconds`` before spending anything on it."""
        seconds = samples / rate
        limit = self.config.limits.max_audio_seconds
        if seconds > limit:
            raise AudioTooLong(f"the audio lasts {seconds:.1f} s; the limit is {limit:g} s")

    async def transcribe(self, request: Request, audio: np.ndarray, route: Route) -> Transcript:
        """Run ``audio`` (16 kHz mono float32) through ``route``, falling back on failure.

        A backend that raises :class:`BackendUnavailable` or fails unexpectedly hands the job to
        the next backend of the route, with a log line and a ``speechgw_fallbacks_total`` count.
        Errors about the request itself (bad audio, unsupported task) are not retried.
        """
        assert request.spec is not None
        request.audio_seconds = len(audio) / SAMPLE_RATE
        with self.metrics.in_flight.track_inprogress():
            return await self._run_route(request, audio, route)

    async def _run_route(self, request: Request, audio: np.ndarray, route: Route) -> Transcript:
        last_error: SpeechGWError = BackendUnavailable("no backend could serve the request")
        for i, backend in enumerate(route):
            if i:
                self.metrics.fallbacks.labels(route[i - 1].name, backend.name).inc()
                _LOGGER.warning(
                    "request %s: backend %r failed (%s); falling back to %r",
                    request.request_id,
                    route[i - 1].name,
                    last_error.message,
                    backend.name,
                )
            started = time.monotonic()
            try:
                transcript = await backend.transcribe(audio, request.spec)
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

    def finish(
        self, request: Request, error: SpeechGWError | None = None, *, abandoned: bool = False
    ) -> None:
        """Count the request in the metrics and write its one access-log line.

        ``abandoned`` marks a request whose client left before its answer: it is logged but
        not counted, since no status was ever delivered.
        """
        spec = request.spec
        machine = self.metrics.machine_label(spec.caller.machine_id if spec else "unknown")
        task = spec.task if spec else "transcribe"
        status = "abandoned" if abandoned else "ok" if error is None else error.error
        elapsed = time.monotonic() - request.started if request.started is not None else 0.0
        if not abandoned:
            self.metrics.requests.labels(machine, task, status).inc()
        if error is None and not abandoned:
            self.metrics.audio_seconds.labels(machine, task).inc(request.audio_seconds)
            self.metrics.processing.labels(machine, task).observe(elapsed)
        elif error is not None:
            self.metrics.errors.labels(request.protocol, error.error).inc()
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

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()
            self.metrics.backend_ready.labels(backend.name).set(1 if backend.ready else 0)

    async def close(self) -> None:
        for backend in self.backends.values():
            try:
                await backend.close()
            except Exception:
                _LOGGER.exception("backend %r failed to close", backend.name)
            self.metrics.backend_ready.labels(backend.name).set(0)

    @property
    def ready(self) -> bool:
        return all(b.ready for b in self.backends.values())
