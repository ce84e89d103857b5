"""Admission: whether a connection, a stream, a job or a key's request may start now.

Counters for the capacity limits (connections, streams, batch jobs; per API key too) and a
token bucket per key for the optional rate limit. Everything runs on the event loop, so plain
integers need no lock. Refusals are :class:`~speechgw.errors.RetryLater` errors that tell the
client when to come back, instead of work queuing without bound.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from .config import LimitsConfig
from .errors import RateLimited, ServerBusy

__all__ = ["Admission"]


class Admission:
    def __init__(self, limits: Callable[[], LimitsConfig]) -> None:
        self._limits = limits  # read at each decision, so a config reload applies at once
        self.counts: defaultdict[str, int] = defaultdict(int)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    @contextlib.contextmanager
    def hold(self, counter: str, limit: int | None, what: str) -> Iterator[None]:
        """One of ``limit`` places named ``counter`` for the duration of the block."""
        if limit is not None and self.counts[counter] >= limit:
            retry = self._limits().busy_retry_after_seconds
            raise ServerBusy(
                f"the server is at its limit of {limit} {what}; retry in {retry} s", retry
            )
        self.counts[counter] += 1
        try:
            yield
        finally:
            self.counts[counter] -= 1
            if not self.counts[counter]:
                del self.counts[counter]  # per-key counters must not accumulate

    def take(self, key: str) -> None:
        """Spend one of ``key``'s request tokens (``limits.rate_limit_per_key``).

        Raises:
            RateLimited: none left; the client is told when the next one is due.
        """
        limits = self._limits()
        if limits.rate_limit_per_key is None:
            return
        rate = limits.rate_limit_per_key / 60.0  # tokens per second
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (float(limits.rate_limit_burst), now))
        tokens = min(float(limits.rate_limit_burst), tokens + (now - then) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry = max(1, math.ceil((1.0 - tokens) / rate))
            raise RateLimited(
                f"API key {key!r} is over its rate of {limits.rate_limit_per_key:g} requests "
                f"per minute; retry in {retry} s",
                retry,
            )
        self._buckets[key] = (tokens - 1.0, now)
