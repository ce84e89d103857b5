"""Admission: whether a connection, a key's request, a recording job or a stream may start now.

Counters for the capacity limits (connections, streams, recording jobs; per API key too) and a
token bucket per key for the optional rate limit. Everything runs on the event loop, so plain
integers need no lock. Refusals are :class:`~speechgw.errors.RetryLater` errors that tell the
client when to come back, instead of work queuing without bound. Limits are read at each
decision, so a config reload applies at once.
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
    """The places and tokens every request of every protocol is admitted against."""

    def __init__(self, limits: Callable[[], LimitsConfig]) -> None:
        self._limits = limits
        self.counts: defaultdict[str, int] = defaultdict(int)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """One of ``limits.max_connections`` places (every protocol together)."""
        with self._hold("connections", self._limits().max_connections, "connections"):
            yield

    @contextlib.contextmanager
    def key(self, key_name: str, keys_enabled: bool) -> Iterator[None]:
        """A request of ``key_name``: its rate limit and its share of connections. Applies
        only when keys are configured (otherwise every caller is the same "anonymous").

        Raises:
            RateLimited: the key is over ``limits.rate_limit_per_key``.
            ServerBusy: the key holds ``limits.max_connections_per_key`` connections already.
        """
        if not keys_enabled:
            yield
            return
        self._take(key_name)
        limit = self._limits().max_connections_per_key
        with self._hold(f"key:{key_name}", limit, f"connections for key {key_name!r}"):
            yield

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """One of ``limits.max_pending_jobs`` places while a recording is decoded and run."""
        with self._hold("jobs", self._limits().max_pending_jobs, "jobs"):
            yield

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """One of ``limits.max_streams`` places for an open live stream."""
        with self._hold("streams", self._limits().max_streams, "streams"):
            yield

    @contextlib.contextmanager
    def _hold(self, counter: str, limit: int | None, what: str) -> Iterator[None]:
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

    def _take(self, key: str) -> None:
        """Spend one of ``key``'s request tokens (``limits.rate_limit_per_key``, which the
        config guarantees is positive when set)."""
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
