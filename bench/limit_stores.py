"""Where the fleet's per-key rate limit should live: PostgreSQL (what speechgw does) or Redis.

Spends tokens of one key's bucket from an asyncio client, one at a time and 16 at once:
- PostgreSQL: ``speechgw_take_token`` (the store's own function, its schema migrated into a
  fresh database), through a psycopg_pool of 8 connections, as the gateway calls it;
- Redis: the same token bucket as a Lua script (EVALSHA), through redis-py's asyncio client.

    .venv/bin/pip install redis    # not a speechgw dependency
    .venv/bin/python bench/limit_stores.py [--postgres postgresql://postgres@127.0.0.1:5432]
        [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import redis.asyncio as aioredis
from _common import timed

from speechgw.postgres import PostgresStore
from tests.postgres import fresh_database

BUCKET_LUA = """
local burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local admitted = 0
if tokens >= 1 then tokens = tokens - 1; admitted = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return admitted
"""


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", type=int, default=4000)
    args = parser.parse_args()
    with fresh_database(args.postgres) as url:
        store = PostgresStore(url, pool_size=8)
        await store.open()
        client = aioredis.from_url(args.redis)
        script = client.register_script(BUCKET_LUA)
        key = f"speechgw-bench-{uuid.uuid4().hex[:8]}"

        async def postgres_take() -> None:
            await store.limits.take("bench", 6e6, 10)

        async def redis_take() -> None:
            await script(keys=[key], args=[10, 1e5])

        try:
            header = ("token spent", "PostgreSQL/s", "p50 ms", "Redis/s", "p50 ms")
            print("{:<16} {:>13} {:>7} {:>9} {:>7}".format(*header))
            for concurrency in (1, 16):
                await timed(args.n // 10, concurrency, postgres_take)
                await timed(args.n // 10, concurrency, redis_take)
                pg_rate, pg_ms = await timed(args.n, concurrency, postgres_take)
                rd_rate, rd_ms = await timed(args.n, concurrency, redis_take)
                label = f"{concurrency} at a time"
                print(f"{label:<16} {pg_rate:>13.0f} {pg_ms:>7.3f} {rd_rate:>9.0f} {rd_ms:>7.3f}")
        finally:
            await store.aclose()
            await client.delete(key)
            await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
