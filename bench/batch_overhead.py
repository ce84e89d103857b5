#!/usr/bin/env python3
"""Batch overhead: gateway end-to-end latency against in-process faster-whisper, side by side.

For each 10-30 s recording (the English files of ../shared/audio, concatenated into pieces of
10-30 s; espeak-ng speech without it) and each run, the same audio goes once through
``WhisperModel.transcribe`` in this process and once through a ``speechgw serve`` process over
the batch protocol, with the same model (tiny.en), options (beam 5, int8, 1 thread),
allocator settings and language, alternating which goes first. Reported: the median ratio
gateway / in-process, and whether the texts match.

    python bench/batch_overhead.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from _common import (
    REPO,
    gateway_transcribe,
    in_process_model,
    model_transcribe,
    recordings,
    served,
    tempdir,
)
from faster_whisper import WhisperModel

from speechgw.audio import read_wav


def in_process(model: WhisperModel, audio: np.ndarray) -> tuple[float, str]:
    started = time.perf_counter()
    text = model_transcribe(model, audio)
    return time.perf_counter() - started, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    model = in_process_model("tiny.en", workers=1, threads=1)  # as bench/tiny.en.yaml
    ratios: list[float] = []
    same_text = total = 0
    with tempdir() as work:
        pieces = recordings(Path(work))
        with served(REPO / "bench" / "tiny.en.yaml") as url:
            gateway_transcribe(url, pieces[0].read_bytes())  # warm both up
            in_process(model, read_wav(pieces[0].read_bytes())[0])
            for run in range(args.runs):
                for i, piece in enumerate(pieces):
                    wav = piece.read_bytes()
                    audio = read_wav(wav)[0]
                    if (run + i) % 2:
                        local, local_text = in_process(model, audio)
                        remote, remote_text = gateway_transcribe(url, wav)
                    else:
                        remote, remote_text = gateway_transcribe(url, wav)
                        local, local_text = in_process(model, audio)
                    ratios.append(remote / local)
                    total += 1
                    same_text += remote_text == local_text
                    print(
                        f"run {run + 1} piece {i} ({len(audio) / 16000:.1f} s): in-process "
                        f"{local:.3f} s, gateway {remote:.3f} s, ratio {remote / local:.3f}",
                        flush=True,
                    )
    print(
        f"median ratio gateway/in-process over {total}: {statistics.median(ratios):.3f}; "
        f"identical texts: {same_text}/{total}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
