"""The durable store: API keys and the usage ledger, in SQLite by default.

:class:`Store` is the interface; :class:`SQLiteStore` is the embedded default, and
:class:`speechgw.postgres.PostgresStore` the one a fleet of replicas shares (``store.url``).
What a request needs of the store (its key, its ledger row, the fleet's limits) is async, so a
store across the network never blocks the event loop; the administrative calls (``speechgw
keys``, ``speechgw usage``) are plain blocking calls.

In SQLite, usage rows are written by one thread that commits them in groups (every record
waiting when a commit starts goes into it), and :meth:`Store.record` returns only once its row
is committed, so a reply that a client received always has its row, even if the server is
killed right after. The database runs in WAL mode: a committed row survives the process dying;
``synchronous: full`` makes it survive power loss too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .auth import hash_key

if TYPE_CHECKING:
    from .admission import FleetLimits

__all__ = [
    "PRUNE_BATCH",
    "USAGE_COLUMNS",
    "KeyInfo",
    "KeyLookup",
    "SQLiteStore",
    "Store",
    "StoreUnavailable",
    "UsageRecord",
    "UsageTotal",
    "new_api_key",
]

_LOGGER = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    at REAL NOT NULL,
    key_name TEXT NOT NULL,
    protocol TEXT NOT NULL,
    backend TEXT NOT NULL,
    task TEXT NOT NULL,
    language TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    audio_seconds REAL NOT NULL,
    processing_seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at);
CREATE INDEX IF NOT EXISTS usage_key ON usage (key_name, at);
"""


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    at: float
    key_name: str
    protocol: str
    backend: str
    task: str
    language: str
    machine_id: str
    audio_seconds: float
    processing_seconds: float


USAGE_COLUMNS = ", ".join(f.name for f in fields(UsageRecord))
"""The ledger's columns in :class:`UsageRecord`'s order (both stores write and read them so)."""


@dataclass(frozen=True, slots=True)
class UsageTotal:
    key_name: str
    protocol: str
    backend: str
    requests: int
    audio_seconds: float


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str
    created: float
    revoked: float | None


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """What the store says of a presented key, in one round trip."""

    name: str | None
    """The name of the active key presented; None when it is unknown, revoked or absent."""
    managed: bool
    """Whether the store manages keys (any was ever created): then every request needs one."""


_BUSY_SECONDS = 5.0
"""How long a write waits for another process's lock on the SQLite file (an admin's open
transaction in the sqlite3 shell, say) before its requests are refused with ``server_busy``:
every reply waits on the ledger's commit, so the wait is every client's."""


PRUNE_BATCH = 5000
"""Ledger rows deleted per statement by :meth:`Store.prune` (SQLite: about 8 ms of them)."""
_PRUNE_HOLD_SECONDS = 0.05
"""How long :meth:`SQLiteStore.prune` holds the file's write lock at a time."""
_PRUNE_PAUSE_SECONDS = 0.12
"""...and how long it leaves it free: longer than SQLite's longest sleep between tries for a
lock (100 ms), so that a writer waiting meanwhile gets it."""
_PRUNE_SQLITE = "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE at < ? LIMIT ?)"
_USAGE_WHERE = "WHERE at >= ? AND (? IS NULL OR at < ?) AND (? IS NULL OR key_name = ?)"
"""The rows of a period (``since``, ``until``, ``until``) and a key (``key``, ``key``)."""


class StoreUnavailable(Exception):
    """The store cannot be reached now (a restart, the network): the request is refused with
    ``server_busy`` and the client retries; never answered without its ledger row."""


def new_api_key() -> str:
    """A fresh key: ``sgw_`` and 32 bytes from the OS's CSPRNG, URL-safe."""
    return "sgw_" + secrets.token_urlsafe(32)


