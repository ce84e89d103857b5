#!/usr/bin/env python3
"""How long the gateway holds the GIL per second of audio, and for what (issue 17).

On a GPU the model's work leaves the interpreter: what is left is Python (the event loop
receiving WebSocket frames, faster-whisper's own loop around the model, feature extraction,
the batcher), and all of it takes turns on one GIL. If that costs G milliseconds per second
of audio, one process can never serve more than 1000 / G audio seconds per second, however
fast the GPU. This measures G on the CPU, where the model releases the GIL while it computes,
so the figure carries over to a GPU (the same Python runs per window either way).

A ``speechgw serve`` process on ``--model`` (batch protocol, CLIENTS clients sending the
English pieces of ../shared/audio in turn) is sampled by ``py-spy record --gil`` (a sample
counts only while some thread holds the GIL); each sample is put under the deepest frame of
a known part. Needs py-spy (``.venv/bin/pip install py-spy``; not a dependency of speechgw).

    .venv/bin/python bench/gil_budget.py [--batch-size 8] [--clients 16] [--seconds 30]
    .venv/bin/python bench/gil_budget.py --streams [--clients 4]     # real-time streams instead
    .venv/bin/python bench/gil_budget.py --streams --scripted        # the gateway alone, no model
    .venv/bin/python bench/gil_budget.py --streams --scripted --streaming vad_max_gain_db=0
    python3 bench/gil_budget.py --device cuda --compute-type float16 --model "$SPEECHGW_GPU_MODEL" \
        --audio "$SPEECHGW_GPU_AUDIO" --batch-size 32 --clients 64               # the GPU

``--audio DIR``: 16 kHz mono WAV pieces (``piece*.wav``, the GPU recipe's); else the English
recordings of ../shared/audio joined into 10-30 s pieces (espeak-ng sentences without it).
Besides the GIL it prints the server's CPU time (all threads, from /proc) per audio second.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from _common import (
    add_model_arguments,
    gateway_transcribe,
    recordings,
    served,
    settings,
    whisper_gateway_config,
)
from stream_accuracy import stream

# (part, what a frame's file path contains), deepest frame first wins; order matters
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("features (faster-whisper's mel spectrogram)", ("feature_extractor",)),
    ("tokenizer (faster-whisper)", ("faster_whisper/tokenizer",)),
    ("faster-whisper's loop around the model", ("faster_whisper/",)),
    ("batcher", ("speechgw/batching", "backends/whisper_batching")),
    (
        "stream pipeline (VAD, segmenter, live audio)",
        ("speechgw/segmenter", "speechgw/live_audio", "speechgw/stream", "webrtcvad"),
    ),
    ("streaming messages (json, base64)", ("json/", "base64")),
    ("WebSocket frames (wsproto, h11, hypercorn)", ("wsproto/", "h11/", "hypercorn/")),
    (
        "gateway (speechgw, protocols, starlette)",
        ("speechgw/", "protocols/", "backends/", "starlette/", "anyio/"),
    ),
    ("event loop (asyncio)", ("asyncio/", "selectors")),
)


def part_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for part, needles in PARTS:
            if any(n in frame for n in needles):
                return part
    return "other"


def _pcm16(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


def _cpu_seconds(pid: int) -> float:
    """CPU time (user and system, all threads) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--segment-times", default="tokens", choices=["tokens", "pauses", "sentences"]
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--streams", action="store_true",
        help="clients stream the pieces at 1x over /api/core/google/asr instead of batch requests",
    )  # fmt: skip
    parser.add_argument(
        "--scripted", action="store_true",
        help="the scripted backend (answers at once): the gateway's own cost, no model beside it",
    )  # fmt: skip
    parser.add_argument(
        "--streaming", action="append", default=[], metavar="KEY=VALUE",
        help="a streaming setting of the server (vad_max_gain_db=0); repeatable",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--event-loop", default="auto", help="server.event_loop")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--detail", type=int, default=0, help="print each part's top N frames")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        parser.error("py-spy is not installed: .venv/bin/pip install py-spy")

    work = Path(tempfile.mkdtemp(prefix="speechgw-gil-"))
    paths = sorted(args.audio.glob("piece*.wav")) if args.audio else recordings(work)
    wavs = [p.read_bytes() for p in paths]
    pcm = [_pcm16(p) for p in paths]
    seconds = []
    for p in paths:
        with wave.open(str(p)) as w:
            seconds.append(w.getnframes() / w.getframerate())
    config = whisper_gateway_config(
        work / "gateway.yaml",
        server={"event_loop": args.event_loop},
        model=args.model,
        device=args.device,
        compute_type=args.compute_type,
        cpu_threads=args.cpu_threads,
        concurrency=args.workers,
        batch_size=args.batch_size,
        segment_times=args.segment_times,
    )
    document = yaml.safe_load(config.read_text())
    if args.scripted:  # the same server settings, the model's place taken by a fixed text
        document["backends"] = {"whisper": {"type": "scripted", "text": "scripted words"}}
    document.setdefault("streaming", {}).update(settings(args.streaming))
    config.write_text(yaml.safe_dump(document))
    raw = work / "gil.txt"
    done = {"audio": 0.0, "requests": 0}
    lock = threading.Lock()
    with served(config) as url:
        gateway_transcribe(url, wavs[0])  # warm up
        stop = time.monotonic() + args.seconds + 3

        def client(k: int) -> None:
            i = k
            while time.monotonic() < stop:
                if args.streams:  # 1x real time: replies, counted as requests
                    replies = stream(url, pcm[i % len(pcm)], "en", 1.0)
                    with lock:
                        done["requests"] += len(replies)
                else:
                    gateway_transcribe(url, wavs[i % len(wavs)])
                    with lock:
                        done["audio"] += seconds[i % len(wavs)]
                        done["requests"] += 1
                i += 1

        with ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(client, k) for k in range(args.clients)]
            time.sleep(2)  # every client under way before sampling starts
            with lock:
                before = dict(done)
            sampled_from, cpu_from = time.monotonic(), _cpu_seconds(url.pid)
            command = [spy, "record", "--gil", "--nonblocking", "-r", str(args.rate)]
            command += ["-d", str(int(args.seconds)), "-f", "raw", "-o", str(raw)]
            subprocess.run(
                [*command, "-p", str(url.pid)],
                check=True,
                capture_output=True,
            )
            sampled = time.monotonic() - sampled_from
            cpu = _cpu_seconds(url.pid) - cpu_from
            with lock:
                audio = done["audio"] - before["audio"]
                requests = done["requests"] - before["requests"]
            if args.streams:  # every stream sends its audio at 1x the whole time
                audio = args.clients * sampled
            for f in futures:
                f.result()

    parts: collections.Counter[str] = collections.Counter()
    frames: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        part = part_of(stack)
        parts[part] += int(count)
        # the part's own deepest frame, and the frame that called into the part
        own = [f for f in stack.split(";") if part_of(f) == part]
        frames[part][own[-1] if own else stack.split(";")[-1]] += int(count)
    held = sum(parts.values()) / args.rate  # GIL-seconds while sampling
    per_audio = 1000 * held / audio
    what = "real-time streams" if args.streams else "batch clients"
    unit, units = ("reply", "replies") if args.streams else ("request", "requests")
    print(
        f"{args.model} on {args.device}, {args.event_loop} loop, batch_size {args.batch_size}, "
        f"segment_times {args.segment_times}, "
        f"{args.workers} worker(s) x {args.cpu_threads} thread(s), {args.clients} {what}: "
        f"{audio / sampled:.1f} audio s/s, "
        f"{requests / sampled:.2f} {units}/s ({audio / max(requests, 1):.1f} s each) "
        f"over {sampled:.0f} s"
    )
    print(f"GIL held {100 * held / sampled:.1f}% of the time: {per_audio:.3f} ms per audio second")
    print(f"server CPU (all threads): {1000 * cpu / audio:.3f} ms per audio second")
    ceiling = f"{1000 / per_audio:.0f} " + ("real-time streams" if args.streams else "audio s/s")
    print(f"one interpreter's ceiling: {ceiling}\n")
    print(f"| part | ms per audio s | ms per {unit} | share |")
    print("|---|---|---|---|")
    for part, count in parts.most_common():
        ms = 1000 * count / args.rate
        print(
            f"| {part} | {ms / audio:.3f} | {ms / max(requests, 1):.2f} | "
            f"{100 * count / sum(parts.values()):.0f}% |"
        )
    for part, _ in parts.most_common() if args.detail else ():
        print(f"\n{part}:")
        for frame, n in frames[part].most_common(args.detail):
            print(f"  {1000 * n / args.rate / max(requests, 1):.3f} ms per {unit}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
