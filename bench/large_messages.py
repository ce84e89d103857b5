#!/usr/bin/env python3
"""How long one large message holds the server's event loop, and so every other client.

A streaming client may send a whole recording in one message (the spec asks for 100 ms chunks,
but a file is easiest sent at once): MINUTES of speech (the NASA podcast of ``../shared/audio``
over and over; noise without it) as one base64 message, then ``{"type":"end"}``; and, for
comparison, the same recording as one batch WAV frame and as one OpenAI upload. Meanwhile
another client, a process of its own, polls ``GET /health`` on a kept-alive connection as fast
as it is answered: each answer's wait is how long the event loop was busy with something else.
Reported: the longest and the 99th-percentile wait while the request runs, and its time. The
scripted backend answers at once (one reply per utterance), so only the gateway is measured.

    python bench/large_messages.py [--minutes 22] [--rounds 3] [--protocols streaming,batch,openai]
    python bench/large_messages.py --base64-forms    # in-process: each form of base64, 60 MiB
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from _common import NASA_PODCAST, pcm16k, served, tempdir, wav_bytes
from websockets.sync.client import connect

from tests.client import HealthPoller


def speech(minutes: float) -> np.ndarray:
    """``minutes`` of 16 kHz int16 speech (noise when ../shared/audio is absent)."""
    wanted = int(minutes * 60 * 16000)
    if all(path.exists() for path in NASA_PODCAST):
        podcast = np.concatenate([pcm16k(path) for path in NASA_PODCAST])
        return np.resize(podcast, wanted)
    return np.random.default_rng(0).normal(0, 3000, wanted).astype(np.int16)


def streamed(url: str, samples: np.ndarray) -> Callable[[], int]:
    """The whole recording as one streaming message, then ``end``; returns the replies."""
    message = json.dumps({"audio": base64.b64encode(samples.tobytes()).decode()})
    print(f"streaming: one message of {len(message) / 2**20:.1f} MiB")

    def send() -> int:
        with connect(f"{url}/api/core/google/asr", max_size=None, ping_interval=None) as ws:
            json.loads(ws.recv())  # the connection message
            ws.send(message)
            ws.send(json.dumps({"type": "end"}))
            return sum("asr_reply" in json.loads(reply) for reply in ws)

    return send


def batched(url: str, samples: np.ndarray) -> Callable[[], int]:
    """The recording as one batch request's WAV frame; returns its segments."""
    wav = wav_bytes(samples.tobytes())
    print(f"batch: one WAV frame of {len(wav) / 2**20:.1f} MiB")

    def send() -> int:
        with connect(f"{url}/ws/transcribe", max_size=None, ping_interval=None) as ws:
            ws.send(json.dumps({"type": "transcribe", "language": "en"}))
            ws.send(wav)
            return len(json.loads(ws.recv())["segments"])

    return send


def uploaded(url: str, samples: np.ndarray) -> Callable[[], int]:
    """The recording as one OpenAI upload (multipart WAV); returns its segments."""
    boundary = "large-messages-bench"

    def field(name: str, extra: str = "") -> bytes:
        return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'.encode()

    body = b"".join(
        [
            field("model") + b"\r\nwhisper-1\r\n",
            field("response_format") + b"\r\nverbose_json\r\n",
            field("file", '; filename="a.wav"') + b"Content-Type: audio/wav\r\n\r\n",
            wav_bytes(samples.tobytes()),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    print(f"openai: one upload of {len(body) / 2**20:.1f} MiB")
    parts = urlsplit(url.replace("ws://", "http://", 1))

    def send() -> int:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        connection.request("POST", "/v1/audio/transcriptions", body, headers)
        response = connection.getresponse()
        return len(json.loads(response.read())["segments"])

    return send


PROTOCOLS = {"streaming": streamed, "batch": batched, "openai": uploaded}


def one_round(url: str, send: Callable[[], int]) -> tuple[float, float, float, int]:
    """(longest wait, p99 wait, seconds, replies) for one ``send``."""
    with HealthPoller(url.replace("ws://", "http://", 1)) as poller:
        time.sleep(0.2)  # a few quiet polls first
        start = time.monotonic()
        replies = send()
        end = time.monotonic()
    waits = sorted(poller.waits_between(start, end))
    return waits[-1], waits[int(0.99 * (len(waits) - 1))], end - start, replies


def base64_holds(mib: int = 60) -> None:
    """In-process: the longest hold of the event loop while MIB MiB of ``audio`` in each form
    (strict, MIME lines, no base64 at all) is decoded in one call and in pieces."""
    import asyncio
    import os

    from speechgw.protocols.streaming import decode_base64, decode_base64_in_pieces

    from speechgw.errors import InvalidAudio

    data = os.urandom(mib * 2**20 * 3 // 4)
    forms = {
        "standard": base64.b64encode(data).decode(),
        "MIME lines": base64.encodebytes(data).decode(),
        "no base64": "*" * (mib * 2**20),
    }

    async def longest_hold(decode: Callable[[], Awaitable[object]]) -> float:
        done, longest = False, 0.0

        async def tick() -> None:
            nonlocal longest
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest, last = max(longest, now - last), now

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.01)
        with contextlib.suppress(InvalidAudio):
            await decode()
        done = True
        await ticker
        return longest

    async def measure() -> None:
        for name, text in forms.items():

            async def whole(text: str = text) -> bytes:
                return decode_base64(text)

            async def pieces(text: str = text) -> list[bytes]:
                return await decode_base64_in_pieces(text)

            print(
                f"{name}, {len(text) / 2**20:.0f} MiB: one call held the loop "
                f"{await longest_hold(whole) * 1000:.0f} ms, in pieces "
                f"{await longest_hold(pieces) * 1000:.0f} ms"
            )

    asyncio.run(measure())


def scripted_config(work: Path) -> Path:
    path = work / "scripted.yaml"
    path.write_text(
        "backends: {scripted: {type: scripted, text: words}}\n"
        "routing: [{backend: scripted}]\n"
        "store: {path: null}\n"
        "logging: {level: INFO}\n"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=22.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocols", default="streaming,batch,openai")
    parser.add_argument(
        "--base64-forms", action="store_true", help="only the in-process base64 measurement"
    )
    args = parser.parse_args()
    if args.base64_forms:
        base64_holds()
        return
    samples = speech(args.minutes)
    with tempdir() as work, served(scripted_config(Path(work))) as url:
        for protocol in args.protocols.split(","):
            send = PROTOCOLS[protocol](url, samples)
            for n in range(args.rounds):
                longest, p99, seconds, replies = one_round(url, send)
                print(
                    f"  round {n + 1}: /health waited at most {longest * 1000:.0f} ms "
                    f"(p99 {p99 * 1000:.0f} ms) while the request ran {seconds:.2f} s "
                    f"({replies} replies or segments)"
                )


if __name__ == "__main__":
    main()