class Store(ABC):
    """Keys and usage. The blocking methods are safe to call from any thread; the async ones
    run on the serving event loop, between :meth:`open` and :meth:`aclose`."""

    limits: FleetLimits | None = None
    """Request limits this store holds for the whole fleet (None: each replica counts its own)."""

    def prepare(self) -> None:  # noqa: B027 (optional: an embedded store needs nothing)
        """Check, before serving, that the store can be reached and its schema is current.

        Raises:
            StoreUnavailable: it cannot be reached.
        """

    async def open(self) -> None:  # noqa: B027 (optional: an embedded store needs nothing)
        """Connect for serving (on the serving event loop); a no-op for an embedded store."""

    async def aclose(self) -> None:
        """Finish pending rows and disconnect (on the serving event loop)."""
        self.close()

    async def ping(self) -> bool:
        """Whether the store answers now (``/health``)."""
        return True

    @abstractmethod
    async def record(self, record: UsageRecord) -> None:
        """Add a usage row; returns once it is durably committed.

        Raises:
            StoreUnavailable: the row could not be committed because the store is unreachable.
        """

    @abstractmethod
    async def find_key(self, digest: bytes | None) -> KeyLookup:
        """The active key whose SHA-256 is ``digest`` (None: no key was presented), and
        whether the store manages keys at all. Read at every request, so that a key created
        or revoked anywhere applies at the next one.

        Raises:
            StoreUnavailable: the store cannot be reached.
        """

    @abstractmethod
    def totals(
        self, since: float | None = None, until: float | None = None, key: str | None = None
    ) -> list[UsageTotal]:
        """Requests and audio seconds per key, protocol and backend, of the rows from
        ``since`` (inclusive) to ``until`` (exclusive), Unix times: so that consecutive
        periods (one month, the next) bill every row exactly once."""

    @abstractmethod
    def records(
        self, since: float | None = None, until: float | None = None, key: str | None = None
    ) -> Generator[UsageRecord, None, None]:
        """The rows themselves, in the order they were committed, read as they are consumed
        (a ledger of millions of rows is never held in memory): what a client disputing an
        invoice is shown, each with the request id its replies carried."""

    @abstractmethod
    def prune(self, before: float) -> int:
        """Delete the ledger's rows from before ``before`` (a Unix time); how many went.

        Deletes a few thousand rows per transaction, so that a serving gateway's ledger
        writes, which every reply waits for, never wait long behind it."""

    @abstractmethod
    def create_key(self, name: str) -> str: ...

    @abstractmethod
    def list_keys(self) -> list[KeyInfo]: ...

    @abstractmethod
    def revoke_key(self, name: str) -> bool: ...

    @abstractmethod
    def close(self) -> None: ...


