"""Silero VAD heard once per recording: its speech probabilities, the stretches of speech that
faster-whisper's rule finds in them, and segments and words timed by them.

faster-whisper's ``get_speech_timestamps`` runs Silero and turns its probabilities into
stretches of speech in one call, and keeps the probabilities to itself. The Whisper backend
needs both: the stretches to leave long silences out (:mod:`.whisper_clips`) or to cut a
recording into windows at its pauses, the probabilities to time segments and words where
their speech is (:func:`at_speech`) and to tell whether a window Whisper doubts holds speech
(:class:`~.whisper_spoken.RecordingCheck`). Running Silero a second time would cost what the
first does (about 2 ms per audio second: 40-55 ms per 30 s window, BENCHMARKS.md "A recording
in which nobody speaks"; tiny.en decodes a second of audio in about 30 ms on one thread), so
the model is called here as ``get_speech_timestamps`` calls it (the same padding, one call
per block, the same probabilities) and :func:`speech_spans` is its rule, line for line
(faster-whisper 1.2.1, MIT licence); ``tests/test_segment_times.py`` checks the two give the
same stretches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TypeVar

import numpy as np

from speechgw.jobs import SAMPLE_RATE, Segment, Word
from speechgw.silero import WINDOW

__all__ = ["Heard", "at_speech", "hear", "speech_spans"]

SegmentOrWord = TypeVar("SegmentOrWord", Segment, Word)

SPEECH_THRESHOLD = 0.2
"""The speech probability at which a word's speech is taken to start and end: the line
:data:`~.whisper_clips.SPEECH_THRESHOLD` draws for leaving audio out, below Silero's own 0.5
because a lower line hears a word's beginning sooner, and a start put late cuts the word."""
START_LEAD = 0.15
"""A start moved to its speech is put this many seconds before the window in which Silero
first hears it: Silero hears a word's soft beginning (an "h", an "s") late, and a
subtitle shown a moment early reads better than one shown late (``bench/segment_times.py``)."""
PAUSE_WINDOWS = 8
"""Silero windows (32 ms each: a quarter of a second) without speech inside a word that make
it a pause the word took in (a word's own stops, "p", "t", are far shorter): the word is
taken to be the stretch with the most speech (in bench/segment_times.py's recordings a first
word after a 4 s pause took in the tail of the sentence before it too, where Silero's rating
had not yet fallen under the line)."""
END_LAG = 0.15
"""An end moved to where its speech ends is put this many seconds after Silero's last window
of speech: a word's soft end (a falling "s", a breath out) fades under what Silero hears."""


@dataclasses.dataclass(frozen=True, slots=True)
class Heard:
    """What Silero heard in a recording: the speech probability of each 32 ms window (the
    recording at the level it was heard at), and the stretches of speech found in them."""

    probabilities: np.ndarray
    spans: list[tuple[int, int]]
    """Stretches of speech, in samples, by the options :func:`hear` was given."""
    gain: float
    """What the recording was multiplied by to be heard."""

    def speech_in(
        self, start: float, end: float, threshold: float, one_stretch: bool
    ) -> tuple[float, float] | None:
        """Where the speech Silero hears between ``start`` and ``end`` (seconds) begins and
        ends (windows at ``threshold`` or above); None if it hears none there. ``one_stretch``
        (a word): only the stretch of it with the most speech, where pauses of
        :data:`PAUSE_WINDOWS` or more divide it (a word is said in one)."""
        first = int(start * SAMPLE_RATE) // WINDOW
        last = min(math.ceil(end * SAMPLE_RATE / WINDOW), len(self.probabilities))
        runs = _runs(self.probabilities[first:last] >= threshold)
        if not runs:
            return None
        stretches = [[runs[0]]]
        for run in runs[1:]:
            if one_stretch and run[0] - stretches[-1][-1][1] >= PAUSE_WINDOWS:
                stretches.append([run])
            else:
                stretches[-1].append(run)
        most = max(stretches, key=lambda stretch: sum(b - a for a, b in stretch))
        per_second = SAMPLE_RATE / WINDOW
        return (first + most[0][0]) / per_second, (first + most[-1][1]) / per_second


