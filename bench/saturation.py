#!/usr/bin/env python3
"""Saturation: audio seconds processed per wall second by the gateway under 1, 2, 4, 8 and 16
concurrent batch clients, against in-process faster-whisper running the same jobs from as many
threads, with the same model and options, measured side by side at each level.

Both sides run tiny.en with two CTranslate2 workers of one thread each (one per core: the
fastest setting on these 2 cores, see BENCHMARKS.md) and the same allocator settings: the
gateway from ``bench/tiny.en-x2.yaml``, in-process as ``WhisperModel(num_workers=2,
cpu_threads=1)``. From 2 clients on, both are saturated (two jobs at once); one client keeps
one worker busy on either side.

    python bench/saturation.py [--runs 5] [--levels 1,2,4,8,16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import (
    REPO,
    gateway_transcribe,
    in_process_model,
    model_transcribe,
    recordings,
    served,
    tempdir,
)

from speechgw.audio import read_wav

WORKERS = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--levels", default="1,2,4,8,16")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = in_process_model("tiny.en", workers=WORKERS, threads=1)

    def local(audio) -> str:
        return model_transcribe(model, audio)

    with tempdir() as work:
        pieces = [p.read_bytes() for p in recordings(Path(work))]
        audio = [read_wav(w)[0] for w in pieces]
        seconds = [len(a) / 16000 for a in audio]
        expected = [local(a) for a in audio]
        with served(REPO / "bench" / "tiny.en-x2.yaml") as url:
            gateway_transcribe(url, pieces[0])
            print(f"{len(pieces)} recordings, {sum(seconds):.1f} s of audio per pass")
            print(
                "clients | in-process audio s/s | gateway audio s/s | ratio | p95 latency "
                "| errors | texts differing"
            )
            for level in levels:
                jobs = list(range(len(pieces))) * max(1, -(-2 * level // len(pieces)))
                job_seconds = sum(seconds[j] for j in jobs)
                ratios, local_rates, remote_rates, latencies = [], [], [], []
                errors = differing = 0
                for _ in range(args.runs):
                    started = time.perf_counter()
                    with ThreadPoolExecutor(level) as pool:
                        list(pool.map(lambda j: local(audio[j]), jobs))
                    local_rates.append(job_seconds / (time.perf_counter() - started))
                    started = time.perf_counter()
                    with ThreadPoolExecutor(level) as pool:
                        results = list(pool.map(lambda j: gateway_transcribe(url, pieces[j]), jobs))
                    remote_rates.append(job_seconds / (time.perf_counter() - started))
                    latencies += [t for t, _ in results]
                    errors += sum(text is None for _, text in results)
                    differing += sum(
                        text is not None and text != expected[j]
                        for j, (_, text) in zip(jobs, results, strict=True)
                    )
                    ratios.append(remote_rates[-1] / local_rates[-1])
                    print(
                        f"  in-process {job_seconds / local_rates[-1]:.2f} s, gateway "
                        f"{job_seconds / remote_rates[-1]:.2f} s for {len(jobs)} jobs",
                        flush=True,
                    )
                p95 = statistics.quantiles(latencies, n=20)[18]
                print(
                    f"{level:7d} | {statistics.median(local_rates):20.1f} | "
                    f"{statistics.median(remote_rates):17.1f} | "
                    f"{statistics.median(ratios):5.3f} | {p95:9.2f} s | {errors} | {differing}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