def _write_ahead(db: sqlite3.Connection) -> None:
    """The file in WAL mode, waiting up to :data:`_BUSY_SECONDS` for another process doing the
    same. SQLite refuses a change of journal mode while another connection makes one ("database
    is locked") without waiting on the busy timeout, so two processes (``--processes``) first
    opening a new file together saw one of them exit (``tests/test_shared_layer.py`` starts
    20 such pairs)."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


class SQLiteStore(Store):
    """A SQLite file; one connection per thread that uses it, one writer thread for usage."""

    def __init__(self, path: str | Path, synchronous: str = "normal") -> None:
        self.path = Path(path).expanduser()
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connection() as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:  # a folder this user may not write, say
            raise StoreUnavailable(f"cannot open the SQLite file {self.path}: {exc}") from None
        self._pending: queue.SimpleQueue[tuple[UsageRecord, Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=_BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            try:
                _write_ahead(db)
                db.execute(f"PRAGMA synchronous={self._synchronous}")
            except sqlite3.Error:
                db.close()
                raise
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    # --- usage ------------------------------------------------------------------------------

    async def record(self, record: UsageRecord) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._start_writer()
        self._pending.put((record, (loop, done)))
        await done

    def _start_writer(self) -> None:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, daemon=True, name="speechgw-usage-writer"
                    )
                    self._writer.start()

    def _write_loop(self) -> None:
        db = self._connection()
        stop = False
        while not stop:
            first = self._pending.get()
            batch = [first] if first is not None else []
            stop = first is None
            with contextlib.suppress(queue.Empty):
                while True:  # group commit: take everything already waiting
                    item = self._pending.get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
            if not batch:
                continue
            error: BaseException | None = None
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [astuple(record) for record, _ in batch],
                )
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # locked by another process's transaction, a full disk, an I/O error: the
                # file's state, not a fault of ours; the clients are told to come back
                _LOGGER.warning("usage: %d rows could not be committed: %s", len(batch), exc)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                error = StoreUnavailable(f"the SQLite file {self.path}: {exc}")
            except sqlite3.Error as exc:
                _LOGGER.exception("usage: %d rows could not be committed", len(batch))
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                error = exc
            for _, (loop, done) in batch:
                loop.call_soon_threadsafe(_settle, done, error)

    def totals(
        self, since: float | None = None, until: float | None = None, key: str | None = None
    ) -> list[UsageTotal]:
        sql = (
            "SELECT key_name, protocol, backend, COUNT(*), SUM(audio_seconds) FROM usage "
            f"{_USAGE_WHERE} "
            "GROUP BY key_name, protocol, backend ORDER BY key_name, protocol, backend"
        )
        rows = self._connection().execute(sql, (since or 0.0, until, until, key, key))
        return [UsageTotal(*row) for row in rows.fetchall()]

    def records(
        self, since: float | None = None, until: float | None = None, key: str | None = None
    ) -> Generator[UsageRecord, None, None]:
        sql = f"SELECT {USAGE_COLUMNS} FROM usage {_USAGE_WHERE} ORDER BY id"
        for row in self._connection().execute(sql, (since or 0.0, until, until, key, key)):
            yield UsageRecord(*row)

    def prune(self, before: float) -> int:
        # SQLite's lock is not fair: a gateway's writer waiting for it sleeps between tries
        # (up to 100 ms), so a deleter that took the lock back at once would keep it from
        # the writer for the whole deletion (a reply waited 1.1 s for a million rows). Each
        # transaction deletes for about _PRUNE_HOLD_SECONDS, then the lock is left free for
        # longer than a waiter sleeps.
        db = self._connection()
        deleted = 0
        while True:
            db.execute("BEGIN IMMEDIATE")
            held = time.monotonic() + _PRUNE_HOLD_SECONDS
            try:
                while True:
                    gone = db.execute(_PRUNE_SQLITE, (before, PRUNE_BATCH)).rowcount
                    deleted += gone
                    if gone < PRUNE_BATCH or time.monotonic() >= held:
                        break
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            if gone < PRUNE_BATCH:
                return deleted
            time.sleep(_PRUNE_PAUSE_SECONDS)

    # --- keys -------------------------------------------------------------------------------

    async def find_key(self, digest: bytes | None) -> KeyLookup:
        # a local file and two indexed reads: cheap enough for the event loop
        db = self._connection()
        name = None
        if digest is not None:
            row = db.execute(
                "SELECT name FROM api_keys WHERE digest = ? AND revoked IS NULL", (digest,)
            ).fetchone()
            name = row[0] if row else None
        # any key ever created, revoked ones included: revoking the last key must not open
        # the gateway to everyone
        managed = name is not None or self._has_keys(db)
        return KeyLookup(name, managed)

    @staticmethod
    def _has_keys(db: sqlite3.Connection) -> bool:
        return db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    def create_key(self, name: str) -> str:
        key = new_api_key()
        try:
            self._connection().execute(
                "INSERT INTO api_keys (name, digest, created) VALUES (?, ?, ?)",
                (name, hash_key(key), time.time()),
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"a key named {name!r} exists already") from None
        return key

    def list_keys(self) -> list[KeyInfo]:
        rows = (
            self._connection()
            .execute("SELECT name, created, revoked FROM api_keys ORDER BY name")
            .fetchall()
        )
        return [KeyInfo(*row) for row in rows]

    def revoke_key(self, name: str) -> bool:
        cursor = self._connection().execute(
            "UPDATE api_keys SET revoked = ? WHERE name = ? AND revoked IS NULL",
            (time.time(), name),
        )
        return cursor.rowcount == 1

    def close(self) -> None:
        if self._writer is not None:
            self._pending.put(None)
            self._writer.join(timeout=30)
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
