"""The store a fleet of gateways shares: PostgreSQL (``store.url``), through psycopg 3.

What every replica must agree on lives here: API keys (a key created or revoked on one replica
applies on all at the next request: each request asks the database), the usage ledger, and the
per-key limits of the whole fleet (:class:`PostgresLimits`).

- The ledger keeps SQLite's promise: :meth:`PostgresStore.record` returns once its row is
  committed. One writer task per replica commits every row waiting when a commit starts (group
  commit), so a burst of replies costs a few commits, not one each.
- The schema is versioned (``speechgw_schema``); :func:`migrate` applies what is missing at
  start, under a transaction-scoped advisory lock, so replicas starting together apply each
  migration once.
- Every wait on the database is bounded by ``store.timeout_seconds``, on this side (a server
  that has stopped answering enforces no ``statement_timeout``: :func:`_within`); a connection
  lost to a restart is retried once on a fresh one, then the request is refused with
  ``server_busy`` (:class:`~speechgw.store.StoreUnavailable`), never answered without its row.

psycopg 3 rather than asyncpg (measured in ``bench/pg_drivers.py``: asyncpg's key lookup is
~0.08 ms faster, commits are even): one driver serves both the async request path and the
blocking ``speechgw keys``/``speechgw usage`` commands.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import astuple
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from .auth import hash_key
from .store import (
    PRUNE_BATCH,
    USAGE_COLUMNS,
    KeyInfo,
    KeyLookup,
    Store,
    StoreUnavailable,
    UsageRecord,
    UsageTotal,
    new_api_key,
)

__all__ = ["MIGRATIONS", "PostgresLimits", "PostgresStore", "migrate"]

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

_MIGRATION_LOCK = 0x5347_0001
"""The advisory lock id replicas serialise migrations on ("SG" 1)."""

MIGRATIONS: tuple[str, ...] = (
    # 1: keys and the ledger, as in SQLite
    """
    CREATE TABLE api_keys (
        name TEXT PRIMARY KEY,
        digest BYTEA NOT NULL UNIQUE,
        created DOUBLE PRECISION NOT NULL,
        revoked DOUBLE PRECISION
    );
    CREATE TABLE usage (
        id BIGSERIAL PRIMARY KEY,
        request_id TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        key_name TEXT NOT NULL,
        protocol TEXT NOT NULL,
        backend TEXT NOT NULL,
        task TEXT NOT NULL,
        language TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        audio_seconds DOUBLE PRECISION NOT NULL,
        processing_seconds DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX usage_at ON usage (at);
    CREATE INDEX usage_key ON usage (key_name, at);
    """,
    # 2: the fleet's per-key limits: a token bucket per key, and connection places held as
    # session advisory locks (a replica that dies loses its session, and with it its places)
    """
    CREATE TABLE rate_buckets (
        key_name TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE FUNCTION speechgw_take_token(
        k TEXT, burst FLOAT8, rate FLOAT8, OUT tokens FLOAT8, OUT admitted BOOLEAN
    ) LANGUAGE plpgsql AS $$
    DECLARE
        now FLOAT8;
        last FLOAT8;
    BEGIN
        INSERT INTO rate_buckets VALUES (k, burst, extract(epoch FROM clock_timestamp()))
        ON CONFLICT (key_name) DO NOTHING;
        SELECT b.tokens, b.at INTO tokens, last FROM rate_buckets b WHERE b.key_name = k
        FOR UPDATE;
        -- the database's clock (replicas' clocks may differ), read once the row is ours: the
        -- requests of one key refill in the order they spend
        now := extract(epoch FROM clock_timestamp());
        tokens := LEAST(burst, tokens + GREATEST(0, now - last) * rate);
        admitted := tokens >= 1;
        IF admitted THEN
            tokens := tokens - 1;
        END IF;
        UPDATE rate_buckets SET tokens = speechgw_take_token.tokens, at = GREATEST(last, now)
        WHERE key_name = k;
    END $$;
    CREATE FUNCTION speechgw_take_place(k INTEGER, places INTEGER, own INTEGER[])
    RETURNS INTEGER LANGUAGE plpgsql AS $$
    BEGIN
        -- advisory locks are re-entrant within a session: skip the places this replica
        -- holds already (it says which), try the others
        FOR place IN 0 .. places - 1 LOOP
            IF NOT place = ANY(own) AND pg_try_advisory_lock(k, place) THEN
                RETURN place;
            END IF;
        END LOOP;
        RETURN -1;
    END $$;
    """,
)

_LOOKUP = (
    "SELECT (SELECT name FROM api_keys WHERE digest = %s AND revoked IS NULL), "
    "EXISTS (SELECT 1 FROM api_keys)"
)
_INSERT = f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_WHERE = (
    "WHERE at >= %(since)s AND (%(until)s::float8 IS NULL OR at < %(until)s) "
    "AND (%(key)s::text IS NULL OR key_name = %(key)s)"
)
_TAKE_TOKEN = "SELECT tokens, admitted FROM speechgw_take_token(%(key)s, %(burst)s, %(rate)s)"


class _Abandoned:
    """Queries given up on, kept until they have ended (their outcome is nobody's now)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def keep(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # seen: not logged as never retrieved


_ABANDONED = _Abandoned()


async def _within(
    timeout: float, work: Awaitable[T], connections: list[psycopg.AsyncConnection[Any]]
) -> T:
    """``work``, given ``timeout`` seconds in all; then TimeoutError, and the connections
    it was using (it adds each to ``connections``) are closed under it.

    A server that takes the query and never answers (stopped, overloaded past its
    ``statement_timeout``, behind a network that drops packets) enforces no timeout of its own,
    and psycopg, merely cancelled, first asks that server to cancel the query and waits up to
    10 s for it: closing the socket ends the query at once. The work then ends in the
    background (the pool drops the closed connection); the request is answered now."""
    task = asyncio.ensure_future(work)
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(task)
    except TimeoutError:
        if not task.done():
            for db in connections:
                await db.close()
            task.cancel()
            _ABANDONED.keep(task)
        raise
    except asyncio.CancelledError:  # the request's own (its client left): psycopg's way
        task.cancel()
        _ABANDONED.keep(task)
        raise


def migrate(connection: psycopg.Connection[Any]) -> int:
    """Apply the migrations ``connection``'s database lacks; the schema version after.

    Replicas starting together queue on one advisory lock, and each reads the version only
    once it holds the lock, so every migration runs exactly once.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS speechgw_schema ("
            "version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = connection.execute("SELECT coalesce(max(version), 0) FROM speechgw_schema").fetchone()
        current = row[0] if row else 0
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            connection.execute(sql)  # type: ignore[arg-type]
            connection.execute("INSERT INTO speechgw_schema (version) VALUES (%s)", (version,))
            _LOGGER.info("store: applied schema migration %d", version)
    return len(MIGRATIONS)


def _key_lock_id(key_name: str) -> int:
    """A stable signed 32-bit id for ``key_name`` (the advisory lock's first half)."""
    return int.from_bytes(hashlib.sha256(key_name.encode()).digest()[:4], "big", signed=True)


class PostgresStore(Store):
    """Keys, ledger and fleet limits in one PostgreSQL database."""

    def __init__(self, url: str, pool_size: int = 8, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._pool_size = pool_size
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._pending: list[tuple[UsageRecord, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._writer_db: psycopg.AsyncConnection[Any] | None = None
        self._closing = False
        self._prepared = False
        self._down = False
        self._probed = 0.0
        self._probe_lock = asyncio.Lock()
        self._closing_pools: set[asyncio.Task[None]] = set()
        self.limits: PostgresLimits = PostgresLimits(self)

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "connect_timeout": max(1, round(self.timeout)),
            "options": f"-c statement_timeout={round(self.timeout * 1000)}",
            "application_name": "speechgw",
        }

    # --- serving ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Connect once and bring the schema up to date: ``speechgw serve`` calls it before
        it listens, so that an unreachable database stops the start with a clear message."""
        with self._admin():
            pass
        self._prepared = True

    async def open(self) -> None:
        """Migrate (unless prepared), then open the pool, the ledger writer and the limits."""
        if not self._prepared:
            await asyncio.to_thread(self.prepare)
        self._pool = await self._new_pool()
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="speechgw-usage-writer")

    async def _new_pool(self) -> psycopg_pool.AsyncConnectionPool:
        pool = psycopg_pool.AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            kwargs={**self._connect_kwargs(), "autocommit": True},
            timeout=self.timeout,
            open=False,
            name="speechgw",
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
        except BaseException:  # its own time up (then psycopg closed it), or a probe's
            await pool.close(timeout=1)
            raise
        return pool

    async def _probe(self) -> bool:
        """While the database is down: whether it answers again (asked at most once a
        second, however many requests wonder). When it does, requests move to a fresh pool.

        A pool whose connections were lost retries with a growing back-off (psycopg_pool's
        1, 2, 4... s): after a 15 s outage it would keep refusing requests for about as long
        again. Probing directly and starting a new pool makes recovery take a second.
        """
        async with self._probe_lock:
            if not self._down:
                return True
            now = time.monotonic()
            if now - self._probed < 1.0:
                return False
            self._probed = now
            connections: list[psycopg.AsyncConnection[Any]] = []
            try:
                fresh = await _within(self.timeout, self._answers(connections), connections)
            except (psycopg.Error, psycopg_pool.PoolTimeout, OSError, TimeoutError):
                return False
            stale, self._pool = self._pool, fresh
            self._down = False
            _LOGGER.info("store: the database answers again")
            if stale is not None:
                task = asyncio.create_task(stale.close(timeout=self.timeout))
                self._closing_pools.add(task)
                task.add_done_callback(self._closing_pools.discard)
            return True

    async def _answers(
        self, connections: list[psycopg.AsyncConnection[Any]]
    ) -> psycopg_pool.AsyncConnectionPool:
        """A new pool, once a connection of its own has been answered."""
        probe = await psycopg.AsyncConnection.connect(self.url, **self._connect_kwargs())
        connections.append(probe)
        await probe.close()
        return await self._new_pool()

    def _where(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    async def aclose(self) -> None:
        self._closing = True
        if self._writer is not None and self._wake is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(self._writer, self.timeout * 2)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
        await self.limits.close()
        if self._writer_db is not None:
            await self._writer_db.close()
        if self._pool is not None:
            await self._pool.close()

    async def ping(self) -> bool:
        try:
            await self._query(lambda db: db.execute("SELECT 1"))
        except StoreUnavailable:
            return False
        return True

    async def _query(self, run: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``run`` on a pooled connection, once more on another if the first was lost (the
        database restarted since it was opened), within ``timeout`` seconds in all;
        StoreUnavailable when that fails, at once while the database is known to be down."""
        await self.ensure_up()
        connections: list[psycopg.AsyncConnection[Any]] = []
        try:
            return await _within(self.timeout, self._pooled(run, connections), connections)
        except TimeoutError as exc:
            self._went_down(exc)
            raise self._unavailable(exc) from None

    async def _pooled(
        self,
        run: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        connections: list[psycopg.AsyncConnection[Any]],
    ) -> T:
        assert self._pool is not None, "the store is not open"
        for attempt in (1, 2):
            try:
                async with self._pool.connection() as db:
                    connections.append(db)
                    return await run(db)
            except psycopg_pool.PoolTimeout as exc:
                self._went_down(exc)
                raise StoreUnavailable(f"no database connection in {self.timeout:g} s") from exc
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    self._went_down(exc)
                    raise StoreUnavailable(str(exc).strip()) from exc
                # the database restarted: its other idle connections are dead too
                await self._pool.check()
        raise AssertionError("unreachable")

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        """The error for requests that ``exc`` (a failed or silent database) refuses."""
        if isinstance(exc, TimeoutError):
            return StoreUnavailable(
                f"PostgreSQL at {self._where()} did not answer in {self.timeout:g} s"
            )
        return StoreUnavailable(str(exc).strip() or type(exc).__name__)

    async def ensure_up(self) -> None:
        """Raise StoreUnavailable at once while the database is known to be down (and the
        probe of this second found it still down), rather than wait on it per request."""
        if self._down and not await self._probe():
            raise StoreUnavailable(f"PostgreSQL at {self._where()} is unreachable")

    def _went_down(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            self._probed = time.monotonic()
            reason = str(exc).strip() or f"no answer in {self.timeout:g} s"
            _LOGGER.error("store: PostgreSQL at %s is unreachable: %s", self._where(), reason)

    async def find_key(self, digest: bytes | None) -> KeyLookup:
        async def lookup(db: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            return await (await db.execute(_LOOKUP, (digest,))).fetchone()

        row = await self._query(lookup)
        assert row is not None
        return KeyLookup(row[0], bool(row[1]))

    # --- the ledger -------------------------------------------------------------------------

    async def record(self, record: UsageRecord) -> None:
        if self._wake is None or self._closing:
            raise StoreUnavailable("the store is closed")
        done = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        self._wake.set()
        await done

    async def _write_loop(self) -> None:
        """Commit every waiting row in one transaction, then the rows that came meanwhile."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                error = await self._commit([record for record, _ in batch])
                for _, done in batch:
                    if not done.done():
                        if error is None:
                            done.set_result(None)
                        else:
                            done.set_exception(error)
            if self._closing and not self._pending:
                return

    async def _commit(self, records: list[UsageRecord]) -> StoreUnavailable | None:
        """Insert ``records`` in one transaction on the writer's own connection (reopened,
        once, when it was lost); the error to hand each waiter, or None."""
        try:
            await self.ensure_up()
        except StoreUnavailable as exc:
            return exc
        for attempt in (1, 2):
            connections: list[psycopg.AsyncConnection[Any]] = []
            try:
                await _within(self.timeout, self._write(records, connections), connections)
                return None
            except (psycopg.OperationalError, TimeoutError, OSError) as exc:
                if self._writer_db is not None:
                    await self._writer_db.close()
                    self._writer_db = None
                # silent, not lost: another try would wait as long again
                if attempt == 2 or isinstance(exc, TimeoutError):
                    unavailable = self._unavailable(exc)
                    _LOGGER.error(
                        "usage: %d rows could not be committed: %s", len(records), unavailable
                    )
                    self._went_down(exc)
                    return unavailable
        raise AssertionError("unreachable")

    async def _write(
        self, records: list[UsageRecord], connections: list[psycopg.AsyncConnection[Any]]
    ) -> None:
        """``records`` on the writer's connection, opened first where there is none."""
        if self._writer_db is None or self._writer_db.closed:
            self._writer_db = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, **self._connect_kwargs()
            )
        connections.append(self._writer_db)
        await _insert(self._writer_db, records)

    # --- administration (blocking: the command line) ----------------------------------------

    def _admin(self) -> psycopg.Connection[Any]:
        """A connection for one administrative call, the schema brought up to date first.

        Raises:
            StoreUnavailable: the database cannot be reached.
        """
        try:
            db = psycopg.connect(self.url, autocommit=True, **self._connect_kwargs())
        except psycopg.OperationalError as exc:
            message = str(exc).strip().splitlines()[0]
            raise StoreUnavailable(f"PostgreSQL at {self._where()}: {message}") from exc
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def totals(
        self, since: float | None = None, until: float | None = None, key: str | None = None
    ) -> list[UsageTotal]:
        with self._admin() as db:
            rows = db.execute(
                "SELECT key_name, protocol, backend, COUNT(*), SUM(audio_seconds) FROM usage "
                f"{_WHERE} "
                "GROUP BY key_name, protocol, backend ORDER BY key_name, protocol, backend",
                {"since": since or 0.0, "until": until, "key": key},
            ).fetchall()
        return [UsageTotal(*row) for row in rows]

    def records(
        self, since: float | None = None, until: float | None = None, key: str | None = None
    ) -> Generator[UsageRecord, None, None]:
        # a server-side cursor (inside a transaction): the rows come a few thousand at a time
        with (
            self._admin() as db,
            db.transaction(),
            db.cursor(name="speechgw_usage_records") as rows,
        ):
            rows.itersize = 5000
            rows.execute(
                f"SELECT {USAGE_COLUMNS} FROM usage {_WHERE} ORDER BY id",
                {"since": since or 0.0, "until": until, "key": key},
            )
            for row in rows:
                yield UsageRecord(*row)

    def prune(self, before: float) -> int:
        deleted = 0
        with self._admin() as db:  # autocommit: each batch its own transaction
            while True:
                gone = db.execute(
                    "DELETE FROM usage WHERE id IN "
                    "(SELECT id FROM usage WHERE at < %s ORDER BY id LIMIT %s)",
                    (before, PRUNE_BATCH),
                ).rowcount
                deleted += gone
                if gone < PRUNE_BATCH:
                    return deleted

    def create_key(self, name: str) -> str:
        key = new_api_key()
        with self._admin() as db:
            try:
                db.execute(
                    "INSERT INTO api_keys (name, digest, created) VALUES (%s, %s, %s)",
                    (name, hash_key(key), time.time()),
                )
            except psycopg.errors.UniqueViolation:
                raise ValueError(f"a key named {name!r} exists already") from None
        return key

    def list_keys(self) -> list[KeyInfo]:
        with self._admin() as db:
            sql = "SELECT name, created, revoked FROM api_keys ORDER BY name"
            rows = db.execute(sql).fetchall()
        return [KeyInfo(*row) for row in rows]

    def revoke_key(self, name: str) -> bool:
        with self._admin() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked = %s WHERE name = %s AND revoked IS NULL",
                (time.time(), name),
            )
            return cursor.rowcount == 1

    def close(self) -> None:
        """Nothing to do: the command line's connections close with each call, and serving
        closes in :meth:`aclose`."""


async def _insert(db: psycopg.AsyncConnection[Any], records: list[UsageRecord]) -> None:
    """``records`` into the ledger, in one transaction."""
    async with db.transaction(), db.cursor() as cur:
        await cur.executemany(_INSERT, [astuple(r) for r in records])


class PostgresLimits:
    """The fleet's per-key limits (:class:`speechgw.admission.FleetLimits`) in PostgreSQL.

    - Rate: one token bucket row per key, refilled and spent by one call of
      ``speechgw_take_token``, on the database's clock read once the key's row is locked.
      A request that cannot be counted because the database is down is counted locally
      (:mod:`speechgw.admission`).
    - Connections: place ``p`` of key ``k`` is the session advisory lock ``(k, p)``, held on
      this replica's one limits connection while the client is connected. Nothing expires or
      needs a heartbeat: when a replica dies, PostgreSQL ends its session and frees its places.
      If the connection is lost while the replica lives, the next request reconnects and takes
      the places of the connections still open again.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._db: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._held: dict[object, tuple[int, int]] = {}  # handle -> (key lock id, place)
        self._releases: set[asyncio.Task[None]] = set()

    async def take(self, key: str, per_minute: float, burst: int) -> float | None:
        params = {"key": key, "burst": burst, "rate": per_minute / 60.0}

        async def spend(db: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            return await (await db.execute(_TAKE_TOKEN, params)).fetchone()

        row = await self._store._query(spend)
        assert row is not None
        tokens, admitted = row
        return None if admitted else (1.0 - tokens) / params["rate"]

    async def hold(self, key: str, limit: int) -> object | None:
        k = _key_lock_id(key)
        await self._store.ensure_up()
        async with self._lock:
            await self._store.ensure_up()  # it may have gone down while this one waited
            db = await self._session()
            own = [p for kk, p in self._held.values() if kk == k]
            try:
                take = _fetch(db, "SELECT speechgw_take_place(%s, %s, %s)", (k, limit, own))
                row = await _within(self._store.timeout, take, [db])
            except (psycopg.OperationalError, TimeoutError, OSError) as exc:
                await self._lost()
                raise self._unavailable(exc) from exc
        place = row[0] if row else -1
        if place < 0:
            return None
        handle = object()
        self._held[handle] = (k, place)
        return handle

    def release(self, handle: object) -> None:
        held = self._held.pop(handle, None)
        if held is None:
            return
        task = asyncio.get_running_loop().create_task(self._unlock(*held))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _unlock(self, k: int, place: int) -> None:
        async with self._lock:
            if self._db is None:
                return  # the session is gone, and the lock with it
            try:
                unlock = _fetch(self._db, "SELECT pg_advisory_unlock(%s, %s)", (k, place))
                await _within(self._store.timeout, unlock, [self._db])
            except (psycopg.OperationalError, TimeoutError, OSError):
                await self._lost()

    async def _session(self) -> psycopg.AsyncConnection[Any]:
        """The limits connection; a new one takes back the places still held."""
        if self._db is not None and not self._db.closed:
            return self._db
        connections: list[psycopg.AsyncConnection[Any]] = []
        reconnect = self._reconnect(connections)
        try:
            db = await _within(self._store.timeout, reconnect, connections)
        except (psycopg.OperationalError, TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if self._held:
            _LOGGER.info("limits: reconnected, %d connection places taken back", len(self._held))
        self._db = db
        return db

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        """The error for a request whose place could not be asked for. A silent database is
        marked down, so that the requests queued behind this one (places are asked for one at
        a time) are refused at once instead of each waiting its own timeout."""
        if isinstance(exc, TimeoutError):
            self._store._went_down(exc)
        return self._store._unavailable(exc)

    async def _reconnect(
        self, connections: list[psycopg.AsyncConnection[Any]]
    ) -> psycopg.AsyncConnection[Any]:
        db = await psycopg.AsyncConnection.connect(
            self._store.url, autocommit=True, **self._store._connect_kwargs()
        )
        connections.append(db)
        for k, place in self._held.values():
            await db.execute("SELECT pg_try_advisory_lock(%s, %s)", (k, place))
        return db

    async def _lost(self) -> None:
        if self._db is not None:
            await self._db.close()
        self._db = None

    async def close(self) -> None:
        for task in list(self._releases):
            task.cancel()
        await self._lost()


async def _fetch(
    db: psycopg.AsyncConnection[Any], query: str, params: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    return await (await db.execute(query, params)).fetchone()
