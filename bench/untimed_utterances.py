#!/usr/bin/env python3
"""A stream's utterances decoded without timestamps: the words and the time (BENCHMARKS.md, "A
stream's utterance decoded without timestamps"; tried, not kept).

A stream's final needs only its text, and an utterance fits one 30 s window, so faster-whisper's
``without_timestamps=True`` looks free: no timestamp tokens, and no second window for a tail
left after the first window's last timestamp. The gateway's segmenter cuts each English
recording of ../shared/audio into utterances as a stream would; each is decoded as the gateway
decodes a stream's utterance (English, beam 5, no conditioning on its own first pass) with and
without timestamps, once with no prompt and once with the stream's context as the gateway sends
it (the last 200 characters of the replies before it). Reported: the mean decode time, the
model calls (encoder windows, decoder runs with their temperature fallbacks) and the word errors
of each recording's utterances joined.

    python bench/untimed_utterances.py [--model base] [--repeat 1]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _common import in_process_model, segmented
from short_windows import decode_recordings
from stream_accuracy import recordings
from vad_conditions import load

CONTEXT_CHARS = 200  # the shipped streaming.context_chars


class CountedModel:
    """A CTranslate2 Whisper model that counts its encoder and decoder calls."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.encodes = 0
        self.generates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        self.encodes += 1
        return self._inner.encode(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.generates += 1
        return self._inner.generate(*args, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows = recordings(multilingual=False)  # the English recordings, as streamed there
    utterances = {r["file"]: segmented(load(r["file"], 400)) for r in rows}
    model = in_process_model(args.model, workers=1, threads=2)
    inner = model.model
    print(f"{args.model}: {sum(len(u) for u in utterances.values())} utterances")
    print("| context | timestamps | mean decode s | encoder windows | decoder runs | errors |")
    print("|---|---|---|---|---|---|")
    for _ in range(args.repeat):
        for context_chars in (0, CONTEXT_CHARS):
            for untimed in (False, True):
                counted = model.model = CountedModel(inner)

                def decode(utterance: np.ndarray, context: str, untimed: bool = untimed) -> str:
                    segments, _ = model.transcribe(
                        utterance, language="en", beam_size=5,
                        condition_on_previous_text=False,
                        initial_prompt=context or None, without_timestamps=untimed,
                    )  # fmt: skip
                    return "".join(s.text for s in segments).strip()

                errors, without_disc, seconds = decode_recordings(
                    rows, utterances, decode, context_chars
                )
                print(
                    f"| {context_chars} chars | {'no' if untimed else 'yes'} | "
                    f"{seconds:.3f} | {counted.encodes} | {counted.generates} | "
                    f"{errors[0]}/{errors[1]} ({without_disc[0]} without the 1949 interview) |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