def _runs(heard: np.ndarray) -> list[tuple[int, int]]:
    """The runs of ``True`` in ``heard``: (first, one past the last) index of each."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], heard, [False])).astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def hear(
    audio: np.ndarray,
    *,
    gain: float = 1.0,
    block_seconds: float | None = None,
    threshold: float = 0.5,
    min_silence_ms: int = 2000,
    max_speech_s: float = math.inf,
    pad_ms: int = 400,
) -> Heard:
    """Silero over ``audio`` (brought up by ``gain``, clipped), a block of ``block_seconds`` at
    a time (bounding the louder copy's memory and the model's; None: all at once), and the
    stretches of speech in all of it by faster-whisper's rule with these options (its
    ``VadOptions``' names and defaults). The rule is applied once, to every block's
    probabilities together, so that no stretch is cut where a block ends (a window of a
    recording cut at its pauses would have been cut there mid-word)."""
    from faster_whisper.vad import get_vad_model

    model = get_vad_model()
    block = len(audio) or 1
    if block_seconds:  # whole windows, so that every block's fall on the recording's grid
        block = min(block, max(WINDOW, int(block_seconds * SAMPLE_RATE) // WINDOW * WINDOW))
    probabilities: list[np.ndarray] = []
    tail = np.zeros(0, np.float32)  # the padding's own windows, after the last block's
    for at in range(0, len(audio), block):
        part = audio[at : at + block]
        if gain > 1:
            part = np.clip(part * np.float32(gain), -1.0, 1.0)
        # as get_speech_timestamps pads it: a whole window of zeros even where none is needed
        padded = np.pad(part, (0, WINDOW - len(part) % WINDOW))
        heard = model(padded).reshape(-1)
        windows = math.ceil(len(part) / WINDOW)
        probabilities.append(heard[:windows])
        tail = heard[windows:]
    whole = np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32)
    # the rule sees the padding's windows too, as in get_speech_timestamps
    ruled = np.concatenate((whole, tail))
    spans = speech_spans(ruled, len(audio), threshold, min_silence_ms, max_speech_s, pad_ms)
    return Heard(whole, spans, gain)


def speech_spans(
    probabilities: np.ndarray,
    length: int,
    threshold: float = 0.5,
    min_silence_ms: int = 2000,
    max_speech_s: float = math.inf,
    pad_ms: int = 400,
    min_speech_ms: int = 0,
) -> list[tuple[int, int]]:
    """The stretches of speech (sample offsets) in ``length`` samples whose windows Silero
    rated ``probabilities``: faster-whisper's ``get_speech_timestamps`` after its model call."""
    rate = SAMPLE_RATE
    neg_threshold = max(threshold - 0.15, 0.01)
    min_speech = rate * min_speech_ms / 1000
    pad = rate * pad_ms / 1000
    max_speech = rate * max_speech_s - WINDOW - 2 * pad
    min_silence = rate * min_silence_ms / 1000
    min_silence_at_max_speech = rate * 98 / 1000
    triggered = False
    speeches: list[dict[str, int]] = []
    current: dict[str, int] = {}
    temp_end = prev_end = next_start = 0
    for i, probability in enumerate(probabilities):
        at = WINDOW * i
        if probability >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = at
        if probability >= threshold and not triggered:
            triggered = True
            current["start"] = at
            continue
        if triggered and at - current["start"] > max_speech:
            if prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                if next_start < prev_end:
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current["end"] = at
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if probability < neg_threshold and triggered:
            if not temp_end:
                temp_end = at
            if at - temp_end > min_silence_at_max_speech:
                prev_end = temp_end
            if at - temp_end < min_silence:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
            continue
    if current and length - current["start"] > min_speech:
        current["end"] = length
        speeches.append(current)
    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i != len(speeches) - 1:
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * pad:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(length, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(length, speech["end"] + pad))
    return [(speech["start"], speech["end"]) for speech in speeches]


def at_speech(segment: Segment, heard: Heard) -> Segment:
    """``segment`` (on the recording's clock), and each of its words, timed by where Silero
    hears their speech: a start that Whisper put in the pause before the speech moves to
    :data:`START_LEAD` before it, an end put in the pause after it to :data:`END_LAG` after.

    Whisper times a segment that follows a pause from a point inside the pause (a third of a
    second before its speech on average, up to 0.8 s; its first word with it), and from a
    window's or clip's very start after a short lead; a word before or after a pause inside a
    segment takes the pause in (with tiny.en, a sentence's last word ended a second into the
    pause after it). A segment with words runs from its first word's start to its last word's end;
    one without has only its ends looked at (the pauses inside it are between its words).
    Times only ever move inwards, never past the other end of the word or segment, and not at
    all where Silero hears no speech in it (then what Whisper wrote is all there is to go
    by)."""
    words = tuple(_at_speech(word, heard, one_stretch=True) for word in segment.words)
    if words:  # a segment runs from its first word's start to its last word's end
        start = max(segment.start, words[0].start)
        end = max(start, min(segment.end, words[-1].end))
        if (start, end, words) == (segment.start, segment.end, segment.words):
            return segment
        return dataclasses.replace(segment, start=start, end=end, words=words)
    # its pauses may be its own (between its words): only its ends are looked at
    return _at_speech(segment, heard, one_stretch=False)


def _at_speech(part: SegmentOrWord, heard: Heard, one_stretch: bool) -> SegmentOrWord:
    """``part``'s start moved to :data:`START_LEAD` before the speech heard in it and its end
    to :data:`END_LAG` after, where those are inside it; as it is where none is heard."""
    found = heard.speech_in(part.start, part.end, SPEECH_THRESHOLD, one_stretch)
    if found is None:
        return part
    onset, offset = found
    start = max(part.start, round(min(onset - START_LEAD, part.end), 3))
    end = min(part.end, round(max(offset + END_LAG, start), 3))
    if (start, end) == (part.start, part.end):
        return part
    return dataclasses.replace(part, start=start, end=end)
