#!/usr/bin/env python3
"""What decoding in a worker process costs: time per file, and memory, against FFmpeg in the
caller's own process.

For each file (jfk.flac, the first NASA podcast part and the 1949 interview of ../shared/audio,
and the 29-minute mp3 of ``bench/long_upload.py``; espeak-ng sentences without that folder):
the median of ``--rounds`` decodes by :func:`speechgw.ffmpeg.decode` in this process, and by
a :class:`speechgw.decoder_pool.DecoderPool` of one process (its start not counted, but
measured first: its first file's time less the next's), the two ways taken in turn. Then, for
the 29-minute mp3, each way in a fresh interpreter: the caller's peak RSS growth, and the
decoder process's RSS idle before and after the file.

    python bench/decoder_pool.py [--rounds 5] [--minutes 29]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import NASA_PODCAST, REPO, SHARED_AUDIO, tempdir
from long_upload import long_recording

_MEMORY = """
import json, sys, time
from speechgw import ffmpeg
from speechgw.decoder_pool import DecoderPool

def rss(pid, field="VmRSS"):
    text = open(f"/proc/{pid}/status").read()
    return int(text.split(field + ":")[1].split()[0]) / 1024

data = open(sys.argv[2], "rb").read()
pool = DecoderPool(size=1)
pool.decode(open(sys.argv[3], "rb").read(), 600)  # started and ready
(pid,) = pool.pids()[0]
idle = rss(pid)
before = rss("self", "VmHWM")  # not ru_maxrss: exec keeps the parent's
started = time.perf_counter()
samples = ffmpeg.decode(data, 3600) if sys.argv[1] == "in-process" else pool.decode(data, 3600)
seconds = time.perf_counter() - started
grown = rss("self", "VmHWM") - before
time.sleep(1)  # the decoder frees its memory after it has answered
print(json.dumps({"seconds": seconds, "caller_peak_growth": grown, "decoder_idle": idle,
                  "decoder_after": rss(pid), "audio": len(samples) / 16000}))
"""


def files(work: Path, minutes: float) -> dict[str, Path]:
    found = {
        "jfk.flac": SHARED_AUDIO / "faster-whisper" / "jfk.flac",
        "NASA part 1 mp3": NASA_PODCAST[0],
        "1949 interview mp3": SHARED_AUDIO
        / "transcription-benchmark"
        / "real-world-fountain-hughes-interview.mp3",
    }
    chosen = {name: path for name, path in found.items() if path.exists()}
    chosen[f"{minutes:g}-minute mp3"] = long_recording(work, minutes)
    return chosen


def times(paths: dict[str, Path], rounds: int) -> None:
    from speechgw import ffmpeg
    from speechgw.decoder_pool import DecoderPool

    pool = DecoderPool(size=1)
    try:
        first = next(iter(paths.values())).read_bytes()
        started = time.perf_counter()
        pool.decode(first, 3600)  # the process starts, loads NumPy and PyAV, says ready
        cold = time.perf_counter() - started
        started = time.perf_counter()
        pool.decode(first, 3600)
        warm = time.perf_counter() - started
        print(f"a new decoder process: ready in {cold - warm:.2f} s (its first file less the next)")
        print()
        print("| file | audio | in-process | in a decoder process | difference |")
        print("|---|---|---|---|---|")
        for name, path in paths.items():
            data = path.read_bytes()
            pool.decode(data, 3600)  # the process is up, and the file in the page cache
            audio = len(ffmpeg.decode(data, 3600)) / 16000
            taken: dict[object, list[float]] = {ffmpeg.decode: [], pool.decode: []}
            for _ in range(rounds):  # the two ways in turn: this VM's speed drifts
                for decode, seconds in taken.items():
                    started = time.perf_counter()
                    decode(data, 3600)
                    seconds.append(time.perf_counter() - started)
            inside, pooled = (statistics.median(t) * 1000 for t in taken.values())
            print(
                f"| {name} | {audio:,.0f} s | {inside:,.1f} ms | {pooled:,.1f} ms "
                f"| {pooled - inside:+,.1f} ms |"
            )
    finally:
        pool.close()


def memory(long_file: Path, short_file: Path) -> None:
    print("\n| the long mp3 | time | caller's peak RSS growth | decoder idle, before -> after |")
    print("|---|---|---|---|")
    for mode in ("in-process", "decoder process"):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY, mode, str(long_file), str(short_file)],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout
        got = json.loads(out)
        decoder = (
            f"{got['decoder_idle']:.0f} -> {got['decoder_after']:.0f} MiB"
            if mode == "decoder process"
            else "(not used)"
        )
        print(
            f"| {mode} | {got['seconds']:.2f} s | {got['caller_peak_growth']:,.0f} MiB "
            f"| {decoder} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=29.0)
    args = parser.parse_args()
    with tempdir() as work:
        paths = files(Path(work), args.minutes)
        times(paths, args.rounds)
        long_file = paths[f"{args.minutes:g}-minute mp3"]
        memory(long_file, next(iter(paths.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
