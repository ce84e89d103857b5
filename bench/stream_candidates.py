#!/usr/bin/env python3
"""Streaming accuracy candidates, in-process: how each way of decoding a stream's utterances
scores against the whole file.

The gateway's own resampler and webrtcvad segmenter cut each English recording of
../shared/audio exactly as a stream would (the cuts do not depend on pacing); each candidate
then decodes those utterances with tiny.en (or ``--model base``, the shipped default; int8,
one thread, beam 5), and the word error rate
of the joined text is compared with the whole file decoded at once. Candidates:

- ``whole``: the whole recording in one call (faster-whisper's defaults);
- ``alone-conditioned``: each utterance alone, windows conditioned on each other (before 12);
- ``alone``: each utterance alone, no conditioning;
- ``promptN``: the last N characters of the previous replies as ``initial_prompt``;
- ``leftN``: N seconds of the audio before the utterance decoded with it, keeping the words
  that start after the cut (word timestamps); ``leftN+prompt200`` both;
- ``silenceMS`` / ``silenceMS+prompt200``: utterances ended by MS of silence instead of 500;
- ``sileroT+prompt200``: from T s into an utterance, a frame is speech only where Silero VAD
  v6 (as faster-whisper ships it) agrees with webrtcvad, until webrtcvad hears a pause itself
  again (noise hides pauses from webrtcvad, not from Silero: see ``vad_conditions.py``);
  ``sileroT-pause1s+prompt200``: ``streaming.silero_vad_after_seconds: T`` (1 s in which Silero
  hears no speech ends an utterance that has run T s).

``--noise white:-25`` (or ``brown:-30``...) adds that noise, at that RMS level in dBFS, to
every recording before it is cut and decoded (brown: integrated white noise, high-passed at
50 Hz). Each candidate also prints how many utterances it cut, and how many of 20 s or more
(in noise that hides the pauses, those run to ``max_utterance_seconds``: finals come late).

``--rate 8000`` band-limits every recording to a telephone line's 8 kHz first (resampled
down, and back up to 16 kHz as the gateway does with a stream at ``rate: 8000``).

``--streaming KEY=VALUE`` sets a streaming setting for every candidate (e.g.
``max_utterance_seconds=6``, so that many utterances reach the limit); ``--cut-search-part N``
searches an utterance at the limit for its quietest moment in its last 1/N (5: the gateway's).

    python bench/stream_candidates.py [--noise KIND:DB] [--model base] [--streaming KEY=VALUE]
        [--cut-search-part N] [--rate 8000] [CANDIDATE ...]
"""

from __future__ import annotations

import csv
import dataclasses
import sys
import time
from collections.abc import Callable

import numpy as np
from _common import SHARED_AUDIO, in_process_model, segmented, word_errors
from scipy.signal import butter, lfilter, resample_poly

import speechgw.segmenter
from speechgw.audio import from_pcm16, to_16k_mono, to_pcm16
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


def _noise(samples: int, kind: str) -> np.ndarray:
    """White or brown noise of unit RMS, the same for a recording of the same length."""
    white = np.random.default_rng(samples).normal(0, 1, samples)
    if kind == "white":
        return white.astype(np.float32)
    brown = lfilter([1.0], [1.0, -0.999], white)
    brown = lfilter(*butter(2, 50 / 8000, "highpass"), brown)
    return (brown / np.sqrt(np.mean(brown**2))).astype(np.float32)


Cutter = Callable[[np.ndarray, StreamingConfig], list[np.ndarray]]


def silero_agreeing(after_seconds: float) -> Cutter:
    """The segmenter where, from ``after_seconds`` into an utterance, a frame is speech only
    if Silero VAD agrees, until webrtcvad hears a pause itself; driven frame by frame through
    its private step: an experiment (see the module's docstring)."""
    from speechgw.silero import WINDOW, SileroListener

    def cut(samples: np.ndarray, config: StreamingConfig) -> list[np.ndarray]:
        segmenter = Segmenter(config)
        size = segmenter._frame
        listener = SileroListener()
        pcm = to_pcm16(samples)
        after = int(after_seconds * 1000) // config.frame_ms
        end_silence = config.end_silence_ms // config.frame_ms
        found: list[np.ndarray] = []
        agreeing = False
        heard = 0  # webrtcvad's unvoiced frames in a row
        for start in range(0, len(pcm) // size * size, size):
            frame = pcm[start : start + size]
            voiced = segmenter._vad.is_speech(frame.tobytes(), 16000)
            heard = 0 if voiced else heard + 1
            listener.feed(samples[start : start + size])  # the window that holds the frame
            speech = listener.quiet_windows * WINDOW < size  # Silero hears speech at its end
            agreeing = (agreeing and heard < end_silence) or len(segmenter._utterance) >= after
            closed = segmenter._step(frame, voiced and (speech or not agreeing))
            if closed is not None:
                found.append(closed)
        return found + segmenter.flush()

    return cut


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
    "silero5+prompt200": (prompted(200), StreamingConfig()),
    "silero0-pause1s+prompt200": (prompted(200), StreamingConfig(silero_vad_after_seconds=0)),
    "silero3-pause1s+prompt200": (prompted(200), StreamingConfig(silero_vad_after_seconds=3)),
}
CUTTERS: dict[str, Callable[[], Cutter]] = {"silero5+prompt200": lambda: silero_agreeing(5.0)}


def main() -> int:
    args = sys.argv[1:]
    noise, model_name, overrides, rate = "", "tiny.en", {}, 16000
    options = ("--noise", "--model", "--streaming", "--cut-search-part", "--rate")
    while args[:1] and args[0] in options:
        option, value, args = args[0], args[1], args[2:]
        if option == "--noise":
            noise = value
        elif option == "--rate":
            rate = int(value)
        elif option == "--model":
            model_name = value
        elif option == "--streaming":
            key, _, number = value.partition("=")
            overrides[key] = float(number) if "." in number else int(number)
        else:  # how much of an utterance at the limit is searched for its quietest moment
            speechgw.segmenter.CUT_SEARCH_PART = int(value)
    names = args or list(CANDIDATES)
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
    audio = {}
    for r in rows:
        samples = decode_audio(str(SHARED_AUDIO / r["file"]))
        if noise:
            kind, _, level = noise.partition(":")
            samples = samples + _noise(len(samples), kind) * np.float32(10 ** (float(level) / 20))
        if rate != 16000:  # a telephone line's band (8000), upsampled as the gateway does
            samples = to_16k_mono(resample_poly(samples, rate, 16000).astype(np.float32), rate)
        audio[r["file"]] = from_pcm16(to_pcm16(samples))
    model = in_process_model(model_name, workers=1, threads=1)
    for name in names:
        strategy, config = CANDIDATES[name]
        config = dataclasses.replace(config, **overrides)
        cut = CUTTERS[name]() if name in CUTTERS else segmented
        errors = words = 0
        lengths: list[float] = []
        per = []
        started = time.perf_counter()
        for r in rows:
            samples = audio[r["file"]]
            utterances = cut(samples, config)
            lengths += [len(u) / 16000 for u in utterances]
            e, n = word_errors(
                r["reference_transcript"], strategy(model, utterances, samples, "en")
            )
            errors, words = errors + e, words + n
            per.append(f"{r['file'].split('/')[-1][:22]}={e}/{n}")
        long = sum(length >= 20 for length in lengths)
        print(
            f"{name}{' ' + noise if noise else ''}: WER {errors / words:.4f} ({errors}/{words}), "
            f"{len(lengths)} utterances, {long} of 20 s or more, "
            f"{time.perf_counter() - started:.0f} s; " + " ".join(per),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
