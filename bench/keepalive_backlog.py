#!/usr/bin/env python3
"""What a stream client's keepalive pings do when it sends faster than real time.

The server reads a stream no faster than its backend recognises it (back-pressure), so the
rest of an unpaced client's audio waits in the two sockets' buffers, and so do the client's
pings: their pongs come as late as the server takes to recognise that audio. This streams the
six espeak-ng test sentences eleven times over (66 utterances a second apart, about 265 s)
through ``speechgw serve`` in 100 ms chunks, all at once, with python-websockets' sync client
set one of three ways (``--pings``):

- ``default``: its defaults (a ping every 20 s, a pong within 20 s or it closes with 1011);
- ``no-timeout``: ``ping_timeout=None``, which docs/PROTOCOLS.md used to advise;
- ``none``: ``ping_interval=None``, no pings (what our clients do now).

Reported: the replies received of the 66, how the connection ended, the pings sent, the
latest pong, and the most bytes seen queued (``ss``) in the server's receive buffer and the
client's send buffer.

    python bench/keepalive_backlog.py [--pings default|no-timeout|none] [--model base]
                                      [--cpu-threads 1]

How late the pongs come depends on how fast the backend recognises: with base on one thread
of these 2-core machines they pass 20 s; with two threads they did not (16 s).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import subprocess
import threading
import time
from pathlib import Path

from _common import served, tempdir, whisper_gateway_config
from websockets.sync.client import connect

from tests import speech
from tests.streaming_client import read_pcm16

PINGS = {"default": {}, "no-timeout": {"ping_timeout": None}, "none": {"ping_interval": None}}


class _PingCounter(logging.Handler):
    """Counts the pings the client library logs sending (its debug log: "> PING ...")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sent = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("> PING"):
            self.sent += 1


def _queued(port: int) -> tuple[int, int]:
    """Bytes in the server's receive queue and the client's send queue of the connection."""
    out = subprocess.run(
        ["ss", "-tnH", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    server = client = 0
    for line in out.splitlines():
        fields = line.split()  # state, Recv-Q, Send-Q, local address, peer address
        if len(fields) >= 5 and fields[3].endswith(f":{port}"):
            server = max(server, int(fields[1]))
        elif len(fields) >= 5 and fields[4].endswith(f":{port}"):
            client = max(client, int(fields[2]))
    return server, client


def stream(
    url: str, pcm: bytes, rate: int, pings: dict[str, None]
) -> tuple[int, str, tuple[int, int], float]:
    """Send ``pcm`` at once in 100 ms chunks, then end; returns the replies received, how the
    connection ended, the most bytes queued (server's receive, client's send), and the
    latest pong (seconds)."""
    port = int(url.rsplit(":", 1)[1])
    replies, ending, most, latest_pong = 0, [], [0, 0], 0.0
    started = time.monotonic()
    with connect(url + "/api/core/google/asr", max_size=None, compression=None, **pings) as ws:
        ws.recv(timeout=30)

        def read() -> None:
            nonlocal replies
            try:
                for message in ws:
                    replies += "asr_reply" in json.loads(message)
                ending.append(f"closed {ws.close_code}")
            except Exception as exc:  # how it ended is what this measures
                ending.append(repr(exc))
            ending.append(f"after {time.monotonic() - started:.0f} s")

        def watch() -> None:
            nonlocal latest_pong
            while reader.is_alive():
                server, client = _queued(port)
                most[0], most[1] = max(most[0], server), max(most[1], client)
                latest_pong = max(latest_pong, ws.latency)
                time.sleep(0.5)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        threading.Thread(target=watch, daemon=True).start()
        step = rate // 10 * 2
        try:
            for i in range(0, len(pcm), step):
                message = {"audio": base64.b64encode(pcm[i : i + step]).decode()}
                if i == 0:
                    message["rate"] = rate
                ws.send(json.dumps(message))
            ws.send(json.dumps({"type": "end"}))
        except Exception as exc:  # the connection ended while sending
            ending.append(f"(sending stopped: {exc!r})")
        reader.join(timeout=900)
    return replies, " ".join(ending), (most[0], most[1]), latest_pong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", choices=list(PINGS), default="default")
    parser.add_argument("--model", default="base")
    parser.add_argument("--rate", type=int, default=16000, help="the stream's sample rate")
    parser.add_argument("--repeat", type=int, default=11, help="times the six sentences")
    parser.add_argument(
        "--cpu-threads", type=int, default=1, help="the backend's (1: as on a busy machine)"
    )
    args = parser.parse_args()
    counter = _PingCounter()
    client_log = logging.getLogger("websockets.client")
    client_log.setLevel(logging.DEBUG)  # before connecting: the library checks it then
    client_log.addHandler(counter)
    client_log.propagate = False
    with tempdir() as work:
        folder = Path(work)
        names = list(speech.SENTENCES) * args.repeat
        parts = {n: speech.speak(t, folder / f"{n}.wav") for n, t in speech.SENTENCES.items()}
        long = speech.concat([parts[n] for n in names], folder / "long.wav", silence_seconds=1.0)
        pcm, rate = read_pcm16(speech.convert(long, folder / "sent.wav", "-r", str(args.rate)))
        config = whisper_gateway_config(
            folder / "speechgw.yaml", model=args.model, cpu_threads=args.cpu_threads
        )
        with served(config) as url:
            replies, ending, most, latest_pong = stream(url, pcm, rate, PINGS[args.pings])
    print(
        f"{args.model} ({args.cpu_threads} thread), pings {args.pings}: "
        f"{replies} of {len(names)} replies; "
        f"{ending}; {counter.sent} pings sent, latest pong {latest_pong:.1f} s; "
        f"most queued: {most[0] / 1e6:.1f} MB in the server's socket, "
        f"{most[1] / 1e6:.1f} MB in the client's ({len(pcm) / 2 / rate:.0f} s of audio)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
