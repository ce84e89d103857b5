#!/usr/bin/env python3
"""A recording sent with no language named: how its words come out, and one that changes
language half way.

Every recording of ``../shared/audio`` but Chinese (no spaces: a word error rate says nothing)
and the two-channel one, plus ``faster-whisper/multilingual.mp3`` (the MIT licence read in
English, then in German, 60 s; its reference is whisper-tiny's output, errors and all, so
only large differences there mean anything), and the 1949 interview (the hardest recording)
changed four ways (10 dB quieter, under a -50 dBFS hiss, in a room of RT60 0.3 s, through an
8 kHz line), and jfk joined to each read sentence in another language, both ways round (the
change inside the first window), decoded whole by the bundled base model with no language
given:

- ``gateway``: ``POST /v1/audio/transcriptions`` through the official ``openai`` SDK, without
  ``language`` (bench/base.yaml: base, one worker, one thread), as OpenAI's clients call
  (the recordings made here are sent as 16 kHz WAV);
- in-process, the gateway's model class
  (:class:`~speechgw.backends.whisper_languages.WindowLanguageModel`): ``each window, if
  sure, decoded again where it changes`` as the gateway decodes; ``each window, if sure, whole`` as
  it decoded in session 29 (a window heard less surely not looked into); ``first window`` as
  it did before that (the language detected once, faster-whisper's way); ``each window, no
  earlier text`` (``multilingual=True, condition_on_previous_text=False``: tried, not kept).
  Where a window falls back to sampling (a temperature over 0), its words differ from run to
  run whatever the way: CTranslate2's sampling is not seeded from here.

Word errors per group of recordings, and the seconds each way took. ``--detections``
instead prints, for every recording, the language each 30 s window was heard as and how sure
Whisper was (in-process, as the gateway decodes) and the windows decoded again up to a
change of language, then the windows heard as another language than the recording's, which
:data:`~speechgw.backends.whisper_languages.SWITCH_PROBABILITY` keeps apart from real
changes.

``--cost`` times the conversations and the interview's five versions in-process, with windows
looked into and not (:data:`~speechgw.backends.whisper_languages.MIXED_BELOW` or 0), twice
each, and counts the extra encoder passes.

``--latency`` times short requests through the gateway (bench/base.yaml, or the first of
``--gateways``): each English read recording (1.5-11 s) sent ``--rounds`` times with
``language="en"`` and without, in turn; the median seconds of each and their ratio. It is
how the first window's second encoder pass was found and measured (BENCHMARKS.md, "The
first window encoded once").

``--gateways A.yaml,B.yaml`` runs the ``gateway`` way once per config (named by its file) and
no in-process way: e.g. ``bench/base.yaml,bench/base-sentences.yaml`` for what the GPU's
``segment_times: sentences`` (text alone per window cut at pauses) does to a change of
language.

    python bench/unnamed_language.py [--detections | --cost | --latency] [--gateways CONFIG,...]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from _common import REPO, SHARED_AUDIO, served, wav_bytes, word_errors
from openai import OpenAI
from scipy.signal import resample_poly
from speechgw.backends.whisper_languages import MIXED_BELOW, WindowLanguageModel
from speechgw.backends.whisper_models import resolve_model
from stream_accuracy import in_a_room, recordings
from vad_conditions import load

from speechgw.audio import to_pcm16
from speechgw.jobs import SAMPLE_RATE
from speechgw.tuning import limit_blas_threads, retain_freed_memory

MIXED = "faster-whisper/multilingual.mp3"
INTERVIEW = "transcription-benchmark/real-world-fountain-hughes-interview.mp3"
JFK = "faster-whisper/jfk.flac"
WAYS = [
    "gateway",
    "each window, if sure, decoded again where it changes",
    "each window, if sure, whole",
    "first window",
    "each window, no earlier text",
]


def changed(samples: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """The interview as a worse microphone or line would have carried it."""
    noise = np.random.default_rng(1).normal(0, 1, len(samples)).astype(np.float32)
    yield "10 dB quieter", samples * np.float32(10 ** (-10 / 20))
    yield "-50 dBFS hiss", samples + noise * np.float32(10 ** (-50 / 20))
    yield "room 0.3 s", in_a_room(samples, 0.3)
    yield "8 kHz line", resample_poly(resample_poly(samples, 1, 2), 2, 1).astype(np.float32)


def base_model(kind: type[WindowLanguageModel] = WindowLanguageModel) -> WindowLanguageModel:
    """The bundled base as bench/base.yaml's server loads it: int8, one thread."""
    retain_freed_memory(1024)
    limit_blas_threads(1)
    return kind(resolve_model("base"), device="cpu", compute_type="int8", cpu_threads=1)


