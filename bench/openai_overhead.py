#!/usr/bin/env python3
"""The OpenAI-compatible HTTP path next to the batch WebSocket path, on the same recordings.

One ``speechgw serve`` (bench/tiny.en.yaml: tiny.en, one worker, one thread) answers, for each
10-30 s recording (the English files of ../shared/audio joined into pieces; espeak-ng speech
without it) and each run, in turn (the order rotating):

- the WAV over the batch protocol (``/ws/transcribe``),
- the same WAV to ``POST /v1/audio/transcriptions`` through the official ``openai`` SDK,
- the same audio as a 64 kbit/s mono mp3 over the same HTTP path (what decoding adds; its
  in-process decoding time is reported too, as the lossy audio can change the model's work).

Latency: seconds from the request to its answer, as the client sees it, and each path's median
ratio to the WebSocket one. Throughput: ``--clients`` clients at once loop over the pieces for
``--seconds`` per path; audio seconds answered per second. Texts are compared too (the WAV over
HTTP is decoded by FFmpeg, the WebSocket one by speechgw's WAV reader: the same samples).

    python bench/openai_overhead.py [--runs 3] [--clients 2] [--seconds 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

from _common import (
    REPO,
    gateway_transcribe,
    paired_rounds,
    recordings,
    sdk_transcribe,
    served,
    tempdir,
)
from openai import OpenAI

from speechgw.media import decode_media


def to_mp3(wav: Path) -> bytes:
    """``wav`` as a 64 kbit/s mono mp3, encoded by FFmpeg's libmp3lame (the tests' encoder)."""
    sys.path.insert(0, str(REPO))
    from tests import speech

    mp3 = wav.with_suffix(".mp3")
    return speech.encode(wav, mp3, "mp3", 16000, "mono", 64_000).read_bytes()


def throughput(call, pieces: list[tuple[bytes, bytes, float]], clients: int, seconds: float):
    """Audio seconds answered per second by ``clients`` threads looping ``call(piece)``."""
    answered = [0.0] * clients
    deadline = time.monotonic() + seconds

    def loop(i: int) -> None:
        n = i
        while time.monotonic() < deadline:
            piece = pieces[n % len(pieces)]
            call(piece)
            answered[i] += piece[2]
            n += 1

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(answered) / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempdir() as work, served(REPO / "bench" / "tiny.en.yaml") as url:
        files = recordings(Path(work))
        pieces = []
        for path in files:
            wav = path.read_bytes()
            pieces.append((wav, to_mp3(path), (len(wav) - 44) / 32000))
        client = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="none")
        paths = {
            "ws": lambda p: gateway_transcribe(url, p[0]),
            "http-wav": lambda p: sdk_transcribe(client, "a.wav", p[0]),
            "http-mp3": lambda p: sdk_transcribe(client, "a.mp3", p[1]),
        }
        for call in paths.values():  # warm up
            call(pieces[0])
        rounds = paired_rounds(
            paths, pieces, args.runs, "ws", lambda i, piece: f"piece {i} ({piece[2]:.1f} s)"
        )
        decode_ms = []
        for _, mp3, seconds in pieces:
            started = time.perf_counter()
            decode_media(mp3, 600)
            decode_ms.append((time.perf_counter() - started) * 1000 / seconds * 10)
        rates = {
            name: throughput(call, pieces, args.clients, args.seconds)
            for name, call in paths.items()
        }
        client.close()
    shape = f"{len(pieces)} recordings, tiny.en, 1 worker x 1 thread"
    print(f"\n{rounds.total} requests per path, {shape}")
    print(f"mp3 decoding in-process (PyAV): median {statistics.median(decode_ms):.1f} ms per 10 s")
    for name in paths:
        line = rounds.line(name, "ws")
        if name in rounds.ratios:
            line += (
                f", same text as ws {rounds.same[name]}/{rounds.total}"
                f" ({rounds.differing[name]} of {rounds.words} words differ)"
            )
        line += f"; throughput {rates[name]:.1f} audio s/s ({args.clients} clients)"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
