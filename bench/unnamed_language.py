#!/usr/bin/env python3
"""A recording sent with no language named: how its words come out, and one that changes
language half way.

Every recording of ``../shared/audio`` but Chinese (no spaces: a word error rate says nothing)
and the two-channel one, plus ``faster-whisper/multilingual.mp3`` (the MIT licence read in
English, then in German, 60 s; its reference is whisper-tiny's output, errors and all, so
only large differences there mean anything), and the 1949 interview (the hardest recording)
changed four ways (10 dB quieter, under a -50 dBFS hiss, in a room of RT60 0.3 s, through an
8 kHz line), decoded whole by the bundled base model with no language given:

- ``gateway``: ``POST /v1/audio/transcriptions`` through the official ``openai`` SDK, without
  ``language`` (bench/base.yaml: base, one worker, one thread), as OpenAI's clients call
  (the interview's changed versions are sent too, as 16 kHz WAV);
- in-process, the gateway's model class
  (:class:`~speechgw.backends.whisper_languages.WindowLanguageModel`): ``each window, if
  sure`` as the gateway decodes; ``first window`` as it did before (the language detected
  once, faster-whisper's way); ``each window, no earlier text`` (``multilingual=True,
  condition_on_previous_text=False``: tried, not kept). Where a window falls back to
  sampling (a temperature over 0), its words differ from run to run whatever the way:
  CTranslate2's sampling is not seeded from here.

Word errors per group of recordings, and the seconds each way took.

    python bench/unnamed_language.py
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
from _common import REPO, SHARED_AUDIO, served, wav_bytes, word_errors
from openai import OpenAI
from scipy.signal import resample_poly
from speechgw.backends.whisper_languages import WindowLanguageModel
from speechgw.backends.whisper_models import resolve_model
from stream_accuracy import in_a_room, recordings
from vad_conditions import load

from speechgw.audio import to_pcm16
from speechgw.tuning import limit_blas_threads, retain_freed_memory

MIXED = "faster-whisper/multilingual.mp3"
INTERVIEW = "transcription-benchmark/real-world-fountain-hughes-interview.mp3"
WAYS = ["gateway", "each window, if sure", "first window", "each window, no earlier text"]


def changed(samples: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """The interview as a worse microphone or line would have carried it."""
    noise = np.random.default_rng(1).normal(0, 1, len(samples)).astype(np.float32)
    yield "10 dB quieter", samples * np.float32(10 ** (-10 / 20))
    yield "-50 dBFS hiss", samples + noise * np.float32(10 ** (-50 / 20))
    yield "room 0.3 s", in_a_room(samples, 0.3)
    yield "8 kHz line", resample_poly(resample_poly(samples, 1, 2), 2, 1).astype(np.float32)


def group(name: str, language: str) -> str:
    if name == MIXED:
        return "English, then German (multilingual.mp3)"
    if "|" in name:
        return "the 1949 interview, changed (4)"
    if language != "en":
        return "es, de, fr, it, pt (read)"
    if name.startswith("transcription-benchmark/"):
        return "English conversations (4, 407 s)"
    return "English read speech (11)"


def main() -> int:
    rows = recordings(multilingual=True)
    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        rows += [row for row in csv.DictReader(f, delimiter="\t") if row["file"] == MIXED]
    audio = {row["file"]: load(row["file"], 600) for row in rows}
    interview = next(row for row in rows if row["file"] == INTERVIEW)
    for how, samples in changed(audio[INTERVIEW]):
        name = f"{INTERVIEW} | {how}"
        audio[name] = np.clip(samples, -1.0, 1.0)
        rows.append({**interview, "file": name})
    errors: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    seconds: dict[str, float] = defaultdict(float)

    def count(way: str, row: dict[str, str], text: str) -> None:
        wrong, words = word_errors(row["reference_transcript"].replace(" || ", " "), text)
        tally = errors[group(row["file"], row["language"])][way]
        tally[0] += wrong
        tally[1] += words

    with served(REPO / "bench" / "base.yaml") as url:
        client = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="none")
        for row in rows:
            name = row["file"]
            data = (
                wav_bytes(to_pcm16(audio[name]).tobytes())
                if "|" in name
                else (SHARED_AUDIO / name).read_bytes()
            )
            started = time.perf_counter()
            text = client.audio.transcriptions.create(
                model="whisper-1", file=(name.split(" |")[0], data)
            ).text
            seconds["gateway"] += time.perf_counter() - started
            count("gateway", row, text)
        client.close()
    retain_freed_memory(1024)
    limit_blas_threads(1)
    model = WindowLanguageModel(
        resolve_model("base"), device="cpu", compute_type="int8", cpu_threads=1
    )
    for way in WAYS[1:]:
        options = (
            {"multilingual": True, "condition_on_previous_text": False}
            if way == "each window, no earlier text"
            else {}
        )
        for row in rows:
            started = time.perf_counter()
            segments, _ = model.transcribe(audio[row["file"]], beam_size=5, **options)
            hearing = model.hearing_each_window() if way == "each window, if sure" else None
            with hearing or contextlib.nullcontext():
                text = " ".join(s.text for s in segments)
            seconds[way] += time.perf_counter() - started
            count(way, row, text)
    print(f"| recordings | words | {' | '.join(WAYS)} |")
    print(f"|---|---|{'---|' * len(WAYS)}")
    for name, by_way in errors.items():
        cells = " | ".join(str(by_way[way][0]) for way in WAYS)
        print(f"| {name} | {by_way['gateway'][1]} | {cells} |")
    print(f"| seconds, all | | {' | '.join(f'{seconds[way]:.0f}' for way in WAYS)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
