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
import json
import subprocess
import sys
import wave
from pathlib import Path

from _common import REPO, SHARED_AUDIO, in_process_model, served, tempdir, word_errors
from stream_accuracy import recordings, stream
from websockets.sync.client import connect

from speechgw.audio import to_pcm16


def batch(url: str, wav: bytes, language: str) -> str:
    with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
        ws.send(json.dumps({"type": "transcribe", "language": language}))
        ws.send(wav)
        return json.loads(ws.recv(timeout=600))["text"]


def _as_wav(source: Path, work: Path) -> tuple[Path, Path, int]:
    """``source`` as a 16-bit WAV at its own rate and channels, the same as mono raw PCM, and
    its rate (sox). Formats Debian's sox cannot read (mp3) are decoded by PyAV to 16 kHz mono,
    as faster-whisper decodes them, and that is what the gateway gets then."""
    wav, mono = work / "x.wav", work / "mono.raw"
    try:
        subprocess.run(["sox", str(source), "-b", "16", str(wav)], check=True, capture_output=True)
        subprocess.run(
            ["sox", str(source), "-b", "16", "-c", "1", "-t", "raw", str(mono)], check=True
        )
        rate = subprocess.run(
            ["soxi", "-r", str(source)], capture_output=True, text=True, check=True
        )
        return wav, mono, int(rate.stdout)
    except subprocess.CalledProcessError:
        from faster_whisper import decode_audio

        pcm = to_pcm16(decode_audio(str(source))).tobytes()
        mono.write_bytes(pcm)
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm)
        return wav, mono, 16000


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
                r
                for r in recordings(args.multilingual)
                if (r["language"] == "en") == (which == "en")
            ]
            totals = {"in-process": [0, 0], "gateway batch": [0, 0], "gateway stream": [0, 0]}
            with served(config) as url:
                for row in chosen:
                    source = SHARED_AUDIO / row["file"]
                    language = row["language"]
                    reference = row["reference_transcript"]
                    wav, mono, rate = _as_wav(source, Path(work))
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
                        texts["gateway stream"] = " ".join(
                            stream(url, mono.read_bytes(), language, 0, rate)
                        )
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
