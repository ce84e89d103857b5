#!/usr/bin/env python3
"""Where the streaming segmenter (webrtcvad) stops finding speech, or stops finding pauses.

Runs the gateway's :class:`~speechgw.segmenter.Segmenter` with the default streaming settings
on real speech from ``../shared/audio`` (no server, no model): first the recordings made
quieter, 0 to -50 dB, counting the utterances and the seconds of audio they keep; then
``faster-whisper/jfk.flac`` (11 s, pauses between its sentences) between 3 s and 5 s of
silence, under white and brown noise (integrated white noise, high-passed: fans, traffic) at
-60 to -25 dBFS, listing the utterances' lengths. One utterance of the whole length means the
pauses were heard as speech: its final would come only at ``max_utterance_seconds``.

    python bench/vad_conditions.py
"""

from __future__ import annotations

import numpy as np
from _common import SHARED_AUDIO

from speechgw.audio import to_pcm16
from speechgw.config import StreamingConfig
from speechgw.media import decode_media
from speechgw.segmenter import Segmenter

RECORDINGS = [
    "faster-whisper/jfk.flac",
    "librispeech-Speech2Text/1089-134686-0000.flac",
    "transcription-benchmark/real-world-nasa-podcast-science-in-space_part1.mp3",
]


def load(name: str, seconds: float = 60.0) -> np.ndarray:
    samples, rate = decode_media((SHARED_AUDIO / name).read_bytes(), 3600)
    assert rate == 16000
    return samples[: int(seconds * 16000)].astype(np.float32)


def utterances(samples: np.ndarray) -> list[float]:
    """The seconds of each utterance the segmenter cuts from ``samples`` fed in 100 ms chunks."""
    segmenter = Segmenter(StreamingConfig())
    pcm = to_pcm16(samples)
    found = []
    for start in range(0, len(pcm), 1600):
        found += segmenter.feed(pcm[start : start + 1600])
    found += segmenter.flush()
    return [len(u) / 16000 for u in found]


def dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(samples**2))))


def main() -> int:
    print("| recording (first 60 s) | level (RMS dBFS) | utterances | seconds kept |")
    print("|---|---|---|---|")
    for name in RECORDINGS:
        audio = load(name)
        for gain_db in (0, -10, -20, -30, -40, -50):
            quieter = audio * np.float32(10 ** (gain_db / 20))
            cut = utterances(quieter)
            print(
                f"| {name.split('/')[-1]} | {dbfs(quieter):.0f} | {len(cut)} | "
                f"{sum(cut):.1f} of {len(audio) / 16000:.1f} |"
            )
    jfk = load(RECORDINGS[0])
    padded = np.concatenate([np.zeros(3 * 16000, np.float32), jfk, np.zeros(5 * 16000, np.float32)])
    rng = np.random.default_rng(0)
    white = rng.normal(0, 1, len(padded)).astype(np.float32)
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # high-pass below ~40 Hz
    brown = (brown / np.std(brown)).astype(np.float32)
    print(f"\njfk.flac at {dbfs(jfk):.0f} dBFS, with 3 s of silence before and 5 s after:\n")
    print("| noise (RMS dBFS) | white: utterances (s) | brown: utterances (s) |")
    print("|---|---|---|")
    for noise_db in (None, -60, -50, -45, -40, -35, -30, -25):
        row = []
        for noise in (white, brown):
            noisy = (
                padded if noise_db is None else padded + noise * np.float32(10 ** (noise_db / 20))
            )
            row.append(", ".join(f"{s:.1f}" for s in utterances(noisy)))
        print(f"| {'none' if noise_db is None else noise_db} | {row[0]} | {row[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
