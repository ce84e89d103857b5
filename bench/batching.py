#!/usr/bin/env python3
"""Batched Whisper (issue 17): batch throughput of the gateway at each ``batch_size`` against
in-process faster-whisper, ``WhisperModel`` and ``BatchedInferencePipeline``, on the same jobs.

At each client level C, one list of JOBS recordings (the pieces, repeated) is run by C clients:
- ``WhisperModel``: in this process, ``num_workers`` = WORKERS, C threads, ``transcribe``
  (beam 5, English), the segment generator consumed;
- ``BatchedInferencePipeline``: in this process over the same model, C threads, each file
  batched over its own VAD chunks (``batch_size`` = the largest of BATCH_SIZES): what
  faster-whisper offers for one file;
- the gateway: ``speechgw serve`` with ``concurrency: WORKERS`` and each ``batch_size`` of
  BATCH_SIZES, C batch-protocol clients; segments timed by Whisper's timestamp tokens, and with
  ``--more-gateways TIMES:SIZE,...`` also with those ``segment_times`` and batch sizes
  (``pauses``: text alone per window; ``sentences``: those windows cut into sentences);
  ``--processes N``: ``speechgw serve --processes N`` (N server processes on one port, each its
  own model and GIL, on one GPU; the kernel deals the connections out among them).
Reported: audio seconds per wall second, p50/p95 request latency, and how many texts differ
from ``WhisperModel``'s for the same job (and, in the log, from ``BatchedInferencePipeline``'s,
which decodes text alone as ``segment_times: pauses`` does). ``--rounds R``: every side
measured R times in turn instead, every gateway started at once, and each gateway's ratio to
the better in-process side of each round (single runs at one client differ by 12%).

    python bench/batching.py [--levels 1,4,16] [--batch-sizes 1,4] [--jobs 32]
        [--more-gateways pauses:1,pauses:4]                                          # CPU
    python3 bench/batching.py --device cuda --compute-type float16 --model "$SPEECHGW_GPU_MODEL" \\
        --audio "$SPEECHGW_GPU_AUDIO" --levels 1,16,64 --batch-sizes 1,8,16,32 --jobs 256 \\
        --workers 1 --out "$OUT"                                                   # the GPU

Audio: ``--audio DIR`` of 16 kHz mono 16-bit WAV pieces (the GPU recipe's), else the English
recordings of ../shared/audio joined into 10-30 s pieces (espeak-ng sentences without it).
WAVs are read with ``wave`` (PyAV is a stub on the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from _common import (
    REPO,
    add_model_arguments,
    gateway_transcribe,
    recordings,
    served,
    whisper_gateway_config,
)


def read_wav(path: Path) -> tuple[bytes, np.ndarray, float]:
    data = path.read_bytes()
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data, pcm.astype(np.float32) / 32768.0, len(pcm) / 16000


def measure(run, jobs: list[int], clients: int, seconds: list[float]) -> dict:
    """Run job i with ``run(i) -> text`` from ``clients`` threads; the figures."""
    latencies: list[float] = []
    texts: dict[int, str] = {}

    def one(n: int) -> None:
        i = jobs[n]
        started = time.perf_counter()
        texts[n] = run(i)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(jobs))))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "audio_s_per_s": sum(seconds[i] for i in jobs) / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "texts": texts,
    }


def start_gateway(
    stack: ExitStack,
    args: argparse.Namespace,
    model_path: str,
    work: Path,
    pieces: list,
    segment_times: str,
    batch_size: int,
) -> tuple[str, Callable[[int], str]]:
    """``--processes`` servers of one gateway config, warmed up, held open by ``stack``: the
    row's name, and a function that sends job i to the next of them."""
    config = whisper_gateway_config(
        work / f"gateway-{segment_times}-b{batch_size}.yaml",
        model=model_path,
        device=args.device,
        compute_type=args.compute_type,
        cpu_threads=args.cpu_threads,
        concurrency=args.workers,
        batch_size=batch_size,
        segment_times=segment_times,
    )
    name = f"gateway, batch_size {batch_size}"
    if segment_times != "tokens":
        name += f", segment_times {segment_times}"
    if args.processes > 1:
        name += f", {args.processes} processes"
    url = stack.enter_context(served(config, args.processes))
    for _ in range(2 * args.processes):  # warm up (the kernel deals the connections out)
        gateway_transcribe(url, pieces[0][0])

    def gateway(i: int) -> str:
        return gateway_transcribe(url, pieces[i][0])[1] or ""

    return name, gateway


