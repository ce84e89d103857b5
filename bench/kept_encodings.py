#!/usr/bin/env python3
"""Word-timed recordings batched: the same segments as unbatched, and the encoder once per window.

With ``segment_times: sentences`` (the CUDA default) every window of a recording is used twice
by the model, decoded (``generate``) and then its words timed (``align``); a multilingual model
that is not told the language also hears each window (``detect_language``) first. The batched
backend keeps such a job's encoder outputs (``BatchedWhisperModel.encodings_kept``). This runs
the Whisper backend in-process on the same recordings, ``--jobs`` at once, unbatched and batched,
and prints the wall time of each and whether every recording came back with the same
segments: texts, and start and end times to the hundredth of a second.

    .venv/bin/python bench/kept_encodings.py [--model tiny.en] [--batch-size 8] [--rounds 2]
    .venv/bin/python bench/kept_encodings.py --model base --no-language   # heard per window
    .venv/bin/python bench/kept_encodings.py --segment-times pauses       # windows used once

Recordings: the English ones of ../shared/audio joined into 10-30 s pieces (espeak-ng
sentences without it); ``--audio DIR``: ``piece*.wav`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from _common import recordings


def _samples(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV file's samples as Whisper takes them (no PyAV needed, so
    that it runs in the GPU recipe's environment too)."""
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


async def _run(
    model: str, batch_size: int, audio: list, language: str | None, segment_times: str
) -> tuple:
    from speechgw.backends.whisper import WhisperBackend, WhisperOptions

    from speechgw.jobs import Caller, JobSpec

    options = WhisperOptions(
        model=model, cpu_threads=2, batch_size=batch_size, segment_times=segment_times
    )
    backend = WhisperBackend("w", options)
    await backend.start()
    try:
        spec = JobSpec(language, "transcribe", "openai", Caller("bench"))
        start = time.perf_counter()
        done = await asyncio.gather(*(backend.transcribe(a, spec) for a in audio))
        wall = time.perf_counter() - start
    finally:
        await backend.close()
    return wall, [
        [(s.text, round(s.start, 2), round(s.end, 2)) for s in transcript.segments]
        for transcript in done
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--audio", type=Path, help="folder of piece*.wav")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=16, help="the recordings in turn, at once")
    parser.add_argument("--segment-times", default="sentences", choices=["pauses", "sentences"])
    parser.add_argument(
        "--no-language", action="store_true", help="name no language: each window is heard"
    )
    args = parser.parse_args()

    paths = sorted(args.audio.glob("piece*.wav")) if args.audio else None
    if paths is None:
        paths = recordings(Path(tempfile.mkdtemp()))
    pieces = [_samples(path) for path in paths]
    audio = [pieces[i % len(pieces)] for i in range(args.jobs)]
    language = None if args.no_language else "en"
    seconds = sum(len(a) for a in audio) / 16000
    named = f"language {language}" if language else "no language named"
    print(f"{len(audio)} jobs of {len(pieces)} recordings, {seconds:.1f} s, {args.model}, {named}")
    unbatched = None
    for r in range(args.rounds):
        for batch_size in (1, args.batch_size):
            wall, segments = asyncio.run(
                _run(args.model, batch_size, audio, language, args.segment_times)
            )
            if batch_size == 1:
                unbatched = unbatched or segments
            same = sum(mine == theirs for mine, theirs in zip(segments, unbatched, strict=True))
            print(
                f"round {r + 1}, batch_size {batch_size}: {wall:.2f} s "
                f"({seconds / wall:.1f} audio s/s), {same} of {len(audio)} recordings "
                "with the unbatched segments (the first unbatched run's)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
