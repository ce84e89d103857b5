#!/usr/bin/env python3
"""Streaming accuracy candidates, in-process: how each way of decoding a stream's utterances
scores against the whole file.

The gateway's own resampler and webrtcvad segmenter cut each English recording of
../shared/audio exactly as a stream would (the cuts do not depend on pacing); each candidate
then decodes those utterances with tiny.en (int8, one thread, beam 5), and the word error rate
of the joined text is compared with the whole file decoded at once. Candidates:

- ``whole``: the whole recording in one call (faster-whisper's defaults);
- ``alone-conditioned``: each utterance alone, windows conditioned on each other (before 12);
- ``alone``: each utterance alone, no conditioning;
- ``promptN``: the last N characters of the previous replies as ``initial_prompt``;
- ``leftN``: N seconds of the audio before the utterance decoded with it, keeping the words
  that start after the cut (word timestamps); ``leftN+prompt200`` both;
- ``silenceMS`` / ``silenceMS+prompt200``: utterances ended by MS of silence instead of 500.

    python bench/stream_candidates.py [CANDIDATE ...]
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable

import numpy as np
from _common import SHARED_AUDIO, in_process_model, word_errors

from speechgw.audio import from_pcm16, to_pcm16
from speechgw.config import StreamingConfig
from speechgw.segmenter import Segmenter
from speechgw.stream import _context

NO_SPEECH = 0.5  # the Whisper backend's utterance_no_speech_prob
Strategy = Callable[[object, list[np.ndarray], np.ndarray, str], str]


def _has_words(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _kept(segments) -> str:
    return "".join(s.text for s in segments if s.no_speech_prob <= NO_SPEECH and _has_words(s.text))


def whole(model, utterances, audio, language) -> str:
    return "".join(s.text for s in model.transcribe(audio, language=language, beam_size=5)[0])


def alone(conditioned: bool) -> Strategy:
    def run(model, utterances, audio, language) -> str:
        texts = []
        for u in utterances:
            segments, _ = model.transcribe(
                u, language=language, beam_size=5, condition_on_previous_text=conditioned
            )
            texts.append(_kept(segments))
        return "".join(texts)

    return run


def prompted(chars: int, left_seconds: float = 0.0) -> Strategy:
    def run(model, utterances, audio, language) -> str:
        texts, context, cursor = [], "", 0
        for u in utterances:
            start = _find(audio, u, cursor)
            cursor = start + len(u)
            lead = min(int(left_seconds * 16000), start)
            segments, _ = model.transcribe(
                audio[start - lead : start + len(u)] if lead else u,
                language=language,
                beam_size=5,
                initial_prompt=context or None,
                condition_on_previous_text=False,
                word_timestamps=bool(lead),
            )
            if lead:  # keep the words that start after the cut
                words = [
                    w.word
                    for s in segments
                    if s.no_speech_prob <= NO_SPEECH
                    for w in s.words or []
                    if (w.start + w.end) / 2 >= lead / 16000
                ]
                text = "".join(words)
            else:
                text = _kept(segments)
            texts.append(text)
            if chars and _has_words(text):
                context = _context(context, text, chars)
        return "".join(texts)

    return run


def _find(audio: np.ndarray, utterance: np.ndarray, start: int) -> int:
    """Where ``utterance`` (a slice of ``audio`` at int16 precision) begins, from ``start``."""
    a, b = to_pcm16(audio), to_pcm16(utterance)
    frame = 480  # utterances begin on 30 ms frames
    for p in range(start - start % frame, len(a) - len(b) + 1, frame):
        if np.array_equal(a[p : p + len(b)], b):
            return p
    return start  # the stream's first utterance may begin with added silence


CANDIDATES: dict[str, tuple[Strategy, StreamingConfig]] = {
    "whole": (whole, StreamingConfig()),
    "alone-conditioned": (alone(True), StreamingConfig()),
    "alone": (alone(False), StreamingConfig()),
    "prompt100": (prompted(100), StreamingConfig()),
    "prompt200": (prompted(200), StreamingConfig()),
    "prompt400": (prompted(400), StreamingConfig()),
    "left4": (prompted(0, 4.0), StreamingConfig()),
    "left4+prompt200": (prompted(200, 4.0), StreamingConfig()),
    "silence800": (alone(False), StreamingConfig(end_silence_ms=800)),
    "silence800+prompt200": (prompted(200), StreamingConfig(end_silence_ms=800)),
}


def main() -> int:
    names = sys.argv[1:] or list(CANDIDATES)
    if not (SHARED_AUDIO / "MANIFEST.tsv").exists():
        print("../shared/audio is absent: no real speech to score")
        return 1
    from faster_whisper import decode_audio

    with open(SHARED_AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        rows = [
            r
            for r in csv.DictReader(f, delimiter="\t")
            if r["language"] == "en"
            and "stereo" not in r["file"]
            and "multilingual" not in r["file"]
        ]
    audio = {
        r["file"]: from_pcm16(to_pcm16(decode_audio(str(SHARED_AUDIO / r["file"])))) for r in rows
    }
    model = in_process_model("tiny.en", workers=1, threads=1)
    for name in names:
        strategy, config = CANDIDATES[name]
        errors = words = 0
        per = []
        started = time.perf_counter()
        for r in rows:
            segmenter = Segmenter(config)
            samples = audio[r["file"]]
            utterances = []
            for i in range(0, len(samples), 1600):  # 100 ms chunks, as clients send them
                utterances += segmenter.feed(samples[i : i + 1600])
            utterances += segmenter.flush()
            e, n = word_errors(
                r["reference_transcript"], strategy(model, utterances, samples, "en")
            )
            errors, words = errors + e, words + n
            per.append(f"{r['file'].split('/')[-1][:22]}={e}/{n}")
        print(
            f"{name}: WER {errors / words:.4f} ({errors}/{words}), "
            f"{time.perf_counter() - started:.0f} s; " + " ".join(per),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
