#!/usr/bin/env python3
"""Recordings decoded in windows cut at pauses: what it costs in words and gains in time, on the
English recordings of ../shared/audio (longer than 30 s unless ``--min-seconds`` says less).

Each recording is decoded by the Whisper backend in this process, four ways: unbatched and
whole (faster-whisper's sequential windows, each conditioned on the text before, timestamp
tokens between segments); batched with ``batch_split_recordings`` (windows cut at pauses,
decoded at once in shared batches, timestamp tokens as before); batched with ``segment_times:
pauses`` (the same windows, each decoded as text alone and returned as one segment: the setting
under which batching pays on a GPU); and with ``segment_times: sentences`` (those windows cut
into sentences by the times of their words). Word error rate against the reference, wall time,
segments.

    python bench/split_accuracy.py [--model tiny.en] [--batch-size 8] [--cpu-threads 2]
        [--min-seconds 30] [--sides whole,split,pauses,sentences] [--quieter 0]

``--quieter DB``: every recording made that many decibels quieter first (a speaker far from
the microphone, a recorder's gain set low), to see that each way still hears it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time

import numpy as np
from _common import SHARED_AUDIO, word_errors
from speechgw.backends.whisper import WhisperBackend, WhisperOptions

from speechgw.audio import to_16k_mono
from speechgw.jobs import Caller, JobSpec
from speechgw.media import decode_media


async def decode_all(options: WhisperOptions, clips: list) -> list[tuple[str, float, int]]:
    """Each clip's text, decode time and number of segments."""
    backend = WhisperBackend("whisper", options)
    await backend.start()
    spec = JobSpec("en", "transcribe", "batch", Caller("bench"))
    out = []
    try:
        for audio in clips:
            started = time.perf_counter()
            transcript = await backend.transcribe(audio, spec)
            out.append((transcript.text, time.perf_counter() - started, len(transcript.segments)))
    finally:
        await backend.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=30.0)
    parser.add_argument("--sides", default="whole,split,pauses,sentences")
    parser.add_argument("--quieter", type=float, default=0.0, help="decibels")
    args = parser.parse_args()
    rows = []
    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["language"] == "en" and float(row["duration_s"]) > args.min_seconds:
                rows.append(row)
    clips = []
    for row in rows:
        samples, rate = decode_media((SHARED_AUDIO / row["file"]).read_bytes(), 3600)
        clips.append(to_16k_mono(samples, rate) * np.float32(10 ** (-args.quieter / 20)))
    base = {"model": args.model, "cpu_threads": args.cpu_threads}
    batched = {**base, "batch_size": args.batch_size}
    ways = {
        "whole": WhisperOptions(**base, batch_size=1),
        "split": WhisperOptions(**batched, batch_split_recordings=True),
        "pauses": WhisperOptions(**batched, segment_times="pauses"),
        "sentences": WhisperOptions(**batched, segment_times="sentences"),
    }
    sides = {name: ways[name] for name in args.sides.split(",")}
    results = {name: asyncio.run(decode_all(options, clips)) for name, options in sides.items()}
    totals = {name: [0, 0, 0.0, 0] for name in sides}
    header = " ".join(f"{name + ' WER':>11} {'s':>5} {'segs':>4}" for name in sides)
    print(f"{'recording':<60} {header}")
    for n, row in enumerate(rows):
        cells = []
        for name in sides:
            text, seconds, segments = results[name][n]
            errors, length = word_errors(row["reference_transcript"], text)
            total = totals[name]
            total[0] += errors
            total[1] += length
            total[2] += seconds
            total[3] += segments
            cells.append(f"{errors / length:>11.3f} {seconds:>5.1f} {segments:>4}")
        print(f"{row['file']:<60} {' '.join(cells)}")
    cells = [f"{t[0] / t[1]:>11.3f} {t[2]:>5.1f} {t[3]:>4}" for t in totals.values()]
    words = next(iter(totals.values()))[1]
    print(f"{'all (' + str(words) + ' words)':<60} {' '.join(cells)}")
    errors = ", ".join(f"{name} {t[0]}" for name, t in totals.items())
    print(f"errors: {errors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
