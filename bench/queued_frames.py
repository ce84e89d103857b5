#!/usr/bin/env python3
"""What a client sending on behind its request makes the server hold.

One batch client sends its metadata, a SECONDS-long WAV of noise (the request: it keeps tiny.en
busy longer than WATCH), then FRAMES binary frames of FRAME_MB each without reading anything.
For WATCH seconds the server's resident memory is sampled; reported: how many of the frames the
server took (the client's sends that completed; TCP stops the rest) and its RSS peak over the
start, once with no extra frame (the request alone) and once with them, each on a fresh
``speechgw serve`` that returns freed memory to the kernel (``retain_freed_memory_mib: 0``:
with the default the frames reuse memory the request freed, and RSS says little).

    python bench/queued_frames.py [--frames 12] [--frame-mb 60] [--seconds 590] [--watch 20]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
from _common import served, tempdir, wav_bytes, whisper_gateway_config
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def noise_wav(seconds: float) -> bytes:
    samples = np.random.default_rng(0).normal(0, 3000, int(16000 * seconds)).astype("<i2")
    return wav_bytes(samples.tobytes())


def held(
    config: Path, request: bytes, frames: int, frame: bytes, watch: float
) -> tuple[int, float]:
    """Frames the server took, and the MiB its RSS rose by at most, while the client sent."""
    with served(config) as url:
        start = url.rss_mib()
        sent = [0]

        def client() -> None:
            try:
                with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
                    ws.send(json.dumps({"type": "transcribe"}))
                    ws.send(request)
                    for _ in range(frames):
                        ws.send(frame)
                        sent[0] += 1
                    time.sleep(watch)  # hold the connection open while memory is sampled
            except (ConnectionClosed, OSError):
                pass

        threading.Thread(target=client, daemon=True).start()
        peak, deadline = start, time.monotonic() + watch
        while time.monotonic() < deadline:
            peak = max(peak, url.rss_mib())
            time.sleep(0.2)
        return sent[0], peak - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--frame-mb", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=590)
    parser.add_argument("--watch", type=float, default=20)
    args = parser.parse_args()
    request = noise_wav(args.seconds)
    frame = b"RIFF" + bytes(args.frame_mb * 1_000_000)
    with tempdir() as folder:
        config = whisper_gateway_config(
            Path(folder) / "config.yaml",
            server={"retain_freed_memory_mib": 0},
            model="tiny.en",
            cpu_threads=1,
        )
        _, alone = held(config, request, 0, frame, args.watch)
        taken, behind = held(config, request, args.frames, frame, args.watch)
    print(
        f"the server took {taken} of {args.frames} frames of {args.frame_mb} MB; peak RSS "
        f"growth: the request alone +{alone:.0f} MiB, with the frames +{behind:.0f} MiB "
        f"(difference {behind - alone:+.0f} MiB)"
    )


if __name__ == "__main__":
    main()
