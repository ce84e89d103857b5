#!/usr/bin/env python3
"""Long stretches without speech in a recording decoded whole: left out, or decoded.

The Whisper backend in-process (base, ``segment_times: tokens`` as on the CPU, language
named), each recording decoded with ``skip_non_speech_seconds`` at ``--skip`` (the default 3)
and at null (every second decoded):

- jfk (11 s) after 5, 15 or 25 s of silence, a -50 dBFS hiss or a 50 Hz hum; followed by 10
  or 25 s of it; and twice, 3, 5, 8 or 40 s of it apart. Word errors against jfk's words (once
  or twice), and how far each jfk's first segment starts from where jfk starts;
- ../shared/audio's real recordings as recorded and the 1949 interview (the hardest) changed
  six ways: the seconds left out, and word errors where any is left out (a recording with
  nothing left out is decoded exactly as before: the same call).

``--silero-defaults``: the second table only, with Silero at its own settings (a speech
probability of 0.5, the recording as it is), which is why the backend listens more leniently.
``--cost``: what finding the speech of a 29-minute recording (white noise) costs: seconds and
peak traced memory, heard 5 minutes at a time (as the backend does) and whole, and cut into
windows at its pauses (``segment_times: pauses``, ``sentences``) as the backend does.

``--edges 1.0,0.5``: how early the first segment starts after a short lead (under the
skip), with each ``EDGE_SECONDS``, and the real recordings some edge clips.

    python bench/long_stretches.py [--skip 3] [--model base] [--silero-defaults | --cost]
    python bench/long_stretches.py --edges 1.0,0.5
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
import tracemalloc

import numpy as np
from _common import SHARED_AUDIO, word_errors
from speechgw.backends import whisper_clips
from speechgw.backends.whisper import WhisperBackend, WhisperOptions
from speechgw.backends.whisper_batching import speech_windows
from speechgw.backends.whisper_clips import speech_clips
from stream_accuracy import in_a_room
from vad_conditions import load

from speechgw.jobs import Caller, JobSpec

JFK = "faster-whisper/jfk.flac"
INTERVIEW = "transcription-benchmark/real-world-fountain-hughes-interview.mp3"
RATE = 16000


def filler(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "hiss":
        return rng.normal(0, 0.003, n).astype(np.float32)  # about -50 dBFS
    return (0.05 * np.sin(2 * np.pi * 50 * np.arange(n) / RATE)).astype(np.float32)


def made(jfk: np.ndarray) -> list[tuple[str, np.ndarray, list[float]]]:
    """(name, audio, where each jfk starts)."""
    rng = np.random.default_rng(0)
    cases = []
    for kind in ("silence", "hiss", "hum"):
        for lead in (5, 15, 25):
            audio = np.concatenate([filler(kind, lead, rng), jfk])
            cases.append((f"{lead} s {kind}, jfk", audio, [float(lead)]))
        for trail in (10, 25):
            audio = np.concatenate([jfk, filler(kind, trail, rng)])
            cases.append((f"jfk, {trail} s {kind}", audio, [0.0]))
        for gap in (3, 5, 8, 40):
            audio = np.concatenate([jfk, filler(kind, gap, rng), jfk])
            cases.append((f"jfk, {gap} s {kind}, jfk", audio, [0.0, len(jfk) / RATE + gap]))
    return cases


def changed(samples: np.ndarray) -> list[tuple[str, np.ndarray]]:
    noise = np.random.default_rng(1).normal(0, 1, len(samples)).astype(np.float32)
    versions = [
        ("30 dB quieter", samples * np.float32(10 ** (-30 / 20))),
        ("40 dB quieter", samples * np.float32(10 ** (-40 / 20))),
        ("-25 dBFS noise", samples + noise * np.float32(10 ** (-25 / 20))),
        ("-15 dBFS noise", samples + noise * np.float32(10 ** (-15 / 20))),
        ("room 0.3 s", in_a_room(samples, 0.3)),
        ("room 0.8 s", in_a_room(samples, 0.8)),
    ]
    return [(name, np.clip(a, -1.0, 1.0).astype(np.float32)) for name, a in versions]


async def decode(
    backend: WhisperBackend, audio: np.ndarray, language: str | None = "en"
) -> tuple[str, list]:
    spec = JobSpec(language, "transcribe", "openai", Caller("bench"))
    transcript = await backend.transcribe(audio, spec)
    return transcript.text, list(transcript.segments)


def print_cost(skip: float) -> None:
    """Seconds and peak traced memory of :func:`speech_clips` on 29 minutes of white noise,
    in blocks (as the backend hears) and whole."""
    noise = np.random.default_rng(0).normal(0, 0.05, 1740 * RATE).astype(np.float32)
    speech_clips(noise[:RATE], skip)  # Silero's model loaded first
    shipped = whisper_clips.BLOCK_SECONDS
    for how, block in (("in blocks", shipped), ("whole", 1e9)):
        whisper_clips.BLOCK_SECONDS = block
        tracemalloc.start()
        started = time.perf_counter()
        speech_clips(noise, skip)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"29 minutes heard {how}: {seconds:.2f} s, peak {peak / 1e6:.0f} MB")
    # and cut into windows at its pauses (segment_times pauses or sentences), as shipped
    whisper_clips.BLOCK_SECONDS = shipped
    tracemalloc.start()
    started = time.perf_counter()
    speech_windows(noise)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"29 minutes cut into windows: {seconds:.2f} s, peak {peak / 1e6:.0f} MB")


SENTENCES = (
    "The meeting starts at nine tomorrow morning.",
    "Please send the report to the office before Friday.",
)
"""``--edges``: said by espeak-ng, with jfk, after a short lead of silence or hiss."""


def onset(audio: np.ndarray) -> float:
    """Where Silero hears the speech begin (no padding), in seconds."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(audio, VadOptions(speech_pad_ms=0), sampling_rate=RATE)
    return found[0]["start"] / RATE if found else 0.0


