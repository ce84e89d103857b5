#!/usr/bin/env python3
"""OpenAI's ``stream=true`` next to the plain answer: when the first words come, and what it
costs.

One ``speechgw serve`` (bench/tiny.en.yaml: tiny.en, one worker, one thread) takes each long
recording (the four conversational recordings of ../shared/audio/transcription-benchmark/,
93-113 s each, sent as the mp3s they are; without ../shared, two minutes of espeak-ng speech)
through the official ``openai`` SDK, ``--runs`` times each way, the order alternating:

- ``stream=True``: seconds from the request to the first ``transcript.text.delta`` and to
  ``transcript.text.done``;
- plain ``json``: seconds to the answer.

Also checked: the done event's text is the plain answer's, and the deltas joined are the text.

    python bench/openai_stream.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import REPO, served, tempdir
from openai import OpenAI

SHARED = REPO.parent / "shared" / "audio" / "transcription-benchmark"


def long_recordings(work: Path) -> list[Path]:
    found = sorted(SHARED.glob("*.mp3"))
    if found:
        return found
    sys.path.insert(0, str(REPO))
    from tests import speech

    parts = [
        speech.speak(text, work / f"{name}.wav") for name, text in speech.SENTENCES.items()
    ] * 7
    return [speech.concat(parts, work / "espeak-two-minutes.wav", silence_seconds=0.5)]


def streamed(client: OpenAI, path: Path) -> tuple[float, float, str, str]:
    """Seconds to the first delta and to the done event; the deltas joined; the done text."""
    started = time.perf_counter()
    first = None
    deltas = []
    with path.open("rb") as audio:
        events = client.audio.transcriptions.create(
            model="whisper-1", file=audio, language="en", stream=True
        )
        for event in events:
            if event.type == "transcript.text.delta":
                if first is None:
                    first = time.perf_counter() - started
                deltas.append(event.delta)
            else:
                done, text = time.perf_counter() - started, event.text
    return first if first is not None else done, done, "".join(deltas), text


def plain(client: OpenAI, path: Path) -> tuple[float, str]:
    started = time.perf_counter()
    with path.open("rb") as audio:
        text = client.audio.transcriptions.create(model="whisper-1", file=audio, language="en")
    return time.perf_counter() - started, text.text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    firsts: list[float] = []
    dones: list[float] = []
    plains: list[float] = []
    same = joined = total = 0
    with tempdir() as work, served(REPO / "bench" / "tiny.en.yaml") as url:
        client = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="none")
        files = long_recordings(Path(work))
        plain(client, files[0])  # warm up
        for run in range(args.runs):
            for i, path in enumerate(files):
                if (run + i) % 2:
                    plain_s, plain_text = plain(client, path)
                    first, done, deltas, text = streamed(client, path)
                else:
                    first, done, deltas, text = streamed(client, path)
                    plain_s, plain_text = plain(client, path)
                firsts.append(first)
                dones.append(done)
                plains.append(plain_s)
                same += text == plain_text
                joined += deltas == text
                total += 1
                print(
                    f"run {run + 1} {path.name}: first delta {first:.2f} s, done {done:.2f} s;"
                    f" plain {plain_s:.2f} s",
                    flush=True,
                )
        client.close()
    ratio = statistics.median(d / p for d, p in zip(dones, plains, strict=True))
    print(f"\n{total} requests each way, {len(files)} recordings, tiny.en, 1 worker x 1 thread")
    print(f"stream: first delta p50 {statistics.median(firsts):.2f} s (max {max(firsts):.2f})")
    print(
        f"stream: done p50 {statistics.median(dones):.2f} s; plain p50 "
        f"{statistics.median(plains):.2f} s; done/plain p50 {ratio:.3f}"
    )
    print(f"done text = plain text: {same}/{total}; deltas joined = done text: {joined}/{total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
