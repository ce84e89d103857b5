#!/usr/bin/env python3
"""What an utterance whose output echoes its prompt costs, in-process (BENCHMARKS.md, "An echo
decoded again on the same encoding").

The Whisper backend with its CPU defaults (no batching: every model call through the gate),
each of the six espeak-ng test sentences decoded as a stream's utterance three ways: with no
prompt; with its own words as the prompt, which tiny.en writes out, so the backend decodes it
again without (the echo path); and greedily, as an interim, the same two ways. Reported: the
mean time of each, and what the echo adds.

    python bench/echo_redecode.py [--model tiny.en] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path for the tests' speech helpers)
from speechgw.backends.whisper import WhisperBackend, WhisperOptions

from speechgw.jobs import Caller, JobSpec
from tests import speech


class _Echoes(logging.Handler):
    """Counts the backend's "output echoed its prompt" lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "echoed its prompt" in record.getMessage()


async def measure(model: str, rounds: int) -> None:
    echoes = _Echoes()
    logger = logging.getLogger("speechgw.backends.whisper")
    logger.setLevel(logging.INFO)
    logger.addHandler(echoes)
    folder = Path(tempfile.mkdtemp())
    utterances = {
        name: speech.samples_16k(speech.speak(text, folder / f"{name}.wav"))
        for name, text in speech.SENTENCES.items()
    }
    backend = WhisperBackend("w", WhisperOptions(model=model))
    await backend.start()
    final = JobSpec("en", "transcribe", "google", Caller("bench"), segmented=True)
    try:
        for kind, spec in (("final", final), ("interim", dataclasses.replace(final, interim=True))):
            for prompted in (False, True):
                seconds: list[float] = []
                echoes.count = 0
                for _ in range(rounds):
                    for name, audio in utterances.items():
                        prompt = speech.SENTENCES[name] if prompted else None
                        asked = dataclasses.replace(spec, prompt=prompt)
                        started = time.perf_counter()
                        await backend.transcribe(audio, asked)
                        seconds.append(time.perf_counter() - started)
                how = "its own words as the prompt (echo)" if prompted else "no prompt"
                print(
                    f"{kind}, {how}: mean {statistics.mean(seconds):.3f} s "
                    f"({echoes.count} of {len(seconds)} decoded again)"
                )
    finally:
        await backend.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(measure(args.model, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
