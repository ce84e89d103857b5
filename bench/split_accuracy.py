#!/usr/bin/env python3
"""``batch_split_recordings``: what splitting long recordings at pauses costs in words and
gains in time, on the recordings of ../shared/audio longer than 30 s (English, tiny.en).

Each recording is decoded by the Whisper backend in this process, twice: unbatched and whole
(faster-whisper's sequential windows, each conditioned on the text before), and batched with
``batch_split_recordings`` (windows cut at pauses, decoded at once in shared batches). Word
error rate against the reference, and wall time.

    python bench/split_accuracy.py [--model tiny.en] [--batch-size 8] [--cpu-threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time

from _common import SHARED_AUDIO, word_errors
from speechgw.backends.whisper import WhisperBackend, WhisperOptions

from speechgw.audio import to_16k_mono
from speechgw.jobs import Caller, JobSpec
from speechgw.media import decode_media


async def decode_all(options: WhisperOptions, clips: list) -> list[tuple[str, float]]:
    backend = WhisperBackend("whisper", options)
    await backend.start()
    spec = JobSpec("en", "transcribe", "batch", Caller("bench"))
    out = []
    try:
        for audio in clips:
            started = time.perf_counter()
            transcript = await backend.transcribe(audio, spec)
            out.append((transcript.text, time.perf_counter() - started))
    finally:
        await backend.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cpu-threads", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["language"] == "en" and float(row["duration_s"]) > 30:
                rows.append(row)
    clips = []
    for row in rows:
        samples, rate = decode_media((SHARED_AUDIO / row["file"]).read_bytes(), 3600)
        clips.append(to_16k_mono(samples, rate))
    base = {"model": args.model, "cpu_threads": args.cpu_threads}
    whole = asyncio.run(decode_all(WhisperOptions(**base, batch_size=1), clips))
    split = asyncio.run(
        decode_all(
            WhisperOptions(**base, batch_size=args.batch_size, batch_split_recordings=True),
            clips,
        )
    )
    totals = {"whole": [0, 0, 0.0], "split": [0, 0, 0.0]}
    print(f"{'recording':<60} {'whole WER':>9} {'s':>6} {'split WER':>9} {'s':>6}")
    for row, w, s in zip(rows, whole, split, strict=True):
        cells = []
        for name, (text, seconds) in (("whole", w), ("split", s)):
            errors, length = word_errors(row["reference_transcript"], text)
            totals[name][0] += errors
            totals[name][1] += length
            totals[name][2] += seconds
            cells.append(f"{errors / length:>9.3f} {seconds:>6.1f}")
        print(f"{row['file']:<60} {' '.join(cells)}")
    cells = [f"{t[0] / t[1]:>9.3f} {t[2]:>6.1f}" for t in totals.values()]
    print(f"{'all (' + str(totals['whole'][1]) + ' words)':<60} {' '.join(cells)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