def alternated(
    args: argparse.Namespace,
    in_process: dict[str, Callable[[int], str]],
    gateways: list[tuple[str, int]],
    model_path: str,
    work: Path,
    pieces: list,
    jobs: list[int],
    seconds: list[float],
) -> int:
    """``--rounds`` R: every side (in-process and each gateway, all started at once) measured
    R times at each level, the sides taken in a rotated order each round, so that drift in the
    machine falls on all of them. Printed: each measurement, then per level the median audio
    s/s of each side and each gateway's ratio to the better in-process side of the same round
    (issue 17 asks >= 0.97 at every level)."""
    levels = [int(x) for x in args.levels.split(",")]
    with ExitStack() as stack:
        sides = dict(in_process)
        for segment_times, batch_size in gateways:
            name, gateway = start_gateway(
                stack, args, model_path, work, pieces, segment_times, batch_size
            )
            sides[name] = gateway
        names = list(sides)
        figures: dict[tuple[str, int], list[float]] = {(n, c): [] for n in names for c in levels}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for c in levels:
                for name in order:
                    rate = measure(sides[name], jobs, c, seconds)["audio_s_per_s"]
                    figures[name, c].append(rate)
                    print(f"round {r + 1}, {c} clients, {name}: {rate:.1f} audio s/s", flush=True)
    lines = [
        f"{args.model} on {args.device} ({args.compute_type}), {args.workers} worker(s), "
        f"{args.jobs} jobs, {args.rounds} rounds; median audio s/s, then for a gateway its "
        f"ratio to the better in-process side of each round"
    ]
    lines += ["| side | " + " | ".join(f"{c} clients" for c in levels) + " |"]
    lines += ["|---" * (len(levels) + 1) + "|"]
    for name in names:
        cells = []
        for c in levels:
            cell = f"{statistics.median(figures[name, c]):.1f}"
            if name not in in_process:
                best = [max(v) for v in zip(*(figures[n, c] for n in in_process), strict=True)]
                ratios = [g / b for g, b in zip(figures[name, c], best, strict=True)]
                cell += " (" + ", ".join(f"{x:.2f}" for x in ratios) + ")"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    (args.out / "batching-rounds.md").write_text("\n".join(lines) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument(
        "--more-gateways", default="", help="SEGMENT_TIMES:BATCH_SIZE,... (pauses:8)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1, help="gateway processes per row")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure every side this many times, alternating (every gateway started at once)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "batching")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    levels = [int(x) for x in args.levels.split(",")]
    batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    gateways = [("tokens", b) for b in batch_sizes]
    for item in filter(None, args.more_gateways.split(",")):
        times, size = item.split(":")
        gateways.append((times, int(size)))

    work = Path(tempfile.mkdtemp(prefix="speechgw-batching-"))
    paths = sorted(args.audio.glob("piece*.wav")) if args.audio else recordings(work)
    pieces = [read_wav(p) for p in paths]
    seconds = [p[2] for p in pieces]
    jobs = [i % len(pieces) for i in range(args.jobs)]
    print(f"{len(pieces)} pieces, {sum(seconds):.1f} s; {args.jobs} jobs per run", flush=True)

    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from speechgw.backends.whisper import resolve_model

    from speechgw.tuning import limit_blas_threads, retain_freed_memory

    retain_freed_memory(1024)
    limit_blas_threads(1)
    model_path = resolve_model(args.model)
    model = WhisperModel(
        model_path,
        device=args.device,
        compute_type=args.compute_type,
        cpu_threads=args.cpu_threads,
        num_workers=args.workers,
    )
    pipeline = BatchedInferencePipeline(model)

    def whisper(i: int) -> str:
        segments, _ = model.transcribe(pieces[i][1], language="en", beam_size=5)
        return "".join(s.text for s in segments).strip()

    def batched_pipeline(i: int) -> str:
        segments, _ = pipeline.transcribe(
            pieces[i][1], language="en", beam_size=5, batch_size=max(b for _, b in gateways)
        )
        return "".join(s.text for s in segments).strip()

    results: dict[str, dict[int, dict]] = {}
    reference = {i: whisper(i) for i in range(len(pieces))}  # also warms the model up
    untimed = {i: batched_pipeline(i) for i in range(len(pieces))}

    def measured(name: str, run) -> dict[int, dict]:
        """Each level's figures, each printed as soon as it is taken (a run cut short by its
        time limit still leaves the levels it reached in the log)."""
        by_level = {}
        for c in levels:
            r = by_level[c] = measure(run, jobs, c, seconds)
            differ = sum(r["texts"][n] != reference[jobs[n]] for n in range(len(jobs)))
            unlike = sum(r["texts"][n] != untimed[jobs[n]] for n in range(len(jobs)))
            print(
                f"{name}, {c} clients: {r['audio_s_per_s']:.1f} audio s/s, "
                f"p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s, {differ} texts differ "
                f"({unlike} from BatchedInferencePipeline's)",
                flush=True,
            )
        return by_level

    in_process = {"WhisperModel": whisper, "BatchedInferencePipeline": batched_pipeline}
    if args.rounds > 1:
        return alternated(args, in_process, gateways, model_path, work, pieces, jobs, seconds)
    for name, run in in_process.items():
        results[name] = measured(name, run)

    for segment_times, batch_size in gateways:
        with ExitStack() as stack:
            name, gateway = start_gateway(
                stack, args, model_path, work, pieces, segment_times, batch_size
            )
            results[name] = measured(name, gateway)

    lines = [
        f"{args.model} on {args.device} ({args.compute_type}), {args.workers} worker(s), "
        f"{args.jobs} jobs per level; audio s/s, p50 / p95 s, texts differing from WhisperModel's"
    ]
    header = "| side | " + " | ".join(f"{c} clients" for c in levels) + " |"
    lines += [header, "|---" * (len(levels) + 1) + "|"]
    for name, by_level in results.items():
        cells = []
        for c in levels:
            r = by_level[c]
            differ = sum(r["texts"][n] != reference[jobs[n]] for n in range(len(jobs)))
            cells.append(f"{r['audio_s_per_s']:.1f} ({r['p50']:.2f} / {r['p95']:.2f}) {differ}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    (args.out / "batching.md").write_text("\n".join(lines) + "\n")
    summary = {
        name: {c: {k: v for k, v in r.items() if k != "texts"} for c, r in by.items()}
        for name, by in results.items()
    }
    (args.out / "batching.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
