#!/usr/bin/env python3
"""Load generator: N concurrent clients of one protocol for a while; prints throughput,
latency percentiles and every distinct error.

    python examples/load_generator.py batch recording.wav --clients 8 --seconds 30
    python examples/load_generator.py stream recording.wav --clients 4 --seconds 30

batch: each client loops over one request with the WAV. stream: each client streams the WAV
(16-bit mono) at real-time pace, then ends; the latency is "last chunk -> last reply".
Stops by itself after --seconds (requests in flight are finished). Needs ``websockets``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import statistics
import threading
import time
import wave
from pathlib import Path

from websockets.sync.client import connect


def batch_once(url: str, wav: bytes) -> tuple[float, str | None]:
    started = time.perf_counter()
    with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
        ws.send(json.dumps({"type": "transcribe", "language": "en"}))
        ws.send(wav)
        reply = json.loads(ws.recv(timeout=600))
    return time.perf_counter() - started, reply.get("error")


def stream_once(url: str, pcm: bytes, rate: int) -> tuple[float, str | None]:
    step = rate // 10 * 2
    error = None
    with connect(url + "/api/core/google/asr", max_size=None, compression=None) as ws:
        ws.recv(timeout=30)
        started = time.perf_counter()
        for i in range(0, len(pcm), step):
            delay = started + i / (2 * rate) - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ws.send(
                json.dumps({"audio": base64.b64encode(pcm[i : i + step]).decode(), "rate": rate})
            )
        last_chunk = time.perf_counter()
        ws.send(json.dumps({"type": "end"}))
        last_reply = last_chunk
        for message in ws:
            reply = json.loads(message)
            if reply.get("type") == "error":
                error = reply["message"]
            last_reply = time.perf_counter()
    return last_reply - last_chunk, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=["batch", "stream"])
    parser.add_argument("wav")
    parser.add_argument("--url", default="ws://localhost:8765")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    wav = Path(args.wav).read_bytes()
    with wave.open(args.wav, "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    deadline = time.monotonic() + args.seconds
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def client() -> None:
        while time.monotonic() < deadline:
            try:
                if args.protocol == "batch":
                    latency, error = batch_once(args.url, wav)
                else:
                    latency, error = stream_once(args.url, pcm, rate)
            except Exception as exc:  # a load generator reports failures, it does not stop
                latency, error = 0.0, f"{type(exc).__name__}: {exc}"
            with lock:
                if error:
                    errors[error] += 1
                else:
                    latencies.append(latency)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    done = len(latencies)
    print(
        f"{args.protocol}: {done} ok in {elapsed:.1f} s ({done / elapsed:.1f}/s), "
        f"{sum(errors.values())} errors"
    )
    if len(latencies) >= 2:
        p = statistics.quantiles(latencies, n=20)
        print(f"latency p50 {statistics.median(latencies):.3f} s, p95 {p[18]:.3f} s")
    for error, count in errors.most_common():
        print(f"  {count} x {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
