#!/usr/bin/env python3
"""Where a stream utterance's decode time goes, in-process (BENCHMARKS.md, "Streams the shipped
default carries").

The gateway's segmenter cuts the first 60 s of three English recordings of ../shared/audio
(jfk, a LibriSpeech sentence, NASA part 1) into utterances as a stream would; each is decoded
with faster-whisper as the gateway decodes a stream's utterance (English, no conditioning on
its own first pass), with beam 5 and beam 1, for each ``cpu_threads`` setting; and the
encoder alone is timed on one utterance (it always encodes a 30 s window).

    python bench/utterance_decode.py [--model base] [--threads 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import segmented
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from speechgw.backends.whisper_models import resolve_model
from vad_conditions import load

RECORDINGS = [
    "faster-whisper/jfk.flac",
    "librispeech-Speech2Text/1089-134686-0000.flac",
    "transcription-benchmark/real-world-nasa-podcast-science-in-space_part1.mp3",
]
SHORT_SECONDS = 8.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", default="0,1,2")
    args = parser.parse_args()
    utterances = [u for name in RECORDINGS for u in segmented(load(name, 60))]
    lengths = [len(u) / 16000 for u in utterances]
    print(f"{len(utterances)} utterances of {', '.join(f'{s:.1f}' for s in lengths)} s")
    for threads in (int(t) for t in args.threads.split(",")):
        model = WhisperModel(
            resolve_model(args.model), device="cpu", compute_type="int8", cpu_threads=threads
        )
        for beam in (5, 1):
            model.transcribe(utterances[0], language="en", beam_size=beam)  # warm up
            seconds = []
            for utterance in utterances:
                started = time.perf_counter()
                segments, _ = model.transcribe(
                    utterance, language="en", beam_size=beam, condition_on_previous_text=False
                )
                list(segments)
                seconds.append(time.perf_counter() - started)
            short = [s for s, n in zip(seconds, lengths, strict=True) if n < SHORT_SECONDS]
            print(
                f"cpu_threads {threads}, beam {beam}: mean {statistics.mean(seconds):.2f} s, "
                f"under {SHORT_SECONDS:.0f} s of audio {statistics.mean(short):.2f} s, "
                f"longest {max(seconds):.2f} s"
            )
        features = pad_or_trim(model.feature_extractor(utterances[0]))
        started = time.perf_counter()
        for _ in range(3):
            model.encode(features)
        print(f"  the encoder alone: {(time.perf_counter() - started) / 3:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