def joined(rows: list[dict[str, str]], audio: dict[str, np.ndarray]) -> list[dict[str, str]]:
    """jfk (11 s) and each read sentence of another language (4-9 s), 0.3 s apart, in both
    orders: a change of language inside Whisper's first window."""
    english = next(row for row in rows if row["file"] == JFK)
    pause = np.zeros(SAMPLE_RATE * 3 // 10, dtype=np.float32)
    added = []
    for other in [row for row in rows if row["language"] not in ("en", "en+de")]:
        for first, then in ((english, other), (other, english)):
            name = f"{first['file']} + {then['file']}"
            audio[name] = np.concatenate([audio[first["file"]], pause, audio[then["file"]]])
            reference = f"{first['reference_transcript']} {then['reference_transcript']}"
            language = f"{first['language']}+{then['language']}"
            added.append({"file": name, "language": language, "reference_transcript": reference})
    return added


def group(name: str, language: str) -> str:
    if name == MIXED:
        return "English, then German (multilingual.mp3)"
    if " + " in name:
        if language.startswith("en"):
            return "English (jfk), then es, de, fr, fr, it or pt (6, joined)"
        return "es, de, fr, fr, it or pt, then English (jfk) (6, joined)"
    if "|" in name:
        return "the 1949 interview, changed (4)"
    if language != "en":
        return "es, de, fr, it, pt (read)"
    if name.startswith("transcription-benchmark/"):
        return "English conversations (4, 407 s)"
    return "English read speech (11)"


class HeardWindows(logging.Handler):
    """Each window's language and probability, from the model's debug line about it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.windows: list[tuple[str, float]] = []
        self.changes: list[str] = []  # windows decoded again up to a change of language

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.args, tuple)
        if record.msg.startswith("window heard as"):
            self.windows.append(record.args[:2])  # type: ignore[arg-type]
        elif record.msg.startswith("the language changes"):
            self.changes.append(f"{record.args[1]} until {record.args[0]:.1f} s")


def print_detections(
    model: WindowLanguageModel, rows: list[dict[str, str]], audio: dict[str, np.ndarray]
) -> None:
    """Every window's language as the gateway hears it, recording by recording."""
    heard = HeardWindows()
    source = logging.getLogger(WindowLanguageModel.__module__)
    source.addHandler(heard)
    source.setLevel(logging.DEBUG)
    others: list[str] = []
    for row in rows:
        heard.windows.clear()
        heard.changes.clear()
        segments, info = model.transcribe(audio[row["file"]], beam_size=5)
        starts: list[float] = []  # the first segment's start after each window's detection
        with model.hearing_each_window():
            for segment in segments:
                if len(starts) < len(heard.windows):
                    starts += [segment.start] * (len(heard.windows) - len(starts))
        cells = [f"{language} {p:.2f}" for language, p in heard.windows]
        cells += [f"decoded again as {change}" for change in heard.changes]
        print(
            f"{row['file']} ({row['language']}, first window {info.language}): {', '.join(cells)}"
        )
        for (language, p), start in zip(heard.windows, starts, strict=False):
            if language != row["language"].split("+")[0]:
                others.append(f"{p:.2f} {language} from {start:.0f} s of {row['file']}")
    print("\nwindows heard as another language than the recording's first (>= 0.8 switches):")
    for line in sorted(others, reverse=True):
        print("  " + line)


class CountedPasses(WindowLanguageModel):
    """The gateway's model class, counting the encoder passes spent hearing stretches of a
    window on their own (beyond faster-whisper's one per window)."""

    passes = 0

    def _languages(self, start: int, end: int) -> list[tuple[str, float]]:
        self.passes += 1
        return super()._languages(start, end)


def print_cost(rows: list[dict[str, str]], audio: dict[str, np.ndarray]) -> None:
    """In-process seconds for the conversations and the interview's five versions (the
    recordings with windows under MIXED_BELOW), windows looked into and not, twice each."""
    model = base_model(CountedPasses)
    assert isinstance(model, CountedPasses)
    names = [row["file"] for row in rows if row["file"].startswith("transcription-benchmark/")]
    for below in (MIXED_BELOW, 0.0, MIXED_BELOW, 0.0):
        model.mixed_below, model.passes = below, 0
        started = time.perf_counter()
        for name in names:
            segments, _ = model.transcribe(audio[name], beam_size=5)
            with model.hearing_each_window():
                for _ in segments:
                    pass
        seconds = time.perf_counter() - started
        print(f"looked into below {below}: {seconds:.1f} s, {model.passes} extra encoder passes")


def gateway(
    way: str,
    config: Path,
    rows: list[dict[str, str]],
    audio: dict[str, np.ndarray],
    count: Callable[[str, dict[str, str], str], None],
    seconds: dict[str, float],
) -> None:
    """Every recording through ``speechgw serve --config config``'s OpenAI API, no language."""
    with served(config) as url:
        client = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="none")
        for row in rows:
            name = row["file"]
            made = "|" in name or " + " in name  # changed or joined here: sent as WAV
            data = (
                wav_bytes(to_pcm16(audio[name]).tobytes())
                if made
                else (SHARED_AUDIO / name).read_bytes()
            )
            started = time.perf_counter()
            text = client.audio.transcriptions.create(
                model="whisper-1", file=("made.wav" if made else name, data)
            ).text
            seconds[way] += time.perf_counter() - started
            count(way, row, text)
        client.close()


