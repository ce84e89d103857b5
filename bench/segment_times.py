#!/usr/bin/env python3
"""Where a recording's segments and words start and end, against where their speech does.

Sentences said by espeak-ng (two voices), each known to start and end where its samples
first and last pass -40 dBFS, joined into recordings with pauses of 0.3-4 s between them
(and a lead of 0.3-2 s before the first) of silence, a -50 dBFS hiss or a quiet 50 Hz hum;
decoded by the Whisper backend in-process (base, language named, word timestamps asked),
once as Whisper times them and once timed by the speech Silero hears
(``backends/whisper_vad.py``), for each ``segment_times``. How far before (-) or after (+)
its sentence's speech each segment that starts (ends) a sentence starts (ends), and each
sentence's first (last) word.

    python bench/segment_times.py [--model base] [--times tokens,pauses,sentences]
    python bench/segment_times.py --leads 0.1,0.15,0.2      # START_LEAD and END_LAG candidates
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import numpy as np
from _common import REPO  # noqa: F401  (puts the tests' helpers on the path)
from speechgw.backends import whisper_vad
from speechgw.backends.whisper import WhisperBackend, WhisperOptions

from speechgw.jobs import Caller, JobSpec
from tests import speech

RATE = 16000
VOICES = ("en", "en+f3")
LEADS = (0.3, 0.8, 2.0)
GAPS = (0.3, 0.7, 1.5, 4.0)
"""Pauses between the sentences: under Silero's 2 s (one clip), and over
``skip_non_speech_seconds`` (3 s: a clip of their own)."""
NEAR = 1.0
"""A segment that starts (ends) this near a sentence's speech starts (ends) that sentence; one
further from every sentence's start (end) starts (ends) inside a sentence."""
Made = tuple[np.ndarray, list[tuple[float, float]]]


def said(workdir: Path) -> list[np.ndarray]:
    """Each sentence of tests/speech.py in each voice, from its first sound to its last."""
    out = []
    for voice in VOICES:
        for name, text in speech.SENTENCES.items():
            samples = speech.samples_16k(speech.speak(text, workdir / f"{name}-{voice}.wav", voice))
            loud = np.flatnonzero(np.abs(samples) > 0.01)
            out.append(samples[loud[0] : loud[-1] + 1])
    return out


def filler(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "hiss":
        return rng.normal(0, 0.003, n).astype(np.float32)
    return (0.01 * np.sin(2 * np.pi * 50 * np.arange(n) / RATE)).astype(np.float32)


def recordings(sentences: list[np.ndarray]) -> list[Made]:
    """Recordings of six sentences each, and where each sentence's speech starts and ends."""
    rng = np.random.default_rng(0)
    made = []
    for kind in ("silence", "hiss", "hum"):
        for lead in LEADS:
            for gap in GAPS:
                picked = rng.choice(len(sentences), 6, replace=False)
                parts, spans, at = [filler(kind, lead, rng)], [], lead
                for index in picked:
                    samples = sentences[index]
                    spans.append((at, at + len(samples) / RATE))
                    parts += [samples, filler(kind, gap, rng)]
                    at += len(samples) / RATE + gap
                made.append((np.concatenate(parts), spans))
    return made


def off(times: list[float], truths: list[float]) -> tuple[list[float], int]:
    """Each time less the truth nearest to it, where that is within :data:`NEAR`; and how
    many times are further than that from every truth."""
    near = [t - min(truths, key=lambda truth: abs(t - truth)) for t in times]
    return [d for d in near if abs(d) <= NEAR], sum(abs(d) > NEAR for d in near)


async def offsets(backend: WhisperBackend, made: list[Made]) -> dict[str, list[float]]:
    """Segment starts (ends) near a sentence's start (end), less it; each sentence's first
    (last) word's start (end), less its speech's start (end)."""
    spec = JobSpec("en", "transcribe", "openai", Caller("bench"), word_timestamps=True)
    found: dict[str, list[float]] = {
        "segment starts": [],
        "first words": [],
        "segment ends": [],
        "last words": [],
    }
    for audio, spans in made:
        segments = (await backend.transcribe(audio, spec)).segments
        words = [word for segment in segments for word in segment.words]
        found["segment starts"] += off([s.start for s in segments], [a for a, _ in spans])[0]
        found["segment ends"] += off([s.end for s in segments], [b for _, b in spans])[0]
        for start, end in spans:
            # a sentence's first word: the first to end in its speech (one timed from the
            # pause before still ends in it); its last: the last to start in it
            first = next((w for w in words if w.end > start + 0.05), None)
            last = next((w for w in reversed(words) if w.start < end - 0.05), None)
            if first is not None and last is not None:
                found["first words"].append(first.start - start)
                found["last words"].append(last.end - end)
    return found


def summary(values: list[float]) -> str:
    v = np.array(values)
    return f"{len(v)} | {np.mean(np.abs(v)):.3f} | {np.percentile(v, 5):+.2f} | " + (
        f"{np.percentile(v, 95):+.2f}"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--times", default="tokens,pauses,sentences", help="segment_times")
    parser.add_argument(
        "--leads", default=str(whisper_vad.START_LEAD), help="START_LEAD and END_LAG"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        made = recordings(said(Path(work)))
    print(f"{len(made)} recordings, {sum(len(s) for _, s in made)} sentences; seconds off:")
    print("| segment_times | timed | what | count | mean abs | p5 | p95 |")
    print("|---|---|---|---|---|---|---|")
    threshold = whisper_vad.SPEECH_THRESHOLD
    for times in args.times.split(","):
        options = WhisperOptions(model=args.model, cpu_threads=2, segment_times=times)
        backend = WhisperBackend(times, options)
        await backend.start()
        ways: list[tuple[str, float | None]] = [("as Whisper times them", None)]
        ways += [(f"by speech, {lead} s", float(lead)) for lead in args.leads.split(",")]
        for way, lead in ways:
            whisper_vad.SPEECH_THRESHOLD = threshold if lead is not None else 2.0  # none heard
            whisper_vad.START_LEAD = whisper_vad.END_LAG = lead or 0.0
            for what, values in (await offsets(backend, made)).items():
                print(f"| {times} | {way} | {what} | {summary(values)} |", flush=True)
        await backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
