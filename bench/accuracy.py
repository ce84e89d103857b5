#!/usr/bin/env python3
"""Accuracy held: word error rate over ../shared/audio through the gateway (batch and stream)
against in-process faster-whisper with the same model and options.

In-process, faster-whisper reads each original file itself (PyAV decoding, its own
resampling). The gateway gets the same recording as a WAV at the file's own rate and channel
count (sox, no resampling), so its WAV reader, down-mixing and polyphase resampling are what is
compared; the stream gets 16-bit mono PCM at the file's own rate in 100 ms chunks. English
recordings with tiny.en; with --multilingual, the other languages too with base (batch only).

    python bench/accuracy.py [--multilingual]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

from _common import REPO, SHARED_AUDIO, in_process_model, served, tempdir, word_errors
from websockets.sync.client import connect


def batch(url: str, wav: bytes, language: str) -> str:
    with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
        ws.send(json.dumps({"type": "transcribe", "language": language}))
        ws.send(wav)
        return json.loads(ws.recv(timeout=600))["text"]


def stream(url: str, pcm: bytes, rate: int, language: str) -> str:
    replies: list[str] = []
    with connect(url + "/api/core/google/asr", max_size=None, compression=None) as ws:
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
        step = rate // 10 * 2
        for i in range(0, len(pcm), step):
            message = {"audio": base64.b64encode(pcm[i : i + step]).decode()}
            if i == 0:
                message |= {"rate": rate, "language_code": language}
            ws.send(json.dumps(message))
        ws.send(json.dumps({"type": "end"}))
        reader.join(timeout=600)
    return " ".join(replies)


def rows(multilingual: bool) -> list[dict[str, str]]:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multilingual", action="store_true")
    args = parser.parse_args()
    if not (SHARED_AUDIO / "MANIFEST.tsv").exists():
        print("../shared/audio is absent: no real speech to score", file=sys.stderr)
        return 1
    sets = [("en", "tiny.en", REPO / "bench" / "tiny.en.yaml")]
    if args.multilingual:
        sets.append(("other", "base", REPO / "bench" / "base.yaml"))
    with tempdir() as work:
        for which, model_name, config in sets:
            model = in_process_model(model_name, workers=1, threads=1)  # as the bench configs
            chosen = [
                r for r in rows(args.multilingual) if (r["language"] == "en") == (which == "en")
            ]
            totals = {"in-process": [0, 0], "gateway batch": [0, 0], "gateway stream": [0, 0]}
            with served(config) as url:
                for row in chosen:
                    source = SHARED_AUDIO / row["file"]
                    language = row["language"]
                    reference = row["reference_transcript"]
                    wav = Path(work) / "x.wav"
                    subprocess.run(["sox", str(source), "-b", "16", str(wav)], check=True)
                    mono = Path(work) / "mono.wav"
                    subprocess.run(
                        ["sox", str(source), "-b", "16", "-c", "1", "-t", "raw", str(mono)],
                        check=True,
                    )
                    rate = int(
                        subprocess.run(
                            ["soxi", "-r", str(source)], capture_output=True, text=True, check=True
                        ).stdout
                    )
                    texts = {
                        "in-process": "".join(
                            s.text
                            for s in model.transcribe(str(source), language=language, beam_size=5)[
                                0
                            ]
                        ),
                        "gateway batch": batch(url, wav.read_bytes(), language),
                    }
                    if which == "en":
                        texts["gateway stream"] = stream(url, mono.read_bytes(), rate, language)
                    for name, text in texts.items():
                        e, n = word_errors(reference, text)
                        totals[name][0] += e
                        totals[name][1] += n
                    print(
                        f"{row['file']} ({language}, {rate} Hz): "
                        + "; ".join(
                            f"{k} {word_errors(reference, t)[0]}" for k, t in texts.items()
                        ),
                        flush=True,
                    )
            print(
                f"{which} ({model_name}, {len(chosen)} recordings): "
                + ", ".join(f"{k} WER {e / n:.3f} ({e}/{n})" for k, (e, n) in totals.items() if n)
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
