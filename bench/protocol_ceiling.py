#!/usr/bin/env python3
"""Protocol ceiling: what the gateway itself costs, measured with the ``scripted`` backend.

Batch: CLIENTS connections loop over connect, metadata, one 10 s WAV frame (16 kHz int16,
320 KB), reply, close, for SECONDS; requests per second are counted. OpenAI-compatible HTTP:
CLIENTS clients (the official ``openai`` SDK's async client, keep-alive) loop over
``POST /v1/audio/transcriptions`` with the same WAV as multipart/form-data; requests per
second. Streaming: CLIENTS
connections each send 100 ms base64 LINEAR16 chunks as fast as the server takes them;
messages per second are counted. The clients are the ``websockets`` library with its defaults,
so they offer permessage-deflate as browsers do; the server must decline it.

    python bench/protocol_ceiling.py [--runs 5] [--seconds 10] [--clients 8]
    python bench/protocol_ceiling.py --url ws://127.0.0.1:PORT   # a server already running

``--url`` loads a server someone else started (two builds side by side, loaded in turn);
without it the script starts ``speechgw serve --config bench/scripted.yaml`` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from _common import REPO, served, wav_bytes
from openai import AsyncOpenAI, OpenAIError
from websockets.asyncio.client import connect


def ten_second_wav() -> bytes:
    rng = np.random.default_rng(0)
    return wav_bytes((rng.standard_normal(160_000) * 3000).astype("<i2").tobytes())


async def batch_load(url: str, wav: bytes, clients: int, seconds: float) -> tuple[int, int, bool]:
    done = errors = 0
    deflate_accepted = False
    metadata = json.dumps({"type": "transcribe", "language": "en"})
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done, errors, deflate_accepted
        while time.monotonic() < deadline:
            async with connect(url + "/ws/transcribe", max_size=None) as ws:
                if ws.response.headers.get("Sec-WebSocket-Extensions"):
                    deflate_accepted = True
                await ws.send(metadata)
                await ws.send(wav)
                reply = json.loads(await ws.recv())
                if "text" in reply:
                    done += 1
                else:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done, errors, deflate_accepted


async def http_load(url: str, wav: bytes, clients: int, seconds: float) -> tuple[int, int]:
    done = errors = 0
    deadline = time.monotonic() + seconds
    base = url.replace("ws://", "http://") + "/v1"

    async def client(sdk: AsyncOpenAI) -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            try:
                await sdk.audio.transcriptions.create(
                    model="whisper-1", file=("a.wav", wav), language="en"
                )
                done += 1
            except OpenAIError:
                errors += 1

    async with AsyncOpenAI(base_url=base, api_key="none", max_retries=0) as sdk:
        await asyncio.gather(*(client(sdk) for _ in range(clients)))
    return done, errors


async def stream_load(url: str, clients: int, seconds: float) -> int:
    rng = np.random.default_rng(1)
    chunk = base64.b64encode((rng.standard_normal(1600) * 300).astype("<i2").tobytes()).decode()
    message = json.dumps({"audio": chunk, "rate": 16000})
    sent = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal sent
        async with connect(url + "/api/core/google/asr", max_size=None) as ws:
            await ws.recv()
            while time.monotonic() < deadline:
                await ws.send(message)
                sent += 1
            await ws.send(json.dumps({"type": "end"}))
            async for _ in ws:
                pass

    await asyncio.gather(*(client() for _ in range(clients)))
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--url", help="load this running server instead of starting one")
    args = parser.parse_args()
    wav = ten_second_wav()
    os.environ.setdefault("SPEECHGW_BENCH_STORE", f"/tmp/speechgw-bench-{os.getpid()}.db")
    batch_rates, http_rates, stream_rates = [], [], []
    server = (
        contextlib.nullcontext(args.url) if args.url else served(REPO / "bench" / "scripted.yaml")
    )
    with server as url:
        for run in range(args.runs):
            started = time.monotonic()
            done, errors, deflate = asyncio.run(batch_load(url, wav, args.clients, args.seconds))
            batch_rates.append(done / (time.monotonic() - started))
            started = time.monotonic()
            http_done, http_errors = asyncio.run(http_load(url, wav, args.clients, args.seconds))
            http_rates.append(http_done / (time.monotonic() - started))
            started = time.monotonic()
            sent = asyncio.run(stream_load(url, args.clients, args.seconds))
            stream_rates.append(sent / (time.monotonic() - started))
            print(
                f"run {run + 1}: batch {batch_rates[-1]:.0f} requests/s ({errors} errors, "
                f"deflate {'ACCEPTED' if deflate else 'declined'}); openai "
                f"{http_rates[-1]:.0f} requests/s ({http_errors} errors); streaming "
                f"{stream_rates[-1]:.0f} messages/s ({stream_rates[-1] / 10:.0f}x real time)",
                flush=True,
            )
    print(
        f"median of {args.runs}: batch {statistics.median(batch_rates):.0f} requests/s of "
        f"{len(wav) // 1000} KB WAVs, openai {statistics.median(http_rates):.0f} requests/s of "
        f"the same, streaming {statistics.median(stream_rates):.0f} "
        f"messages/s of 100 ms, {args.clients} clients"
    )
    Path(os.environ["SPEECHGW_BENCH_STORE"]).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
