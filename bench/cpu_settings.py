#!/usr/bin/env python3
"""CPU settings: in-process faster-whisper throughput for worker x thread layouts, with and
without the process settings ``speechgw serve`` applies (glibc allocator, one BLAS thread).

Each layout runs in a fresh process (allocator settings cannot be undone): the 4 benchmark
pieces (42.6 s of audio), twice over, from as many threads as workers, 3 passes. Reported per
layout: median audio seconds per wall second, and per job the minor page faults, voluntary
context switches and CPU seconds.

    python bench/cpu_settings.py [--model tiny.en]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import recordings, tempdir

from speechgw.audio import read_wav

LAYOUTS = [  # (workers, threads per worker, allocator, one BLAS thread)
    (1, 2, False, False),
    (1, 2, True, True),
    (1, 1, False, False),
    (1, 1, True, True),
    (2, 1, False, False),
    (2, 1, True, False),
    (2, 1, False, True),
    (2, 1, True, True),
]


def measure(model_name: str, workers: int, threads: int, allocator: bool, blas: bool) -> dict:
    from speechgw.tuning import limit_blas_threads, retain_freed_memory

    if allocator:
        retain_freed_memory(1024)
    if blas:
        limit_blas_threads(1)
    from faster_whisper import WhisperModel
    from speechgw.backends.whisper import resolve_model

    model = WhisperModel(
        resolve_model(model_name),
        device="cpu",
        compute_type="int8",
        cpu_threads=threads,
        num_workers=workers,
    )
    with tempdir() as work:
        audio = [read_wav(p.read_bytes())[0] for p in recordings(Path(work))]
    jobs = audio * 2
    seconds = sum(len(a) for a in jobs) / 16000

    def one(samples) -> None:
        list(model.transcribe(samples, language="en", beam_size=5)[0])

    with ThreadPoolExecutor(workers) as pool:  # warm-up: buffers, caches
        list(pool.map(one, audio))
    rates, faults, switches, cpu = [], [], [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, jobs))
        rates.append(seconds / (time.perf_counter() - started))
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append((after.ru_minflt - before.ru_minflt) / len(jobs))
        switches.append((after.ru_nvcsw - before.ru_nvcsw) / len(jobs))
        used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        cpu.append(used / len(jobs))
    return {
        "rate": statistics.median(rates),
        "faults": statistics.median(faults),
        "switches": statistics.median(switches),
        "cpu": statistics.median(cpu),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--one", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        workers, threads, allocator, blas = args.one
        print(json.dumps(measure(args.model, workers, threads, bool(allocator), bool(blas))))
        return 0
    print(f"model {args.model}; 8 jobs of 10-11 s per pass, median of 3 passes")
    print(
        "workers x threads | allocator | 1 BLAS thread | audio s/s | faults/job | "
        "context switches/job | CPU s/job"
    )
    for workers, threads, allocator, blas in LAYOUTS:
        command = [sys.executable, __file__, "--model", args.model, "--one"]
        command += [str(workers), str(threads), str(int(allocator)), str(int(blas))]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        got = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"{workers} x {threads} | {'yes' if allocator else 'no'} | "
            f"{'yes' if blas else 'no'} | {got['rate']:.1f} | {got['faults']:.0f} | "
            f"{got['switches']:.0f} | {got['cpu']:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
