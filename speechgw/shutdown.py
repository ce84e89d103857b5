"""The end of a shutdown's grace period, for the work still running then.

The HTTP server gives connections ``server.shutdown_grace_seconds`` after SIGTERM, then cancels
what is left: an HTTP client gets an empty 500 or a reset, a WebSocket client a close without a
word (1011). Shortly before that moment (:data:`CUT_BEFORE_GRACE_ENDS`), everything recognised
under :meth:`GraceCut.guard` is stopped instead and raises ``server_busy`` with a retry hint,
which each protocol answers in its own terms while there is still time to send it: a client
behind a load balancer then retries on another replica, and nothing it was not answered for is
billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable

from .errors import ShuttingDown

__all__ = ["CUT_BEFORE_GRACE_ENDS", "GraceCut"]

_LOGGER = logging.getLogger(__name__)

CUT_BEFORE_GRACE_ENDS = 1.0
"""Seconds before the end of the grace period (at most half of it) at which the work still
running is stopped: time for each answer to reach its client before the server closes what is
left."""


class GraceCut:
    """Stops the guarded work still running shortly before a shutdown's grace ends.

    Args:
        retry_after: the seconds to tell a client to wait (read when the error is made, so that
            a reloaded config counts).
    """

    def __init__(self, retry_after: Callable[[], int]) -> None:
        self._retry_after = retry_after
        self._running: dict[asyncio.Timeout, str] = {}
        self._scheduled = False
        self.done = False

    def error(self) -> ShuttingDown:
        """What the work stopped by the cut (or begun after it) is answered."""
        return ShuttingDown.retry_in("the server is shutting down", self._retry_after())

    @contextlib.asynccontextmanager
    async def guard(self, kind: str) -> AsyncIterator[None]:
        """Run the block unless the cut comes first; ``kind`` names it in the cut's log line
        ("recording", "stream").

        The cut cancels the block through asyncio's own timeout, which knows its cancellation
        by the task's count, not by the exception: libraries that turn a cancellation into an
        exception of their own, or raise a fresh CancelledError (gRPC's asyncio client does),
        are still stopped and answered. Whatever the block raises once cut is the cut's error.

        Raises:
            ShuttingDown: the cut came before or while the block ran.
        """
        if self.done:
            raise self.error()
        deadline = asyncio.timeout(None)
        try:
            async with deadline:
                self._running[deadline] = kind
                try:
                    yield
                finally:
                    del self._running[deadline]
        except Exception:
            if deadline.expired():
                raise self.error() from None
            raise

    def schedule(self, grace_seconds: float) -> None:
        """The shutdown has begun: cut :data:`CUT_BEFORE_GRACE_ENDS` before its grace ends (at
        most half of the grace before). Once only."""
        if self._scheduled:
            return
        self._scheduled = True
        cut_at = max(0.0, grace_seconds - min(CUT_BEFORE_GRACE_ENDS, grace_seconds / 2))
        asyncio.get_running_loop().call_later(cut_at, self.cut)

    def cut(self) -> None:
        """Stop everything guarded now; guards entered from now on raise at once."""
        self.done = True
        if self._running:
            kinds = Counter(self._running.values())
            said = " and ".join(
                f"{count} {kind}{'s' if count > 1 else ''}" for kind, count in sorted(kinds.items())
            )
            _LOGGER.warning(
                "shutting down: the grace period ends; answering server_busy to what still "
                "runs: %s",
                said,
            )
        now = asyncio.get_running_loop().time()
        for deadline in list(self._running):
            deadline.reschedule(now)
