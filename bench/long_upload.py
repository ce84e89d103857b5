#!/usr/bin/env python3
"""What one long upload costs the server: time to answer, and memory.

Builds a 29-minute recording (the three NASA podcast parts of ../shared/audio, 294 s, repeated;
espeak-ng sentences without it), encodes it as a 64 kbit/s mp3 as a phone app would send it,
and sends it once through the OpenAI-compatible API (``verbose_json``) to a ``speechgw serve``
on tiny.en with ``cpu_threads: 2``, reading the server's resident memory every 0.2 s. Then,
in this process, what the log-mel features of that recording cost on their own: faster-
whisper's ``FeatureExtractor`` (its STFT of the whole recording at once) against the backend's
``BlockwiseFeatureExtractor`` (peak traced memory, time, and whether they are equal).

    python bench/long_upload.py [--minutes 29] [--recording FILE]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import tracemalloc
import urllib.request
import wave
from pathlib import Path

import numpy as np
from _common import NASA_PODCAST, pcm16k, served, tempdir, whisper_gateway_config

from tests.client import multipart_upload


def long_recording(work: Path, minutes: float) -> Path:
    """The NASA parts (or espeak-ng sentences) repeated to ``minutes``, as an mp3."""
    from tests import speech

    if all(p.exists() for p in NASA_PODCAST):
        one = np.concatenate([pcm16k(p) for p in NASA_PODCAST])
    else:
        wavs = [speech.speak(t, work / f"{n}.wav") for n, t in speech.SENTENCES.items()]
        joined = speech.concat(wavs, work / "sentences.wav", silence_seconds=0.5)
        one = pcm16k(joined)
    samples = int(minutes * 60 * 16000)
    pcm = np.tile(one, samples // len(one) + 1)[:samples]
    raw = work / "long.wav"
    with wave.open(str(raw), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return speech.encode(raw, work / "long.mp3", "mp3", bit_rate=64000)


def server_figures(recording: Path, work: Path) -> None:
    config = whisper_gateway_config(work / "long.yaml", model="tiny.en", cpu_threads=2)
    with served(config) as url:
        body, kind = multipart_upload(recording.read_bytes(), response_format="verbose_json")
        before = url.rss_mib()
        peak = [before]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                peak.append(url.rss_mib())

        threading.Thread(target=watch, daemon=True).start()
        http = url.replace("ws://", "http://", 1)
        request = urllib.request.Request(
            f"{http}/v1/audio/transcriptions", body, {"Content-Type": kind}
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=3600) as response:
            answer = json.loads(response.read())
        seconds = time.monotonic() - started
        done.set()
        after = url.rss_mib()
    duration = answer["duration"]
    print(f"answer: duration {duration} s, {len(answer['segments'])} segments")
    print(f"time to answer: {seconds:.0f} s ({duration / seconds:.1f} audio s/s)")
    print(
        f"server RSS: before {before:,.0f} MiB, peak {max(peak):,.0f} MiB, after {after:,.0f} MiB"
    )


def feature_figures(recording: Path) -> None:
    from faster_whisper.feature_extractor import FeatureExtractor
    from speechgw.backends.whisper_features import BlockwiseFeatureExtractor

    audio = pcm16k(recording).astype(np.float32) / 32768
    results = {}
    for extractor in (FeatureExtractor(), BlockwiseFeatureExtractor()):
        tracemalloc.start()
        started = time.perf_counter()
        results[type(extractor).__name__] = extractor(audio)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{type(extractor).__name__}: peak {peak / 1e6:,.0f} MB, {seconds:.2f} s")
    first, second = results.values()
    print(f"features equal bit for bit: {np.array_equal(first, second)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=29.0)
    parser.add_argument("--recording", type=Path, help="send this file instead")
    args = parser.parse_args()
    with tempdir() as work:
        recording = args.recording or long_recording(Path(work), args.minutes)
        server_figures(recording, Path(work))
        feature_figures(recording)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
