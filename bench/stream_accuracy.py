#!/usr/bin/env python3
"""Streaming accuracy: streamed words against whole-file words, per recording, side by side.

For each English recording of ../shared/audio (read speech and the conversational recordings of
transcription-benchmark/; each decoded to 16 kHz mono by PyAV, as faster-whisper decodes
files): the word error rate of in-process ``WhisperModel.transcribe`` on the whole file (beam
5, its defaults: the best the model does with all the context), and of the same audio streamed
through ``speechgw serve`` over ``/api/core/google/asr`` in 100 ms chunks, unpaced and at 1x
real time (PARALLEL recordings at once, each at real-time pace), with the server's default
``streaming`` settings, ``--context-chars N``, or any ``--streaming KEY=VALUE``. With
``--multilingual``, the other languages too, with the base model; with ``--english-model
base``, English on the shipped default model instead of tiny.en. With ``--rate 8000``, a
telephone line's band: each recording resampled to 8 kHz, streamed with ``rate: 8000``, and the
whole file decoded from the same 8 kHz audio (as the gateway upsamples it). With
``--microphone dc=0.01`` or ``hum=50@-45``, a cheap microphone's DC offset or mains hum added
to every recording (whole file and stream alike); ``room=0.6``, a room's reverberation (RT60 in
seconds) as a microphone a few metres away hears it. Reported: a table per
recording, totals, and totals without the 1949 interview (its old disc recording dominates any
average; ../shared/audio's README), and how many replies only repeated the replies just before
them (a context prompt carried over).

    python bench/stream_accuracy.py [--context-chars N] [--parallel 3] [--multilingual]
                                    [--english-model base] [--print-replies TEXT] [--rate 8000]
                                    [--microphone dc=FRACTION|hum=HZ@DBFS|room=RT60 ...]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from _common import (
    REPO,
    SHARED_AUDIO,
    in_process_model,
    normalise,
    served,
    settings,
    tempdir,
    word_errors,
)
from scipy.signal import fftconvolve, resample_poly
from websockets.sync.client import connect

from speechgw.audio import to_16k_mono, to_pcm16

OLD_DISC = "fountain-hughes"


def stream(url: str, pcm: bytes, language: str, pace: float, rate: int = 16000) -> list[str]:
    """The replies to ``pcm`` (LINEAR16 at ``rate``) streamed in 100 ms chunks at ``pace`` x
    real time (0: unpaced)."""
    replies: list[str] = []
    # unpaced, pings would wait behind the audio: none (tests.streaming_client.open_stream)
    with connect(
        url + "/api/core/google/asr", max_size=None, compression=None, ping_interval=None
    ) as ws:
        ws.recv(timeout=30)

        def read() -> None:
            try:
                for message in ws:
                    reply = json.loads(message)
                    if "asr_reply" in reply:
                        replies.append(reply["asr_reply"])
            except Exception:
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        started = time.monotonic()
        step = rate // 10 * 2
        for i in range(0, len(pcm), step):
            if pace:
                delay = started + i / (rate * 2) / pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            message = {"audio": base64.b64encode(pcm[i : i + step]).decode()}
            if i == 0:
                message |= {"rate": rate, "language_code": language}
            ws.send(json.dumps(message))
        ws.send(json.dumps({"type": "end"}))
        reader.join(timeout=900)
    return replies


def repeats(replies: list[str]) -> int:
    """Replies of two words or more that only repeat words of the replies just before them
    (the last 200 characters): text a context prompt carried over instead of new speech."""
    count = 0
    for i, reply in enumerate(replies):
        words = " ".join(normalise(reply))
        before = " ".join(normalise(" ".join(replies[:i])[-200:]))
        if len(words.split()) >= 2 and f" {words} " in f" {before} ":
            count += 1
    return count


def recordings(multilingual: bool) -> list[dict[str, str]]:
    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        every = list(csv.DictReader(f, delimiter="\t"))
    keep = []
    for row in every:
        if "stereo_diarization" in row["file"] or "multilingual" in row["file"]:
            continue  # two sentences on two channels; a model's output as reference
        if row["language"] == "zh":
            continue  # no spaces between words: a word error rate says nothing there
        if row["language"] == "en" or multilingual:
            keep.append(row)
    return keep


def server_config(
    base: Path, streaming: dict[str, object], work: Path, whisper: dict[str, object] | None = None
) -> Path:
    """``base`` with ``streaming`` settings over the defaults, and ``whisper`` settings over
    its whisper backend's."""
    if not streaming and not whisper:
        return base
    document = yaml.safe_load(base.read_text())
    document["streaming"] = streaming
    document["backends"]["whisper"].update(whisper or {})
    out = work / f"{base.stem}-{len(list(work.iterdir()))}.yaml"
    out.write_text(yaml.safe_dump(document))
    return out


