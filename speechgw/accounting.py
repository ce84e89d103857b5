"""Accounting: the books of each request, and where they end up (usage ledger, metrics, access
log).

A :class:`Books` is the state of one request: a recording, or one utterance of a live stream.
Only the request life-cycle (:mod:`speechgw.gateway`, :mod:`speechgw.stream`) writes it; an
adapter never sees one. :meth:`Accounting.settle` is the one place that decides what is billed:
an answer the client will receive is billed, committed before it is sent; an utterance with no
words gets no answer and no bill. :meth:`Accounting.close` counts the outcome and writes the
request's one access-log line.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .errors import InternalError, ServerBusy, SpeechGWError
from .jobs import JobSpec, Transcript, new_request_id
from .logs import FIELDS
from .metrics import GatewayMetrics
from .store import Store, StoreUnavailable, UsageRecord

__all__ = ["Accounting", "Books"]

_LOGGER = logging.getLogger(__name__)
_ACCESS = logging.getLogger("speechgw.access")

Uncounted = Literal["", "abandoned", "no_speech"]


@dataclass(slots=True)
class Books:
    """The books of one request: a recording, or one utterance of a live stream."""

    protocol: str
    request_id: str = field(default_factory=new_request_id)
    spec: JobSpec | None = None
    audio_seconds: float = 0.0
    """Seconds billed: the client's audio this answer covers."""
    backend: str = "-"
    started: float | None = None
    """Monotonic time when the audio was in hand: processing latency counts from here."""
    utterance: bool = False
    """Part of a live stream, where only words are answered: no words, no reply, no bill."""
    detected_language: str = ""
    """The language the backend heard, for a job that named none."""
    closed: bool = False
    """Counted and logged (:meth:`Accounting.close`): nothing more to say of it."""

    @property
    def language(self) -> str:
        """What the ledger and the log record: the job's language, else the detected one."""
        if self.spec is not None and self.spec.language is not None:
            return self.spec.language
        return self.detected_language or "-"

    def start_clock(self, at: float | None = None) -> None:
        self.started = time.monotonic() if at is None else at

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started is not None else 0.0


class Accounting:
    """The usage ledger, the request metrics and the access log, for every protocol alike."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        store: Store | None,
        busy_retry_after: Callable[[], int] = lambda: 5,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self._busy_retry_after = busy_retry_after
        """What ``server_busy`` tells a client to wait when the ledger is unreachable."""

    async def settle(self, books: Books, transcript: Transcript) -> bool:
        """Close the books of a recognised job: True when its answer is to be sent.

        The answer is billed first (returning once the ledger row is durable, so nothing a
        client received goes unrecorded) and counted. An utterance without words gets no
        answer: it is logged as ``no_speech``, neither billed nor counted.

        Raises:
            InternalError: the row could not be committed (the answer must not be sent);
                the caller closes the books with it.
        """
        books.detected_language = transcript.language
        if books.utterance and not transcript.text:
            self.close(books, uncounted="no_speech")
            return False
        await self._bill(books)
        self.close(books)
        return True

    async def _bill(self, books: Books) -> None:
        spec = books.spec
        if self.store is None or spec is None:
            return
        record = UsageRecord(
            request_id=books.request_id,
            at=time.time(),
            key_name=spec.caller.key_name,
            protocol=books.protocol,
            backend=books.backend,
            task=spec.task,
            language=books.language,
            machine_id=spec.caller.machine_id,
            audio_seconds=round(books.audio_seconds, 3),
            processing_seconds=round(books.elapsed, 3),
        )
        try:
            await self.store.record(record)
        except StoreUnavailable as exc:
            # never answered unbilled: the client is told to come back (its audio was heard,
            # but nothing it receives goes unrecorded)
            self.metrics.store_errors.labels("ledger").inc()
            _LOGGER.warning(
                "request %s: the usage ledger is unreachable: %s", books.request_id, exc
            )
            retry = self._busy_retry_after()
            raise ServerBusy.retry_in("the usage ledger is unreachable", retry) from exc
        except Exception as exc:
            _LOGGER.exception("request %s: the usage ledger failed", books.request_id)
            raise InternalError("the usage ledger could not record the request") from exc

    def close(
        self, books: Books, error: SpeechGWError | None = None, *, uncounted: Uncounted = ""
    ) -> None:
        """Count the request in the metrics and write its one access-log line.

        ``uncounted`` names an outcome that is logged but not counted as a request, because
        no answer was delivered: ``abandoned`` (the client left first) or ``no_speech`` (an
        utterance of noise, which gets no reply and is not billed either).
        """
        books.closed = True
        spec = books.spec
        machine = self.metrics.machine_label(spec.caller.machine_id if spec else "unknown")
        task = spec.task if spec else "transcribe"
        status = uncounted or ("ok" if error is None else error.error)
        elapsed = books.elapsed
        if error is not None:
            self.metrics.errors.labels(books.protocol, error.error).inc()
        if not uncounted:
            self.metrics.requests.labels(machine, task, status).inc()
            if error is None:
                self.metrics.audio_seconds.labels(machine, task).inc(books.audio_seconds)
                self.metrics.processing.labels(machine, task).observe(elapsed)
        fields = {
            "request": books.request_id,
            "protocol": books.protocol,
            "key": spec.caller.key_name if spec else "-",
            "machine_id": machine,
            "language": books.language,
            "task": task,
            "audio_s": round(books.audio_seconds, 2),
            "processing_ms": round(elapsed * 1000),
            "backend": books.backend,
            "outcome": status,
        }
        _ACCESS.info(
            "request=%(request)s protocol=%(protocol)s key=%(key)s machine_id=%(machine_id)s "
            "language=%(language)s task=%(task)s audio_s=%(audio_s).2f "
            "processing_ms=%(processing_ms)d backend=%(backend)s outcome=%(outcome)s",
            fields,
            extra={FIELDS: fields},  # typed, for the JSON log
        )

    def refused(self, protocol: str, error: SpeechGWError) -> None:
        """Count an error that belongs to no request (a refused stream, a bad message)."""
        self.metrics.errors.labels(protocol, error.error).inc()

    def running(self) -> contextlib.AbstractContextManager[None]:
        """Counts a job in ``speechgw_requests_in_flight`` while a backend recognises it."""
        return self.metrics.in_flight.track_inprogress()

    def interim(self, protocol: str) -> None:
        """Count an interim result sent: not a request, not billed."""
        self.metrics.interims.labels(protocol).inc()

    def early_final(self, outcome: str) -> None:
        """Count what became of a final decoded ahead: ``used``, ``discarded``, ``failed``."""
        self.metrics.early_finals.labels(outcome).inc()

    def backend_time(self, backend: str, seconds: float) -> None:
        self.metrics.backend_latency.labels(backend).observe(seconds)

    def fallback(self, request_id: str, failed: str, spare: str, error: SpeechGWError) -> None:
        """Log and count a hand-over from a failed backend to the route's next one."""
        self.metrics.fallbacks.labels(failed, spare).inc()
        _LOGGER.warning(
            "request %s: backend %r failed (%s); falling back to %r",
            request_id,
            failed,
            error.message,
            spare,
        )

    def postprocessed(self, spec: JobSpec, seconds: float) -> None:
        machine = self.metrics.machine_label(spec.caller.machine_id)
        self.metrics.postprocess.labels(machine, spec.task).observe(seconds)