def spoken(text: str) -> np.ndarray:
    import subprocess
    import tempfile
    from pathlib import Path

    from faster_whisper import decode_audio

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "said.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        return decode_audio(str(path))


async def print_edges(edges: list[float], model: str, rows: dict[str, dict[str, str]]) -> None:
    """How early the first segment starts after a short lead (silence or a -50 dBFS hiss),
    and word errors, with each ``EDGE_SECONDS``; then the real recordings that some edge
    clips: their errors."""
    options = WhisperOptions(model=model, cpu_threads=2)
    backend = WhisperBackend("edges", options)
    await backend.start()
    said = [(text, spoken(text)) for text in SENTENCES]
    said.append((rows[JFK]["reference_transcript"], load(JFK, 600)))
    rng = np.random.default_rng(0)
    print("| lead | " + " | ".join(f"edge {e} s: early by, errors" for e in edges) + " |")
    print("|---|" + "---|" * len(edges))
    totals = {edge: [0.0, 0] for edge in edges}
    for kind in ("silence", "hiss"):
        for lead in (0.3, 0.6, 0.9, 1.2, 1.5, 2.0):
            cells = {edge: [0.0, 0] for edge in edges}
            for text, audio in said:
                whole = np.concatenate([filler(kind, lead, rng), audio, filler(kind, 1.5, rng)])
                starts = lead + onset(audio)
                for edge in edges:
                    whisper_clips.EDGE_SECONDS = edge
                    heard, segments = await decode(backend, whole)
                    early = starts - segments[0].start if segments else 0.0
                    cells[edge][0] = max(cells[edge][0], early)
                    cells[edge][1] += word_errors(text, heard)[0]
            for edge, (early, errors) in cells.items():
                totals[edge][0] = max(totals[edge][0], early)
                totals[edge][1] += errors
            row = " | ".join(f"{early:.2f} s, {errors}" for early, errors in cells.values())
            print(f"| {lead} s of {kind} | {row} |", flush=True)
    summary = " | ".join(f"{early:.2f} s, {errors}" for early, errors in totals.values())
    print(f"| all: most early, errors | {summary} |")
    print("\n| recording | " + " | ".join(f"edge {e} s: clips, errors" for e in edges) + " |")
    print("|---|" + "---|" * len(edges))
    for name, row in rows.items():
        audio = load(name, 600)
        clips = {}
        for edge in edges:
            whisper_clips.EDGE_SECONDS = edge
            clips[edge] = speech_clips(audio, 3.0)
        if not any(clips.values()):
            continue
        reference = row["reference_transcript"].replace(" || ", " ")
        language = None if "+" in row["language"] else row["language"]
        cells = []
        for edge in edges:
            whisper_clips.EDGE_SECONDS = edge
            errors = word_errors(reference, (await decode(backend, audio, language))[0])[0]
            shown = [round(c, 2) for c in clips[edge]] if clips[edge] else "whole"
            cells.append(f"{shown}, {errors}")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    await backend.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", type=float, default=3.0, help="skip_non_speech_seconds")
    parser.add_argument("--model", default="base")
    parser.add_argument("--silero-defaults", action="store_true", help="threshold 0.5, no gain")
    parser.add_argument("--cost", action="store_true", help="Silero's time and memory")
    parser.add_argument("--edges", help="EDGE_SECONDS to compare, e.g. 1.0,0.5")
    args = parser.parse_args()
    if args.edges:
        with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
            rows = {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}
        await print_edges([float(e) for e in args.edges.split(",")], args.model, rows)
        return 0
    if args.cost:
        print_cost(args.skip)
        return 0
    if args.silero_defaults:
        whisper_clips.SPEECH_THRESHOLD, whisper_clips.PEAK = 0.5, 0.0  # 0: no gain
    backends = {}
    for skip in (args.skip, None):
        options = WhisperOptions(model=args.model, cpu_threads=2, skip_non_speech_seconds=skip)
        backends[skip] = WhisperBackend(f"skip {skip}", options)
        await backends[skip].start()
    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        rows = {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}
    if not args.silero_defaults:
        await print_made(backends, rows, args.skip)
    await print_recordings(backends, rows, args.skip)
    for backend in backends.values():
        await backend.close()
    return 0


