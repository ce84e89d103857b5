#!/usr/bin/env python3
"""Shorter encoder windows for stream utterances: the words and the time (BENCHMARKS.md, "A
shorter encoder window for short utterances"; tried, not kept).

Whisper encodes a 30 s window whatever the audio's length (faster-whisper pads every window's
features to 3000 frames); CTranslate2 also takes fewer frames, and whisper.cpp's ``audio_ctx``
does that for speed. The gateway's segmenter cuts each English recording of ../shared/audio
into utterances as a stream would; each is decoded as the gateway decodes a stream's utterance
(English, beam 5, no conditioning on its own first pass) with its features padded to each
window given: ``3000`` (faster-whisper's), ``+N`` (its own frames and N more, at most 3000) or
``minN`` (at least N frames, and at least 200 beyond its own). Reported per window: the mean
decode time and the word errors of each recording's utterances joined. This experiment swaps
faster-whisper's ``pad_or_trim`` in this process only.

    python bench/short_windows.py [--model base] [--windows 3000,+256,+500,min1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faster_whisper.transcribe
import numpy as np
from _common import in_process_model, segmented, word_errors
from faster_whisper.audio import pad_or_trim
from stream_accuracy import OLD_DISC, recordings
from vad_conditions import load

from speechgw.stream import _context


def padder(window: str):
    """faster-whisper's ``pad_or_trim``, padding to ``window`` (see the module's docstring)."""

    def pad(features: np.ndarray, length: int = 3000, axis: int = -1) -> np.ndarray:
        frames = features.shape[-1]
        if window.startswith("+"):
            length = frames + int(window[1:])
        elif window.startswith("min"):
            length = max(int(window[3:]), frames + 200)
        else:
            length = int(window)
        return pad_or_trim(features, min(3000, length), axis=axis)

    return pad


def decode_recordings(
    rows: list[dict],
    utterances: dict[str, list[np.ndarray]],
    decode: Callable[[np.ndarray, str], str],
    context_chars: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Each recording's utterances decoded in order by ``decode(utterance, context)``, the
    context being the last ``context_chars`` of the texts before it (as a stream sends it):
    the word errors of each recording's texts joined, (errors, words) in all and without the
    1949 interview, and the mean decode time."""
    errors, without_disc, seconds, count = np.zeros(2, int), np.zeros(2, int), 0.0, 0
    for r in rows:
        texts: list[str] = []
        context = ""
        for utterance in utterances[r["file"]]:
            started = time.perf_counter()
            text = decode(utterance, context)
            seconds += time.perf_counter() - started
            count += 1
            texts.append(text)
            context = _context(context, text, context_chars)
        found = np.array(word_errors(r["reference_transcript"], " ".join(texts)))
        errors += found
        if OLD_DISC not in r["file"]:
            without_disc += found
    return errors, without_disc, seconds / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--windows", default="3000,+256,+500,min1000")
    args = parser.parse_args()
    rows = recordings(multilingual=False)  # the English recordings, as streamed there
    utterances = {r["file"]: segmented(load(r["file"], 400)) for r in rows}
    model = in_process_model(args.model, workers=1, threads=2)
    print(f"{args.model}: {sum(len(u) for u in utterances.values())} utterances")
    print("| window | mean decode s | errors | without the 1949 interview |")
    print("|---|---|---|---|")
    for window in args.windows.split(","):
        faster_whisper.transcribe.pad_or_trim = padder(window)

        def decode(utterance: np.ndarray, _context: str) -> str:
            segments, _ = model.transcribe(
                utterance, language="en", beam_size=5, condition_on_previous_text=False
            )
            return "".join(s.text for s in segments)

        errors, without_disc, seconds = decode_recordings(rows, utterances, decode)
        print(
            f"| {window} | {seconds:.3f} | {errors[0]}/{errors[1]} | "
            f"{without_disc[0]}/{without_disc[1]} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