def print_latency(config: Path, rows: list[dict[str, str]], rounds: int) -> None:
    """Each English read recording through the gateway's OpenAI API, named and not, in
    turn; the median latency of each way."""
    rows = [r for r in rows if r["language"] == "en" and "|" not in r["file"]]
    rows = [r for r in rows if not r["file"].startswith("transcription-benchmark/")]
    latencies: dict[str, list[float]] = {"named": [], "unnamed": []}
    with served(config) as url:
        client = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="none")
        for turn in range(rounds):
            for row in rows:
                data = (SHARED_AUDIO / row["file"]).read_bytes()
                ways = ["named", "unnamed"] if turn % 2 == 0 else ["unnamed", "named"]
                for way in ways:
                    language = {"language": "en"} if way == "named" else {}
                    started = time.perf_counter()
                    client.audio.transcriptions.create(
                        model="whisper-1", file=(row["file"], data), **language
                    )
                    latencies[way].append(time.perf_counter() - started)
        client.close()
    named, unnamed = (statistics.median(latencies[w]) for w in ("named", "unnamed"))
    print(f"{len(rows)} recordings x {rounds} rounds ({config.name})")
    print(f"median latency: language named {named:.3f} s, not named {unnamed:.3f} s")
    print(f"not named / named: {unnamed / named:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detections", action="store_true", help="each window's language")
    parser.add_argument("--cost", action="store_true", help="the time windows looked into cost")
    parser.add_argument("--gateways", default="", help="gateway configs only: A.yaml,B.yaml")
    parser.add_argument("--latency", action="store_true", help="short requests, named or not")
    parser.add_argument("--rounds", type=int, default=3, help="--latency: each recording's")
    args = parser.parse_args()
    configs = [REPO / "bench" / "base.yaml"]
    ways = list(WAYS)
    if args.gateways:
        configs = [REPO / c if not c.startswith("/") else Path(c) for c in args.gateways.split(",")]
        ways = [f"gateway, {c.stem}" for c in configs]
    rows = recordings(multilingual=True)
    if args.latency:
        print_latency(configs[0], rows, args.rounds)
        return 0
    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        rows += [row for row in csv.DictReader(f, delimiter="\t") if row["file"] == MIXED]
    audio = {row["file"]: load(row["file"], 600) for row in rows}
    interview = next(row for row in rows if row["file"] == INTERVIEW)
    for how, samples in changed(audio[INTERVIEW]):
        name = f"{INTERVIEW} | {how}"
        audio[name] = np.clip(samples, -1.0, 1.0)
        rows.append({**interview, "file": name})
    if args.cost:
        print_cost(rows, audio)
        return 0
    rows += joined(rows, audio)
    if args.detections:
        print_detections(base_model(), rows, audio)
        return 0
    errors: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    seconds: dict[str, float] = defaultdict(float)

    def count(way: str, row: dict[str, str], text: str) -> None:
        wrong, words = word_errors(row["reference_transcript"].replace(" || ", " "), text)
        tally = errors[group(row["file"], row["language"])][way]
        tally[0] += wrong
        tally[1] += words

    for way, config in zip(ways, configs, strict=False):
        gateway(way, config, rows, audio, count, seconds)
    model = base_model()
    for way in ways[1:] if not args.gateways else []:
        options = (
            {"multilingual": True, "condition_on_previous_text": False}
            if way == "each window, no earlier text"
            else {}
        )
        model.mixed_below = MIXED_BELOW if way.endswith("decoded again where it changes") else 0.0
        for row in rows:
            started = time.perf_counter()
            segments, _ = model.transcribe(audio[row["file"]], beam_size=5, **options)
            hearing = model.hearing_each_window() if way.startswith("each window, if") else None
            with hearing or contextlib.nullcontext():
                text = " ".join(s.text for s in segments)
            seconds[way] += time.perf_counter() - started
            count(way, row, text)
    print(f"| recordings | words | {' | '.join(ways)} |")
    print(f"|---|---|{'---|' * len(ways)}")
    for name, by_way in errors.items():
        cells = " | ".join(str(by_way[way][0]) for way in ways)
        print(f"| {name} | {by_way[ways[0]][1]} | {cells} |")
    print(f"| seconds, all | | {' | '.join(f'{seconds[way]:.0f}' for way in ways)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