async def print_made(backends: dict, rows: dict[str, dict[str, str]], skip: float) -> None:
    """The first table: jfk with stretches of silence, hiss or hum, left out and decoded."""
    jfk = load(JFK, 600)
    said = rows[JFK]["reference_transcript"]
    totals = {way: [0, 0.0] for way in backends}
    print(f"| recording | {skip} s: errors, start off by | null: errors, start off by |")
    print("|---|---|---|")
    for name, audio, starts in made(jfk):
        cells = []
        for way, backend in backends.items():
            text, segments = await decode(backend, audio)
            wrong, _ = word_errors(" ".join([said] * len(starts)), text)
            firsts = [s.start for s in segments if s.text.strip().lower().startswith("and so")]
            off = max(
                (min((abs(f - start) for f in firsts), default=99.0) for start in starts),
                default=0.0,
            )
            totals[way][0] += wrong
            totals[way][1] = max(totals[way][1], off)
            cells.append(f"{wrong}, {off:.1f} s")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    summary = " | ".join(f"{errors}, {off:.1f} s" for errors, off in totals.values())
    print(f"| all: errors, most off | {summary} |")


async def print_recordings(backends: dict, rows: dict[str, dict[str, str]], skip: float) -> None:
    """The second table: what is left out of real recordings, and what that costs."""
    print("\n| recording | seconds | left out | errors, left out | errors, null |")
    print("|---|---|---|---|---|")
    interview = load(INTERVIEW, 600)
    recordings = [(name, load(name, 600)) for name in rows if name != INTERVIEW]
    recordings += [(f"{INTERVIEW} | {how}", a) for how, a in [("as recorded", interview)]]
    recordings += [(f"{INTERVIEW} | {how}", a) for how, a in changed(interview)]
    for name, audio in recordings:
        clips = speech_clips(audio, skip)
        seconds = len(audio) / RATE
        if clips is None:
            print(f"| {name} | {seconds:.1f} | 0 | (the same call) | |", flush=True)
            continue
        kept = sum(min(clips[i + 1], seconds) - clips[i] for i in range(0, len(clips), 2))
        reference = rows[name.split(" | ")[0]]["reference_transcript"].replace(" || ", " ")
        errors = [word_errors(reference, (await decode(b, audio))[0])[0] for b in backends.values()]
        print(f"| {name} | {seconds:.1f} | {seconds - kept:.1f} | {errors[0]} | {errors[1]} |")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
