"""Running a job through its route: the first backend, then the fallbacks, by one rule.

The rule, for recordings, stream utterances and natively streamed audio alike: an *outage*
(the backend is unavailable, failed internally, or raised something unexpected) hands the work
to the route's next backend, with a log line and a ``speechgw_fallbacks_total`` count. An error
about the request itself (bad audio, an unsupported task) is the answer: another backend would
refuse it too.
"""

from __future__ import annotations

import logging
import time

from .accounting import Accounting, Books
from .errors import BackendUnavailable, InternalError, SpeechGWError
from .jobs import AudioJob, Transcript
from .progress import SegmentRelay
from .router import Route

__all__ = ["as_outage", "run_route"]

_LOGGER = logging.getLogger(__name__)


def as_outage(exc: BaseException, request_id: str, backend: str) -> SpeechGWError | None:
    """The outage ``exc`` stands for, or None when it is an error about the request.

    Unexpected exceptions are logged with their traceback and become ``internal_error``.
    """
    if isinstance(exc, BackendUnavailable | InternalError):
        return exc
    if isinstance(exc, SpeechGWError):
        return None
    _LOGGER.error("request %s: backend %r crashed", request_id, backend, exc_info=exc)
    return InternalError(f"backend {backend!r} failed: {type(exc).__name__}")


async def run_route(
    job: AudioJob,
    route: Route,
    books: Books,
    accounting: Accounting,
    relay: SegmentRelay | None = None,
) -> Transcript:
    """Recognise ``job`` with the route's first backend able to, noting in ``books`` which;
    with a ``relay``, its segments go there as they are recognised, and the rest at the end.

    Raises:
        SpeechGWError: the request's own error, or the last backend's outage.
    """
    with accounting.running():
        transcript = await _run_route(job, route, books, accounting, relay)
    if relay is not None:
        relay.finish(transcript)
    return transcript


async def _run_route(
    job: AudioJob,
    route: Route,
    books: Books,
    accounting: Accounting,
    relay: SegmentRelay | None,
) -> Transcript:
    last_error: SpeechGWError = BackendUnavailable("no backend could serve the request")
    for i, backend in enumerate(route):
        if i:
            accounting.fallback(books.request_id, route[i - 1].name, backend.name, last_error)
        started = time.monotonic()
        try:
            if relay is None:
                transcript = await backend.transcribe(job.audio, job.spec)
            else:
                transcript = await backend.transcribe_progressive(job.audio, job.spec, relay)
        except Exception as exc:
            outage = as_outage(exc, books.request_id, backend.name)
            if outage is None:
                raise
            last_error = outage
            continue
        finally:
            accounting.backend_time(backend.name, time.monotonic() - started)
        books.backend = backend.name
        return transcript
    raise last_error
