#!/usr/bin/env python3
"""Fleet ceiling: the batch protocol's requests per second with the scripted backend (the
gateway alone), the ledger in SQLite or in PostgreSQL, on one and two replicas.

Every request presents an API key kept in the store (so each one is a key check in the store
and a ledger row committed before its reply); CLIENTS connections loop over connect,
metadata, a 10 s WAV frame, reply, close, for SECONDS. With two replicas, the clients are
split between them (no proxy: nginx is not what is measured). ``--limits`` also turns on the
per-key rate limit (set far above the load) and connection cap: with PostgreSQL each request
then spends a token and holds a connection place in the database.

    python bench/fleet_ceiling.py [--runs 3] [--seconds 10] [--clients 8] [--limits]
        [--postgres postgresql://postgres@127.0.0.1:5432]

PostgreSQL: the server named (a fresh database is created on it and dropped after), or the
machine's on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from _common import REPO, served
from protocol_ceiling import ten_second_wav
from websockets.asyncio.client import connect

from speechgw.loading import load_app_config, open_store
from tests.postgres import fresh_database


async def load(urls: list[str], key: str, wav: bytes, clients: int, seconds: float) -> int:
    done = 0
    metadata = json.dumps({"type": "transcribe", "language": "en", "api_key": key})
    deadline = time.monotonic() + seconds

    async def client(url: str) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            async with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
                await ws.send(metadata)
                await ws.send(wav)
                reply = json.loads(await ws.recv())
                if "text" not in reply:
                    raise RuntimeError(f"refused: {reply}")
                done += 1

    await asyncio.gather(*(client(urls[i % len(urls)]) for i in range(clients)))
    return done


def measure(store: dict, replicas: int, args: argparse.Namespace, wav: bytes) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="speechgw-fleet-bench-"))
    document = yaml.safe_load((REPO / "bench" / "scripted.yaml").read_text())
    document["store"] = store
    if args.limits:
        document["limits"] = {"rate_limit_per_key": 1e9, "max_connections_per_key": 256}
    config = work / "gw.yaml"
    config.write_text(yaml.safe_dump(document))
    created = open_store(load_app_config(str(config)))
    assert created is not None
    key = created.create_key("bench")
    created.close()
    rates = []
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(served(config)) for _ in range(replicas)]
        asyncio.run(load(urls, key, wav, args.clients, 2.0))  # warm up
        for _ in range(args.runs):
            started = time.monotonic()
            done = asyncio.run(load(urls, key, wav, args.clients, args.seconds))
            rates.append(done / (time.monotonic() - started))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--limits", action="store_true", help="per-key limits on")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    wav = ten_second_wav()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        results["SQLite, 1 replica"] = measure({"path": f"{folder}/ledger.db"}, 1, args, wav)
    for replicas in (1, 2):
        with fresh_database(args.postgres) as url:
            name = f"PostgreSQL, {replicas} replica{'s' * (replicas > 1)}"
            results[name] = measure({"url": url}, replicas, args, wav)
    baseline = statistics.median(results["SQLite, 1 replica"])
    print(
        f"{args.clients} clients, {args.runs} runs of {args.seconds:g} s, limits "
        f"{'on' if args.limits else 'off'}; requests/s (median, runs), share of SQLite's"
    )
    for name, rates in results.items():
        median = statistics.median(rates)
        runs = " ".join(f"{r:.0f}" for r in rates)
        print(f"  {name:<26} {median:6.0f}  ({runs})  {median / baseline:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
