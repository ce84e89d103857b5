#!/usr/bin/env python3
"""Pauses that reach ``end_padding_ms``: how many end their utterance, how many the speaker
talks on through (the early finals a stream would start there and then discard), and how many
of the latter a later start would have spared. The gateway's segmenter alone, fed 30 ms at a
time, over the conversational recordings of ../shared/audio (transcription-benchmark/).

    python bench/pause_outcomes.py [--starts 300,360,420]
"""

from __future__ import annotations

import argparse

import av
import numpy as np
from _common import SHARED_AUDIO

from speechgw.config import StreamingConfig
from speechgw.segmenter import Segmenter


def pcm16(path: str) -> np.ndarray:
    """The file as 16 kHz mono int16, decoded by PyAV (as faster-whisper decodes files)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    with av.open(path) as container:
        frames = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for out in resampler.resample(frame)
        ]
    return np.concatenate(frames)


def pauses(audio: np.ndarray, config: StreamingConfig) -> list[tuple[int, bool]]:
    """Each pause that reached the end padding: its length in ms when it ended, and whether
    it ended the utterance (False: speech went on)."""
    segmenter = Segmenter(config)
    step = 16000 * config.frame_ms // 1000
    found: list[tuple[int, bool]] = []
    pause_ms = 0  # of the pause now past the end padding; 0: none
    for i in range(0, len(audio), step):
        closed = segmenter.feed(audio[i : i + step])
        if pause_ms and closed:
            found.append((pause_ms + config.frame_ms, True))
            pause_ms = 0
        elif segmenter.closing_length() is not None:
            pause_ms = pause_ms + config.frame_ms if pause_ms else config.end_padding_ms
        elif pause_ms:
            found.append((pause_ms, False))
            pause_ms = 0
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", default="300,360,420", help="ms into the pause")
    args = parser.parse_args()
    config = StreamingConfig()
    found = [
        p
        for path in sorted((SHARED_AUDIO / "transcription-benchmark").glob("*.mp3"))
        for p in pauses(pcm16(str(path)), config)
    ]
    ended = sum(closed for _, closed in found)
    print(
        f"pauses that reached {config.end_padding_ms} ms: {len(found)}; ended the utterance "
        f"{ended}, speech went on {len(found) - ended}"
    )
    for start in (int(s) for s in args.starts.split(",")):
        wasted = sum(1 for ms, closed in found if not closed and ms >= start)
        print(f"early finals started {start} ms into the pause: {wasted} discarded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
