"""psycopg 3 or asyncpg for the PostgreSQL store: the two operations on a request's path.

- a key lookup (one indexed SELECT by digest), one at a time and 16 at once;
- a ledger group commit: 1 and 32 usage rows inserted in one transaction.

    .venv/bin/python bench/pg_drivers.py [--dsn postgresql://postgres@127.0.0.1/test]

Both drivers run on the same event loop against the same table; asyncpg is not a dependency
(``pip install asyncpg`` to run this).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib

import asyncpg
import psycopg
import psycopg_pool
from _common import timed

SETUP = """
DROP TABLE IF EXISTS bench_keys, bench_usage;
CREATE TABLE bench_keys (name TEXT PRIMARY KEY, digest BYTEA NOT NULL UNIQUE,
  revoked DOUBLE PRECISION);
CREATE TABLE bench_usage (id BIGSERIAL PRIMARY KEY, request_id TEXT, at DOUBLE PRECISION,
  key_name TEXT, audio_seconds DOUBLE PRECISION);
"""
ROW = ("r", 1.0, "k", 2.5)
LOOKUP = "SELECT name FROM bench_keys WHERE digest = {} AND revoked IS NULL"
INSERT = "INSERT INTO bench_usage (request_id, at, key_name, audio_seconds) VALUES ({}, {}, {}, {})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1/test")
    parser.add_argument("-n", type=int, default=4000)
    args = parser.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as db:
        db.execute(SETUP)
        for i in range(100):
            db.execute(
                "INSERT INTO bench_keys (name, digest) VALUES (%s, %s)",
                (f"k{i}", hashlib.sha256(f"k{i}".encode()).digest()),
            )
    digest = hashlib.sha256(b"k50").digest()

    pg = psycopg_pool.AsyncConnectionPool(args.dsn, min_size=16, max_size=16, open=False)
    await pg.open(wait=True)
    ap = await asyncpg.create_pool(args.dsn, min_size=16, max_size=16)

    async def psycopg_lookup() -> None:
        async with pg.connection() as db:
            await (await db.execute(LOOKUP.format("%s"), (digest,))).fetchone()

    async def asyncpg_lookup() -> None:
        async with ap.acquire() as db:
            await db.fetchrow(LOOKUP.format("$1"), digest)

    def psycopg_commit(rows: int):
        async def op() -> None:
            async with pg.connection() as db, db.transaction(), db.cursor() as cur:
                await cur.executemany(INSERT.format("%s", "%s", "%s", "%s"), [ROW] * rows)

        return op

    def asyncpg_commit(rows: int):
        async def op() -> None:
            async with ap.acquire() as db, db.transaction():
                await db.executemany(INSERT.format("$1", "$2", "$3", "$4"), [ROW] * rows)

        return op

    print(
        f"{'operation':<28} {'psycopg ops/s':>14} {'p50 ms':>7} {'asyncpg ops/s':>14} {'p50 ms':>7}"
    )
    cases = [
        ("key lookup, 1 at a time", 1, psycopg_lookup, asyncpg_lookup, args.n),
        ("key lookup, 16 at once", 16, psycopg_lookup, asyncpg_lookup, args.n),
        ("commit of 1 row", 1, psycopg_commit(1), asyncpg_commit(1), args.n // 4),
        ("commit of 32 rows", 1, psycopg_commit(32), asyncpg_commit(32), args.n // 16),
    ]
    for name, conc, a, b, n in cases:
        await timed(n // 10, conc, a)  # warm up
        await timed(n // 10, conc, b)
        ra, la = await timed(n, conc, a)
        rb, lb = await timed(n, conc, b)
        print(f"{name:<28} {ra:>14.0f} {la:>7.3f} {rb:>14.0f} {lb:>7.3f}")
    await pg.close()
    await ap.close()
    with psycopg.connect(args.dsn, autocommit=True) as db:
        db.execute("DROP TABLE bench_keys, bench_usage")


if __name__ == "__main__":
    asyncio.run(main())
