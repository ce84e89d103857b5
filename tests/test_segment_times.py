"""Where a recording's segments and words start and end: where their speech does, not in the
pauses around it.

Whisper times a segment that follows a pause from a point inside the pause (a third of a
second early on average, up to 0.8 s), and its first word with it; cut at pauses into windows,
a word before a pause ran on into it. Subtitles then showed a line before anyone said it and
kept it after. The backend moves such times to where Silero hears the speech begin and end.
"""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from faster_whisper.vad import VadOptions, get_speech_timestamps
from openai import OpenAI
from openai.types.audio import TranscriptionVerbose
from speechgw.backends.whisper_batching import speech_windows
from speechgw.backends.whisper_clips import SPEECH_THRESHOLD, listen, listening_gain
from speechgw.backends.whisper_vad import END_LAG, START_LEAD, at_speech, hear

from speechgw.audio import to_pcm16
from speechgw.jobs import Segment, Word
from tests import speech
from tests.serving import TINY, Server, running_server

RATE = 16000
NAMES = ("children", "window", "train")
PAUSES = (1.2, 1.5, 4.0)
"""Silence before each sentence: a short lead, a pause inside one of Silero's stretches of
speech (under 2 s), and one over ``skip_non_speech_seconds`` (a clip of its own)."""


def _wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(to_pcm16(samples).tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def paused(voices) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Three sentences, each after a pause of :data:`PAUSES`, and where each one's speech
    starts and ends (its first and last sample above -40 dBFS), in seconds."""
    parts, spans, at = [], [], 0
    for name, pause in zip(NAMES, PAUSES, strict=True):
        silence = np.zeros(int(pause * RATE), np.float32)
        sentence = speech.samples_16k(voices[name])
        loud = np.flatnonzero(np.abs(sentence) > 0.01) + at + len(silence)
        spans.append((loud[0] / RATE, loud[-1] / RATE))
        parts += [silence, sentence]
        at += len(silence) + len(sentence)
    parts.append(np.zeros(RATE, np.float32))
    return np.concatenate(parts), spans


def test_silero_heard_once_gives_the_stretches_faster_whisper_finds(
    paused: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    """The backend calls Silero once per recording and finds the stretches of speech with
    faster-whisper's rule itself (it needs the probabilities too): the same stretches as
    ``get_speech_timestamps`` for both its uses, in quiet and under a hiss, loud and quiet."""
    audio, _ = paused
    hiss = np.random.default_rng(0).normal(0, 0.003, len(audio)).astype(np.float32)
    for samples in (audio, audio + hiss, (audio + hiss) * np.float32(0.02)):
        gain = float(listening_gain(samples))
        louder = np.clip(samples * np.float32(gain), -1.0, 1.0) if gain > 1 else samples
        clips = get_speech_timestamps(louder, VadOptions(threshold=SPEECH_THRESHOLD))
        assert listen(samples).spans == [(c["start"], c["end"]) for c in clips]
        windows = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
        found = [(c["start"], c["end"]) for c in get_speech_timestamps(louder, windows)]
        assert hear(samples, gain=gain, min_silence_ms=160, max_speech_s=30).spans == found
        assert speech_windows(samples)[1].spans == found
        assert len(found) >= len(NAMES)  # speech heard, at every level


def test_silero_heard_in_blocks_finds_the_stretches_it_finds_at_once(
    paused: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    """A long recording is heard a block at a time (a 29-minute upload cut into windows at its
    pauses held 251 MB heard at once, 63 MB in blocks: ``bench/long_stretches.py --cost``), and
    its stretches of speech are still found as in one pass: none is cut where a block ends (a
    window of speech would have been cut there, mid-word). Blocks of a second or so here, so
    that they end inside every sentence; only Silero's memory starts afresh at each, which
    moves an end by a window or so."""
    audio, _ = paused
    for options in ({"min_silence_ms": 160, "max_speech_s": 30}, {"threshold": SPEECH_THRESHOLD}):
        whole = hear(audio, **options).spans
        for seconds in (1.0, 2.0, 3.0):
            blocked = hear(audio, block_seconds=seconds, **options).spans
            assert len(blocked) == len(whole), (seconds, options, blocked, whole)
            for (a, b), (c, d) in zip(blocked, whole, strict=True):
                assert abs(a - c) <= 1024 and abs(b - d) <= 1024, (seconds, blocked, whole)


@pytest.mark.parametrize("segment_times", ["tokens", "pauses", "sentences"])
def test_sentences_around_pauses_are_timed_where_they_are_said(
    paused: tuple[np.ndarray, list[tuple[float, float]]], segment_times: str
) -> None:
    """Over the OpenAI API (verbose_json, words asked), each sentence's first word starts, and
    its last word ends, within 0.3 s of its speech, and so does each segment that starts or
    ends a sentence. As Whisper timed them, a segment or word after a pause started up to 0.8 s
    early (from a window's start, with ``pauses``: Silero's 0.4 s of padding before it, or
    from inside the pause), and a word before a pause ended up to a second into it (1.01 s with
    ``tokens``, the rule off)."""
    audio, spans = paused
    options = {**TINY["whisper"], "segment_times": segment_times}
    with running_server(backends={"whisper": options}) as server:
        verbose = _verbose(server, _wav(audio))
    assert speech.word_recall(" ".join(speech.SENTENCES[n] for n in NAMES), verbose.text) > 0.8
    words = verbose.words
    for start, end in spans:
        first = next(w for w in words if w.end > start + 0.05)
        last = next(w for w in reversed(words) if w.start < end - 0.05)
        assert abs(first.start - start) <= 0.3, (start, words)
        assert abs(last.end - end) <= 0.3, (end, words)
    assert all(w.start <= w.end for w in words)
    for segment in verbose.segments:
        start = min((a for a, _ in spans), key=lambda a: abs(segment.start - a))
        end = min((b for _, b in spans), key=lambda b: abs(segment.end - b))
        assert abs(segment.start - start) <= 0.3 or abs(segment.start - start) > 1, segment
        assert abs(segment.end - end) <= 0.3 or abs(segment.end - end) > 1, segment
    assert abs(verbose.segments[0].start - spans[0][0]) <= 0.3, verbose.segments


def _verbose(server: Server, wav: bytes) -> TranscriptionVerbose:
    """The official SDK's verbose answer, words and segments timed."""
    with OpenAI(base_url=server.http + "/v1", api_key="none", max_retries=0) as sdk:
        return sdk.audio.transcriptions.create(
            model="whisper-1",
            file=("paused.wav", wav),
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
        )


def test_times_move_only_inwards_and_only_to_speech_silero_hears(
    paused: tuple[np.ndarray, list[tuple[float, float]]],
) -> None:
    """The rule on real Silero: a start in the pause before the speech moves to
    :data:`START_LEAD` before it, an end in the pause after it to :data:`END_LAG` after it,
    words with them; never past the other end of a word; a time already in speech, or a word
    in which Silero hears none, stays where Whisper put it."""
    audio, spans = paused
    heard = listen(audio)
    (_, first_end), (start, _), _ = spans
    words = (Word("The", start - 0.6, start + 0.2), Word("window", start + 0.3, start + 0.7))
    moved = at_speech(Segment("The window", start - 0.6, start + 0.7, words=words), heard)
    assert abs(moved.start - (start - START_LEAD)) <= 0.05, moved
    assert moved.words[0].start == moved.start and moved.words[1:] == words[1:]
    assert moved.end == start + 0.7  # in speech
    # the end of a sentence that Whisper ran into the pause after it
    park = Segment(
        "park.",
        first_end - 0.3,
        first_end + 1.4,
        words=(Word("park.", first_end - 0.3, first_end + 1.4),),
    )
    ended = at_speech(park, heard)
    assert abs(ended.end - (first_end + END_LAG)) <= 0.1, ended  # Silero hears a fading end
    assert ended.words[0].end == ended.end and ended.start == park.start
    # a first word that ends before the speech: neither it nor its segment moves past its end
    early = Segment(
        "The window",
        start - 0.9,
        start + 0.7,
        words=(Word("The", start - 0.9, start - 0.5), *words[1:]),
    )
    assert at_speech(early, heard) == early
    # nothing heard from its start to its end (the silence before the first sentence): stays
    silent = Segment("You", 0.1, 0.9)
    assert at_speech(silent, heard) == silent
