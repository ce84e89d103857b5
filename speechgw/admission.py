"""Admission: whether a connection, a key's request, a recording job or a stream may start now.

Counters for the capacity limits (connections, streams, recording jobs; per API key too) and a
token bucket per key for the optional rate limit. Everything runs on the event loop, so plain
integers need no lock. Refusals are :class:`~speechgw.errors.RetryLater` errors that tell the
client when to come back, instead of work queuing without bound. Limits are read at each
decision, so a config reload applies at once.

A store shared by a fleet of replicas (PostgreSQL) holds the per-key limits for the whole fleet
(:class:`FleetLimits`): a key's rate and its connections count on every replica together. When
that store cannot be reached, both per-key limits fail *open to the replica's own count*: each
replica still enforces the limit on what it sees (at most replicas x the limit in all), the
fallback is logged and counted (``speechgw_limit_fallbacks_total``), and the fleet-wide count
resumes by itself. The key check and the ledger do not fail open (see :mod:`speechgw.store`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol

from .config import LimitsConfig
from .errors import RateLimited, ServerBusy
from .store import StoreUnavailable

__all__ = ["Admission", "FleetLimits"]

_LOGGER = logging.getLogger(__name__)
_FALLBACK_LOG_SECONDS = 10.0


class FleetLimits(Protocol):
    """Per-key limits counted across every replica (implemented by a shared store)."""

    async def take(self, key: str, per_minute: float, burst: int) -> float | None:
        """Spend one of ``key``'s request tokens: None when admitted, else the seconds until
        the next token is due.

        Raises:
            StoreUnavailable: the shared count cannot be reached.
        """
        ...

    async def hold(self, key: str, limit: int) -> object | None:
        """One of ``key``'s ``limit`` connection places on the whole fleet: a handle for
        :meth:`release`, or None when all are taken.

        Raises:
            StoreUnavailable: the shared count cannot be reached.
        """
        ...

    def release(self, handle: object) -> None:
        """Give a place back (does not block; a replica that dies gives back all of its own)."""
        ...


class Admission:
    """The places and tokens every request of every protocol is admitted against."""

    def __init__(
        self,
        limits: Callable[[], LimitsConfig],
        fleet: FleetLimits | None = None,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self._limits = limits
        self._fleet = fleet
        self._on_fallback = on_fallback
        self._fallback_logged = -math.inf
        self.counts: defaultdict[str, int] = defaultdict(int)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """One of ``limits.max_connections`` places (every protocol together)."""
        with self._hold("connections", self._limits().max_connections, "connections"):
            yield

    @contextlib.asynccontextmanager
    async def key(self, key_name: str, keys_enabled: bool) -> AsyncIterator[None]:
        """A request of ``key_name``: its rate limit and its share of connections, on the
        whole fleet when the store holds them. Applies only when keys are configured
        (otherwise every caller is the same "anonymous").

        Raises:
            RateLimited: the key is over ``limits.rate_limit_per_key``.
            ServerBusy: the key holds ``limits.max_connections_per_key`` connections already.
        """
        if not keys_enabled:
            yield
            return
        await self._take(key_name)
        limit = self._limits().max_connections_per_key
        handle = await self._hold_fleet(key_name, limit) if limit is not None else None
        if handle is not None:
            try:
                yield
            finally:
                assert self._fleet is not None
                self._fleet.release(handle)
            return
        with self._hold(f"key:{key_name}", limit, f"connections for key {key_name!r}"):
            yield

    async def _hold_fleet(self, key_name: str, limit: int) -> object | None:
        """A fleet-wide place for ``key_name`` (None: count on this replica instead)."""
        if self._fleet is None:
            return None
        try:
            handle = await self._fleet.hold(key_name, limit)
        except StoreUnavailable as exc:
            self._fell_back("connections", exc)
            return None
        if handle is None:
            raise self._busy(limit, f"connections for key {key_name!r}")
        return handle

    def _fell_back(self, limit: str, exc: Exception) -> None:
        if self._on_fallback is not None:
            self._on_fallback(limit)
        now = time.monotonic()
        if now - self._fallback_logged >= _FALLBACK_LOG_SECONDS:  # one line per 10 s at most
            self._fallback_logged = now
            _LOGGER.warning(
                "the shared store is unreachable (%s): per-key %s limits are counted on this "
                "replica alone until it is back",
                exc,
                limit,
            )

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
            raise self._busy(limit, what)
        self.counts[counter] += 1
        try:
            yield
        finally:
            self.counts[counter] -= 1
            if not self.counts[counter]:
                del self.counts[counter]  # per-key counters must not accumulate

    def _busy(self, limit: int, what: str) -> ServerBusy:
        return ServerBusy.retry_in(
            f"the server is at its limit of {limit} {what}",
            self._limits().busy_retry_after_seconds,
        )

    async def _take(self, key: str) -> None:
        """Spend one of ``key``'s request tokens (``limits.rate_limit_per_key``, which the
        config guarantees is positive when set): on the fleet's shared bucket, or on this
        replica's when there is none or it cannot be reached."""
        limits = self._limits()
        per_minute = limits.rate_limit_per_key
        if per_minute is None:
            return
        wait: float | None
        if self._fleet is not None:
            try:
                wait = await self._fleet.take(key, per_minute, limits.rate_limit_burst)
            except StoreUnavailable as exc:
                self._fell_back("rate", exc)
                wait = self._take_local(key, per_minute, limits.rate_limit_burst)
        else:
            wait = self._take_local(key, per_minute, limits.rate_limit_burst)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            raise RateLimited.retry_in(
                f"API key {key!r} is over its rate of {per_minute:g} requests per minute", retry
            )

    def _take_local(self, key: str, per_minute: float, burst: int) -> float | None:
        """This replica's token bucket: None when admitted, else seconds to the next token."""
        rate = per_minute / 60.0  # tokens per second
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[key] = (tokens - 1.0, now)
        return None