def with_microphone(samples: np.ndarray, faults: list[str]) -> np.ndarray:
    """``samples`` (16 kHz) as a cheap microphone would have caught them: ``dc=0.01`` adds a DC
    offset of 1 % of full scale, ``hum=50@-45`` a 50 Hz sine at -45 dBFS rms."""
    out = samples.astype(np.float32)
    for fault in faults:
        kind, _, value = fault.partition("=")
        if kind == "dc":
            out = out + np.float32(float(value))
        elif kind == "hum":
            hz, _, dbfs = value.partition("@")
            t = np.arange(len(out), dtype=np.float64) / 16000
            amplitude = np.sqrt(2) * 10 ** (float(dbfs) / 20)
            out = out + (amplitude * np.sin(2 * np.pi * float(hz) * t)).astype(np.float32)
        elif kind == "room":
            out = in_a_room(out, float(value))
        else:
            raise SystemExit(f"--microphone {fault}: dc=FRACTION, hum=HZ@DBFS or room=RT60")
    return np.clip(out, -1.0, 1.0)


def in_a_room(samples: np.ndarray, rt60: float) -> np.ndarray:
    """``samples`` as a microphone a few metres away hears them in a room whose reverberation
    falls 60 dB in ``rt60`` seconds: the direct sound plus a tail of exponentially decaying
    noise (a seeded synthetic impulse response) holding as much energy as the direct sound,
    as at about the critical distance; the level of the loudest sample is kept."""
    rng = np.random.default_rng(60)
    t = np.arange(int(rt60 * 16000)) / 16000
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    tail[: int(0.005 * 16000)] = 0.0  # the first reflections arrive after 5 ms
    response = tail / np.sqrt(np.sum(tail**2))
    response[0] = 1.0
    wet = fftconvolve(samples.astype(np.float64), response)[: len(samples)]
    peak = np.max(np.abs(samples)) or 1.0
    return (wet * (peak / (np.max(np.abs(wet)) or 1.0))).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context-chars", type=int, default=None)
    parser.add_argument(
        "--streaming", action="append", default=[], metavar="KEY=VALUE",
        help="a streaming setting of the server (repeatable), e.g. fragment_speech_ms=1500",
    )  # fmt: skip
    parser.add_argument(
        "--whisper", action="append", default=[], metavar="KEY=VALUE",
        help="a setting of the server's whisper backend (repeatable), e.g. prompt_tokens=32",
    )  # fmt: skip
    parser.add_argument("--parallel", type=int, default=3, help="streams at once at 1x")
    parser.add_argument("--multilingual", action="store_true")
    parser.add_argument(
        "--english-model", choices=("tiny.en", "base"), default="tiny.en",
        help="the model for the English recordings (base: the shipped default)",
    )  # fmt: skip
    parser.add_argument(
        "--print-replies", metavar="TEXT", default=None,
        help="print the unpaced replies, one a line, of the recordings whose path holds TEXT",
    )  # fmt: skip
    parser.add_argument("--no-paced", action="store_true", help="skip the 1x pass")
    parser.add_argument(
        "--rate", type=int, default=16000,
        help="stream (and decode the whole file) at this rate: 8000 is a telephone line's",
    )  # fmt: skip
    parser.add_argument(
        "--microphone", action="append", default=[], metavar="dc=FRACTION|hum=HZ@DBFS|room=RT60",
        help="add a cheap microphone's DC offset (of full scale), mains hum (a sine at HZ, "
        "DBFS rms) or a room's reverberation (RT60 s) to every recording, for both the whole "
        "file and the stream (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    if not (SHARED_AUDIO / "MANIFEST.tsv").exists():
        print("../shared/audio is absent: no real speech to score")
        return 1
    from faster_whisper import decode_audio

    sets = [("en", args.english_model, REPO / "bench" / f"{args.english_model}.yaml")]
    if args.multilingual:
        sets.append(("other", "base", REPO / "bench" / "base.yaml"))
    paths = ["whole file", "stream unpaced"] + ([] if args.no_paced else ["stream 1x"])
    with tempdir() as work:
        for which, model_name, base in sets:
            rows = [
                r
                for r in recordings(args.multilingual)
                if (r["language"] == "en") == (which == "en")
            ]
            audio = {r["file"]: decode_audio(str(SHARED_AUDIO / r["file"])) for r in rows}
            audio = {f: with_microphone(a, args.microphone) for f, a in audio.items()}
            sent = audio  # what the stream sends, at args.rate
            if args.rate != 16000:
                sent = {
                    f: resample_poly(a, args.rate, 16000).astype(np.float32)
                    for f, a in audio.items()
                }
                audio = {f: to_16k_mono(a, args.rate) for f, a in sent.items()}
            model = in_process_model(model_name, workers=1, threads=1)  # as the bench configs
            texts: dict[str, dict[str, str]] = {r["file"]: {} for r in rows}
            for r in rows:
                segments, _ = model.transcribe(
                    audio[r["file"]], language=r["language"], beam_size=5
                )
                texts[r["file"]]["whole file"] = "".join(s.text for s in segments)
            del model
            streaming = settings(args.streaming)
            if args.context_chars is not None:
                streaming["context_chars"] = args.context_chars
            whisper = settings(args.whisper)
            config = server_config(base, streaming, Path(work), whisper)
            repeated = 0
            early: dict[str, dict[str, int]] = {}
            with served(config) as url:
                before = url.early_finals()
                for r in rows:
                    pcm = to_pcm16(sent[r["file"]]).tobytes()
                    replies = stream(url, pcm, r["language"], 0, args.rate)
                    if args.print_replies and args.print_replies in r["file"]:
                        print(f"replies to {r['file']}:", *replies, sep="\n  ", flush=True)
                    repeated += repeats(replies)
                    texts[r["file"]]["stream unpaced"] = " ".join(replies)
                early["unpaced"] = url.early_finals(since=before)
                before = url.early_finals()
                if not args.no_paced:
                    with ThreadPoolExecutor(args.parallel) as pool:
                        paced = pool.map(
                            lambda r, sent=sent: stream(
                                url,
                                to_pcm16(sent[r["file"]]).tobytes(),
                                r["language"],
                                1.0,
                                args.rate,
                            ),
                            rows,
                        )
                        for r, replies in zip(rows, paced, strict=True):
                            repeated += repeats(replies)
                            texts[r["file"]]["stream 1x"] = " ".join(replies)
                    early["1x"] = url.early_finals(since=before)
            totals = {p: np.zeros(2, int) for p in paths}
            without_disc = {p: np.zeros(2, int) for p in paths}
            print(
                f"\n{which} ({model_name}, {args.rate} Hz), streaming settings: "
                f"{streaming or 'defaults'}, "
                f"microphone: {', '.join(args.microphone) or 'as recorded'}, "
                f"whisper settings: {whisper or 'as ' + base.name}"
            )
            print("| recording | words | " + " | ".join(paths) + " |")
            print("|---|---|" + "---|" * len(paths))
            for r in rows:
                errors = {
                    p: np.array(word_errors(r["reference_transcript"], texts[r["file"]][p]))
                    for p in paths
                }
                words = errors[paths[0]][1]
                print(
                    f"| {r['file']} | {words} | "
                    + " | ".join(f"{errors[p][0] / words:.3f}" for p in paths)
                    + " |"
                )
                for p in paths:
                    totals[p] += errors[p]
                    if OLD_DISC not in r["file"]:
                        without_disc[p] += errors[p]
                same = (
                    texts[r["file"]].get("stream 1x", texts[r["file"]]["stream unpaced"])
                    == texts[r["file"]]["stream unpaced"]
                )
                if not same:
                    print(f"|   (1x and unpaced differ for {r['file']}) |")
            for name, sums in (("all", totals), (f"without {OLD_DISC}", without_disc)):
                whole = sums["whole file"][0] / sums["whole file"][1]
                print(
                    f"{name}: "
                    + ", ".join(
                        f"{p} WER {sums[p][0] / sums[p][1]:.3f} ({sums[p][0]}/{sums[p][1]}, "
                        f"{sums[p][0] / sums[p][1] / whole:.2f}x)"
                        for p in paths
                    ),
                    flush=True,
                )
            print(f"replies that only repeat the replies before them: {repeated}", flush=True)
            for name, counts in early.items():
                print(f"early finals, {name}: {counts}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
