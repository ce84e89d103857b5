#!/usr/bin/env python3
"""Recordings in which nobody speaks, and what ``recording_no_speech_prob`` costs real speech.

The Whisper backend in-process (``segment_times: tokens``, the CPU default; language named),
each recording decoded once with the rule off (``recording_no_speech_prob: 1.0``, faster-whisper's
own rule alone), and the rule (:class:`~speechgw.backends.whisper_spoken.RecordingCheck` at
``--limit``, 0.5) applied to the segments that decode returned. The rule only filters: it
changes nothing in what Whisper decodes, so this is what the backend with the rule on returns
(``--live`` decodes the first table again with it on, to show that).

- made recordings without speech: digital silence of 1-45 s, a quiet room's hiss (-90 to -40
  dBFS), a click in silence, a room's low rumble, mains hum; in English and in Spanish (not
  with an English-only model), and in no named language; and the 13 sox signals of
  ``bench/non_speech.py`` (tones, music, noise, speech played backwards);
- the speech where Whisper is least sure it was spoken, each its own recording: 465 answers
  to a phone menu said alone (espeak-ng, 31 words, 5 voices, 3 speeds: the ``--ivr-words`` of
  ``bench/non_speech.py``) and ``--real-words`` words cut out of ../shared/audio's English
  recordings;
- ../shared/audio's recordings, and the 1949 interview changed six ways (quieter, noisy,
  reverberant: ``bench/long_stretches.py``): word errors with the rule off and on.

Each table counts the windows Whisper rated above the limit and how many the rule dropped.

``--cost``: Silero's time for one window in doubt.

    python bench/silent_recordings.py [--model base] [--limit 0.5] [--real-words 400] [--live]
    python bench/silent_recordings.py --cost
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from _common import SHARED_AUDIO, in_process_model, word_errors
from long_stretches import INTERVIEW, changed
from non_speech import heard_right, non_speech, real_words, words_alone
from speechgw.backends.whisper import WhisperBackend, WhisperOptions
from speechgw.backends.whisper_clips import listen
from speechgw.backends.whisper_spoken import RecordingCheck
from vad_conditions import load

from speechgw.jobs import Caller, JobSpec, Transcript

RATE = 16000


def made_silences() -> dict[str, np.ndarray]:
    """Recordings nobody speaks in, the same on every run."""
    rng = np.random.default_rng(0)
    made: dict[str, np.ndarray] = {}
    for seconds in (1, 3, 10, 30, 45):
        made[f"silence, {seconds} s"] = np.zeros(seconds * RATE, np.float32)
    for dbfs in (-90, -70, -60, -50, -40):
        made[f"hiss at {dbfs} dBFS, 12 s"] = rng.normal(0, 10 ** (dbfs / 20), 12 * RATE)
    click = np.zeros(12 * RATE)
    click[RATE : RATE + 160] = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(160) / RATE)
    made["a click in silence, 12 s"] = click
    rumble = np.cumsum(rng.normal(0, 1, 12 * RATE))
    rumble -= np.convolve(rumble, np.ones(400) / 400, mode="same")  # no drift below 40 Hz
    made["a room's rumble, 12 s"] = 0.05 * rumble / np.abs(rumble).max()
    hum = np.sin(2 * np.pi * 50 * np.arange(12 * RATE) / RATE)
    made["mains hum at -30 dBFS, 12 s"] = 0.03 * hum
    return {name: audio.astype(np.float32) for name, audio in made.items()}


async def decode(backend: WhisperBackend, audio: np.ndarray, language: str | None) -> Transcript:
    return await backend.transcribe(audio, JobSpec(language, "transcribe", "openai", Caller("b")))


def with_rule(transcript: Transcript, audio: np.ndarray, limit: float) -> tuple[str, int, int]:
    """(the text the rule leaves, windows rated above ``limit``, windows it dropped). Silero's
    hearing of the recording is counted, as the backend counts it (it heard the recording for
    its clips and times)."""
    check = RecordingCheck(limit, audio, listen(audio).probabilities)
    kept, doubted, dropped = [], set(), set()
    for segment in transcript.segments:
        raw = SimpleNamespace(
            no_speech_prob=segment.decoding.no_speech_prob, seek=segment.decoding.seek
        )
        if raw.no_speech_prob > limit:
            doubted.add(raw.seek)
        if check(raw):
            kept.append(segment.text)
        else:
            dropped.add(raw.seek)
    return " ".join(kept), len(doubted), len(dropped)


async def print_silences(backends: dict[str, WhisperBackend], limit: float, live: bool) -> None:
    print("| recording | language | off: text | on: text | rated above | dropped |")
    print("|---|---|---|---|---|---|")
    totals = [0, 0]
    with tempfile.TemporaryDirectory() as work:
        signals = made_silences() | non_speech(Path(work))
    english_only = backends["off"].options.model.endswith(".en")
    languages = ("en", None) if english_only else ("en", "es", None)
    for name, audio in signals.items():
        for language in languages:
            transcript = await decode(backends["off"], audio, language)
            text, doubted, dropped = with_rule(transcript, audio, limit)
            if live:
                text = (await decode(backends["on"], audio, language)).text
            totals[0] += len(transcript.text.split())
            totals[1] += len(text.split())
            print(
                f"| {name} | {language or 'none'} | {transcript.text[:60]!r} | {text[:60]!r} "
                f"| {doubted} | {dropped} |",
                flush=True,
            )
    print(f"| all | | {totals[0]} words | {totals[1]} words | | |")


async def print_words(
    backend: WhisperBackend, words: dict[str, tuple[str, np.ndarray]], limit: float, what: str
) -> None:
    """Words said alone, each its own recording: how many come back, and with the word."""
    counts = {"off": [0, 0], "on": [0, 0]}
    doubted = dropped = 0
    lost = []
    for name, (word, audio) in words.items():
        transcript = await decode(backend, audio, "en")
        text, rated, gone = with_rule(transcript, audio, limit)
        doubted, dropped = doubted + rated, dropped + gone
        for way, heard in (("off", transcript.text), ("on", text)):
            counts[way][0] += bool(heard.strip())
            counts[way][1] += heard_right(word, heard)
        if gone:
            lost.append(f"{name}: {transcript.text!r}")
    print(
        f"| {what} ({len(words)}) | {counts['off'][0]}, {counts['off'][1]} with the word "
        f"| {counts['on'][0]}, {counts['on'][1]} with the word | {doubted} | {dropped} |",
        flush=True,
    )
    for line in lost:
        print(f"  dropped: {line}")


async def print_recordings(backend: WhisperBackend, limit: float) -> None:
    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        rows = {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}
    interview = load(INTERVIEW, 600)
    recordings = [(name, load(name, 600)) for name in rows]
    recordings += [(f"{INTERVIEW} | {how}", audio) for how, audio in changed(interview)]
    print("\n| recording | errors, off | errors, on | rated above | dropped |")
    print("|---|---|---|---|---|")
    totals = [0, 0, 0]
    for name, audio in recordings:
        row = rows[name.split(" | ")[0]]
        language = None if "+" in row["language"] else row["language"]
        reference = row["reference_transcript"].replace(" || ", " ")
        transcript = await decode(backend, audio, language)
        text, doubted, dropped = with_rule(transcript, audio, limit)
        errors = [word_errors(reference, t)[0] for t in (transcript.text, text)]
        totals = [totals[0] + errors[0], totals[1] + errors[1], totals[2] + dropped]
        print(f"| {name} | {errors[0]} | {errors[1]} | {doubted} | {dropped} |", flush=True)
    print(f"| all | {totals[0]} | {totals[1]} | | {totals[2]} |")


def print_cost(runs: int = 7) -> None:
    """What the rule costs a window Whisper doubts, a minute of -60 dBFS hiss: Silero over its
    30 s (the recording's level found first), where Silero has not heard the recording
    (``skip_non_speech_seconds: null``, or ``vad_filter``); and counting what it heard for the
    recording's clips and times, where it has."""
    hiss = np.random.default_rng(0).normal(0, 0.001, 60 * RATE).astype(np.float32)
    doubted = SimpleNamespace(no_speech_prob=0.9, seek=0)
    RecordingCheck(0.5, hiss)(doubted)  # Silero's model loaded first
    heard = listen(hiss).probabilities
    for how, probabilities in (("heard by Silero", None), ("counted", heard)):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            RecordingCheck(0.5, hiss, probabilities)(doubted)
            times.append((time.perf_counter() - started) * 1000)
        print(f"a doubted 30 s window {how}: median {statistics.median(times):.3f} ms")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--limit", type=float, default=0.5, help="recording_no_speech_prob")
    parser.add_argument("--real-words", type=int, default=400)
    parser.add_argument("--live", action="store_true", help="the first table with the rule on")
    parser.add_argument("--cost", action="store_true", help="Silero's time per doubted window")
    args = parser.parse_args()
    if args.cost:
        print_cost()
        return 0
    backends = {}
    for way, limit in (("off", 1.0), ("on", args.limit)):
        options = WhisperOptions(model=args.model, cpu_threads=2, recording_no_speech_prob=limit)
        backends[way] = WhisperBackend(way, options)
        await backends[way].start()
    await print_silences(backends, args.limit, args.live)
    print("\n| words said alone | off: replies | on: replies | rated above | dropped |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        await print_words(backends["off"], words_alone(Path(work), ivr=True), args.limit, "ivr")
    if args.real_words:
        model = in_process_model(args.model, threads=2)
        cut = real_words(model, args.real_words)
        del model
        await print_words(backends["off"], cut, args.limit, "cut from recordings")
    await print_recordings(backends["off"], args.limit)
    for backend in backends.values():
        await backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
