"""A recording in no named language, heard window by window: one that changes language is
written in each, not carried on in the first.

faster-whisper detects a recording's language once, from its first 30 s window, and decodes
every later window in it, each on the text before it. A meeting that goes from English to
German came back with the German translated into English, or left out: of the 30 s of German in
``multilingual.mp3``, base wrote one English sentence. Its ``multilingual=True`` detects each
window's language but keeps the earlier text as the prompt (German still came out as English),
and with ``condition_on_previous_text=False`` as well it wrote both halves but lost words of
one language's hard recordings (a 1949 interview, quieter, in a room, under a hiss: 11-23 %
more errors), where a window's detection is unsure and wrong (Welsh, Breton at 0.32-0.45) and
the earlier text is what holds the decode together. So here a window changes the language only
when its detection is sure (:data:`SWITCH_PROBABILITY`; the switches measured were 0.91 and
up), and only that window is decoded without the text before it, which is in the other
language. A recording that stays in one language gets the prompts it got before (BENCHMARKS.md, "A
recording in no named language").

A change of language rarely falls on a window's start. A window that holds both is heard as
one of the two, less surely, and was decoded all in it: 6 s of English and then German, heard
as English at 0.72, had the German written as English sounds ("I'm armed gang" for "Am Abend
gingen"); a Spanish sentence and then jfk, heard as Spanish at 0.80, had jfk left out (Whisper
ends such a window after the first language and skips the rest of it). So a window heard less
surely than :data:`MIXED_BELOW` is looked into once decoded. The audio from a late segment's
start to the window's end is heard on its own, and the audio before it: when either is surely
another language than the other, each segment is heard for which of the two it is more like,
the change is put at the segment start that leaves the fewest on the wrong side, and the
window is decoded again in its first part's language with its audio up to the change only
(as if the recording ended there); the next window begins at the change and is heard in its
own language. A window with no change costs one to four encoder passes more; one with a
change, a pass per segment and one more decoding.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim

__all__ = ["MIXED_BELOW", "SWITCH_PROBABILITY", "WindowLanguageModel"]

_LOGGER = logging.getLogger(__name__)

SWITCH_PROBABILITY = 0.8
"""How sure the detection of a window's language must be to change the language from the
window before's. Measured with base: a real change (English to German) 0.91-1.00; an English
window of a hard recording heard as another language 0.29 (``bench/unnamed_language.py
--detections``), and 0.32-0.45 where the windows fell elsewhere."""
MIXED_BELOW = 0.98
"""A window whose language is heard less surely than this may hold two, and is looked into
once decoded. Joined in one window (``bench/unnamed_language.py``, base): 13 s of English and
10 s of German were heard as English at 0.76, 22 s and 10 s at 0.93, jfk and a sentence in
another language at 0.69-0.97 (jfk and Portuguese just under 0.97 in-process, just over it
through the gateway, as 16-bit audio: hence 0.98), the other way round at 0.80-0.96. The
windows of ../shared/audio's one-language recordings were heard at 0.92-1.00, but for the
hardest stretch of a 1949 interview (0.29-0.88: no stretch of it from a segment on was surely
another language) and a 4 s tail (0.80); 19 of their 54 windows are looked into, for 27-33 %
more time on those recordings (the conversations and the interview in five versions, 38 extra
encoder passes: ``bench/unnamed_language.py --cost``)."""
LAST_STARTS_HEARD = 3
"""In a window looked into, how many segment starts (from the last) the rest of the window is
heard from before it is taken to hold no change."""
SHORTEST_REST_SECONDS = 4.0
"""The least audio heard on its own to tell a window's languages: the language of a shorter
stretch is heard less reliably."""


@dataclass
class _Hearing:
    """What one thread knows of the window it decodes, between faster-whisper's calls."""

    encoded: Any = None
    """The window's encoder output, until its language is heard (in :meth:`get_prompt`)."""
    features: np.ndarray | None = None
    """The window's mel features, to hear a stretch of it on its own."""
    before: str | None = None
    """The language of the text before the window (its prompt)."""
    unsure: bool = False
    """Heard less surely than ``mixed_below``: looked into once decoded."""
    again: tuple[str, int] | None = None
    """Decode the window again, in this language, and end it at this mel frame."""
    end_at: int | None = None
    """The window decoded again ends at this mel frame."""
    again_at: int = -1
    """The ``seek`` of the window last decoded again (once per window)."""
    heard: tuple[str, float] | None = None
    """The window's language and its probability, when already heard (the first window)."""
    current: str | None = None
    """The language the window is being decoded in, once decided (its segments' language)."""


@dataclass
class _FirstWindow:
    """A recording's first window as encoded to hear its language, kept for its decoding."""

    features: np.ndarray
    """The window's mel features, as the encoder took them."""
    encoded: Any
    """Its encoder output."""
    heard: tuple[str, float] | None = None
    """The language heard in it, and how surely."""

    def holds(self, features: np.ndarray) -> bool:
        """Whether ``features`` is this window (decoding's copy of it, cut the same way)."""
        return self.features.shape == features.shape and np.array_equal(self.features, features)


class WindowLanguageModel(WhisperModel):
    """faster-whisper's :class:`WhisperModel`, which, inside :meth:`hearing_each_window`, hears
    each window's language before it decodes it, and where a window holds a change of
    language, ends it there.

    faster-whisper decodes a recording's windows one after another in the thread that consumes
    its segments, encoding each window (:meth:`encode`) just before asking for its prompt
    (:meth:`get_prompt`), and splitting what it decoded into segments and the next window's
    start (:meth:`_split_segments_by_timestamps`); what is heard is kept for that thread in
    between (a :class:`_Hearing`). A recording in no named language has its first window
    encoded once, for its language and its words (:meth:`detect_language`).
    """

    mixed_below: float = MIXED_BELOW
    """:data:`MIXED_BELOW` for this model (0: no window is looked into, as in session 29)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread = threading.local()
        self._least = round(SHORTEST_REST_SECONDS * self.frames_per_second)

    @property
    def model(self) -> Any:
        """The CTranslate2 model (or the gate or batcher before it) as this thread's job sees
        it: within :meth:`detecting_among`, one that hears languages among the job's only.
        Every detection here and in faster-whisper asks it, so they all choose among them."""
        inner = self._ct2
        thread = self.__dict__.get("_thread")
        among = getattr(thread, "among", None) if thread is not None else None
        return inner if among is None else _Among(inner, among)

    @model.setter
    def model(self, model: Any) -> None:
        self._ct2 = model

    @contextlib.contextmanager
    def detecting_among(self, languages: Iterable[str]) -> Iterator[None]:
        """Within this block, the language this thread's job is heard in (its recording's,
        and each window's) is one of ``languages`` (ISO 639-1; all Whisper's when empty)."""
        self._thread.among = frozenset(f"<|{code}|>" for code in languages) or None
        try:
            yield
        finally:
            self._thread.among = None

    @contextlib.contextmanager
    def hearing_each_window(self, enabled: bool = True) -> Iterator[None]:
        """Within this block, the windows this thread decodes are heard for their language
        (consume the segments inside it)."""
        self._thread.hearing = _Hearing() if enabled else None
        try:
            yield
        finally:
            # and the first window's encoder output kept since its language was heard, if
            # decoding ended before it (a GPU's memory, on CUDA)
            self._thread.hearing = self._thread.first = None

    def transcribe(self, audio: Any, *args: Any, **kwargs: Any) -> Any:
        """faster-whisper's, its language heard (when not named) on the window it decodes
        first: with ``clip_timestamps`` (:mod:`~speechgw.backends.whisper_clips`), the first
        clip's."""
        clips = kwargs.get("clip_timestamps")
        if isinstance(clips, list) and len(clips) >= 2:
            start, end = (round(t * self.frames_per_second) for t in clips[:2])
            self._thread.first_clip_frames = end - start
        try:
            return super().transcribe(audio, *args, **kwargs)
        finally:  # the language is heard in the call; decoding comes later
            self._thread.first_clip_frames = None

    def detect_language(
        self,
        audio: np.ndarray | None = None,
        features: np.ndarray | None = None,
        vad_filter: bool = False,
        vad_parameters: Any = None,
        language_detection_segments: int = 1,
        language_detection_threshold: float = 0.5,
    ) -> tuple[str, float, list[tuple[str, float]]]:
        """faster-whisper hears a recording's language from its first window's encoder
        output, then encodes that window again to decode it: 0.45 s of base's 0.6-1.4 s per
        short request on two CPU cores (BENCHMARKS.md, "The first window encoded once"). Here
        the window is heard as decoding will take it (its content frames: less the one frame
        the feature extractor makes past the audio's end), and its encoder output and
        language are kept (a :class:`_FirstWindow`) for decoding's first :meth:`encode` in
        this thread."""
        detecting = audio is None and features is not None and language_detection_segments == 1
        if features is not None and detecting:
            frames = min(self.feature_extractor.nb_max_frames, max(1, features.shape[-1] - 1))
            clip: int | None = getattr(self._thread, "first_clip_frames", None)
            features = features[..., : frames if clip is None else max(1, min(frames, clip))]
        self._thread.detecting = detecting
        try:
            language, probability, languages = super().detect_language(
                audio=audio,
                features=features,
                vad_filter=vad_filter,
                vad_parameters=vad_parameters,
                language_detection_segments=language_detection_segments,
                language_detection_threshold=language_detection_threshold,
            )
        finally:
            self._thread.detecting = False
        first: _FirstWindow | None = getattr(self._thread, "first", None)
        if detecting and first is not None:
            first.heard = (language, probability)
        return language, probability, languages

    def encode(self, features: np.ndarray) -> Any:
        thread = self._thread
        if getattr(thread, "detecting", False):
            encoded = super().encode(features)
            thread.first = _FirstWindow(features, encoded)
            return encoded  # heard before decoding starts: not yet the window's hearing
        first: _FirstWindow | None = getattr(thread, "first", None)
        thread.first = None
        if first is not None and first.holds(features):
            encoded, heard = first.encoded, first.heard
        else:
            encoded, heard = super().encode(features), None
        hearing: _Hearing | None = getattr(thread, "hearing", None)
        if hearing is not None:
            hearing.encoded, hearing.features, hearing.heard = encoded, features, heard
        return encoded

    def get_prompt(
        self, tokenizer: Any, previous_tokens: list[int], *args: Any, **kwargs: Any
    ) -> list[int]:
        hearing: _Hearing | None = getattr(self._thread, "hearing", None)
        if hearing is None or tokenizer.language is None:
            pass
        elif hearing.again is not None:  # the window again, in its first part's language
            language, hearing.end_at = hearing.again
            hearing.again = hearing.encoded = None
            _use(tokenizer, language)
            if language != hearing.before:
                previous_tokens = []
        elif hearing.encoded is not None:
            encoded, hearing.encoded = hearing.encoded, None
            hearing.before = tokenizer.language_code
            if hearing.heard is not None:  # the first window, heard for the recording
                language, probability = hearing.heard
            else:
                token, probability = self.model.detect_language(encoded)[0][0]
                language = token[2:-2]  # "<|de|>"
            hearing.unsure = probability < self.mixed_below
            if language != tokenizer.language_code and probability >= SWITCH_PROBABILITY:
                _use(tokenizer, language)
                previous_tokens = []  # the other language's text
            # For whoever asks why a window came out in the language it did (and for
            # bench/unnamed_language.py --detections, which prints these).
            _LOGGER.debug(
                "window heard as %s at %.2f: decoded as %s",
                language,
                probability,
                tokenizer.language_code,
            )
        if hearing is not None and tokenizer.language is not None:
            hearing.current = tokenizer.language_code
        return super().get_prompt(tokenizer, previous_tokens, *args, **kwargs)

    def window_language(self) -> str | None:
        """The language this thread's window is decoded in, while its segments come (within
        :meth:`hearing_each_window`); None where it is not heard window by window."""
        hearing: _Hearing | None = getattr(self._thread, "hearing", None)
        return hearing.current if hearing is not None else None

    def _split_segments_by_timestamps(  # type: ignore[override]
        self,
        tokenizer: Any,
        tokens: list[int],
        time_offset: float,
        segment_size: int,
        segment_duration: float,
        seek: int,
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """faster-whisper's split of a decoded window into segments and its next ``seek``; a
        window that holds a change of language ends at the segment where it changes."""
        split = super()._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=tokens,
            time_offset=time_offset,
            segment_size=segment_size,
            segment_duration=segment_duration,
            seek=seek,
        )
        segments = split[0]
        hearing: _Hearing | None = getattr(self._thread, "hearing", None)
        if hearing is None:
            return split
        if hearing.end_at is not None:  # decoded again, its audio up to the change only
            end, hearing.end_at = hearing.end_at, None
            ends = time_offset + end / self.frames_per_second
            return [s for s in segments if s["start"] < ends], seek + end, False
        if not hearing.unsure:
            return split
        hearing.unsure = False
        pieces = self._pieces(split, time_offset, segment_size)
        languages = self._two_languages(tokenizer.language_code, pieces, segment_size)
        change = None if languages is None else self._where_it_changes(*languages, pieces)
        if change is None or hearing.again_at == seek:
            return split
        first, frame = languages[0], change  # type: ignore[index]
        _LOGGER.debug(
            "the language changes at %.2f s: the window is decoded again up to there, as %s",
            time_offset + frame / self.frames_per_second,
            first,
        )
        hearing.again, hearing.again_at = (first, frame), seek
        return [], seek, False  # faster-whisper decodes the window again

    def generate_with_fallback(self, encoder_output: Any, *args: Any, **kwargs: Any) -> Any:
        hearing: _Hearing | None = getattr(self._thread, "hearing", None)
        if hearing is not None and hearing.end_at is not None and hearing.features is not None:
            # the window decoded again hears its audio up to the change only, as if the
            # recording ended there: none of the other language's sounds to write
            head = pad_or_trim(hearing.features[..., : hearing.end_at])
            encoder_output = super().encode(head)  # not self.encode
        return super().generate_with_fallback(encoder_output, *args, **kwargs)

    def add_word_timestamps(
        self, segments: list[list[dict[str, Any]]], *args: Any, **kwargs: Any
    ) -> Any:
        if not any(segments):  # a window to decode again (faster-whisper expects segments)
            return kwargs.get("last_speech_timestamp")
        return super().add_word_timestamps(segments, *args, **kwargs)

    def _pieces(
        self, split: tuple[list[dict[str, Any]], int, bool], time_offset: float, length: int
    ) -> list[tuple[int, int, int]]:
        """A decoded window's stretches of audio, as (segment index, first and end mel
        frame): each segment's, and the rest of the window after the last segment when Whisper
        ended the window there and enough is left to hear (it skips that rest: a second
        language after the first was often left out so)."""
        segments, _, single_timestamp_ending = split
        fps = self.frames_per_second
        starts = [round((s["start"] - time_offset) * fps) for s in segments]
        ends = [*starts[1:], round((segments[-1]["end"] - time_offset) * fps)] if segments else []
        pieces = [
            (i, max(0, a), min(b, length))
            for i, (a, b) in enumerate(zip(starts, ends, strict=True))
        ]
        if single_timestamp_ending and pieces and length - pieces[-1][2] >= self._least:
            pieces.append((len(segments), pieces[-1][2], length))
        return [(i, a, b) for i, a, b in pieces if b > a]

    def _two_languages(
        self, language: str, pieces: list[tuple[int, int, int]], length: int
    ) -> tuple[str, str] | None:
        """The languages of a window decoded in ``language`` (``length`` mel frames of audio)
        before and after a change, when Whisper is surely of a change; else None.

        The audio from the last piece's start to the window's end is heard first, then from
        the one before (a longer stretch is heard more surely), up to
        :data:`LAST_STARTS_HEARD` of them, while at least :data:`SHORTEST_REST_SECONDS`
        remain. When it is surely in another language than ``language``, the window changes
        from ``language`` to that one. When it is surely in ``language``, the audio before it
        is heard too: when that is surely the same language, the window holds no change (one
        to four extra encoder passes in such a window)."""
        starts = [a for _, a, _ in pieces[1:] if a <= length - self._least]
        then, where = None, len(starts)
        while then is None and where > max(0, len(starts) - LAST_STARTS_HEARD):
            where -= 1
            then = self._heard(starts[where], length)
        if then is None:
            return None
        if then != language:
            return language, then
        heads = [a for a in starts[: where + 1] if a >= self._least]
        first = self._heard(0, heads[-1]) if heads else then
        if first is None and heads[0] != heads[-1]:  # the longest part before was mixed
            first = self._heard(0, heads[0])
        return None if first is None or first == then else (first, then)

    def _where_it_changes(
        self, first: str, then: str, pieces: list[tuple[int, int, int]]
    ) -> int | None:
        """The mel frame where a window goes from language ``first`` to ``then``, at a
        piece's start: each piece is heard on its own, for which of the two it is the more
        like, and the change is put where the fewest pieces are on the wrong side of it (a
        piece of a few seconds is heard less surely than a long stretch, but which of two
        languages it is more like is clear enough)."""
        leans = [self._leans_to(then, first, a, b) for _, a, b in pieces]
        # pieces before the change that lean to ``then``, and after it to ``first``
        wrong = [sum(leans[:t]) + len(leans) - t - sum(leans[t:]) for t in range(1, len(leans))]
        if not wrong:
            return None
        frame = pieces[1 + wrong.index(min(wrong))][1]
        return frame if frame > 0 else None

    def _heard(self, start: int, end: int) -> str | None:
        """The language of the window's mel frames ``start:end`` on their own, when Whisper
        is sure of it (:data:`SWITCH_PROBABILITY`)."""
        token, probability = self._languages(start, end)[0]
        return token[2:-2] if probability >= SWITCH_PROBABILITY else None

    def _leans_to(self, language: str, other: str, start: int, end: int) -> bool:
        """Whether mel frames ``start:end`` of the window sound more like ``language`` than
        ``other``."""
        probabilities = dict(self._languages(start, end))
        return probabilities.get(f"<|{language}|>", 0.0) > probabilities.get(f"<|{other}|>", 0.0)

    def _languages(self, start: int, end: int) -> list[tuple[str, float]]:
        """Whisper's language tokens for the window's mel frames ``start:end`` heard on their
        own, with their probabilities, the likeliest first (one encoder pass)."""
        features = self._thread.hearing.features
        encoded = super().encode(pad_or_trim(features[..., start:end]))  # not self.encode
        return self.model.detect_language(encoded)[0]


class _Among:
    """A CTranslate2 Whisper model whose language detection answers among some languages
    only, their probabilities scaled to sum to 1 (the thresholds that decide a window's
    language then weigh them against each other); every other call passes through."""

    def __init__(self, inner: Any, tokens: frozenset[str]) -> None:
        self._inner = inner
        self._tokens = tokens

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def detect_language(self, *args: Any, **kwargs: Any) -> list[list[tuple[str, float]]]:
        found = self._inner.detect_language(*args, **kwargs)
        return [_among(heard, self._tokens) for heard in found]


def _among(heard: list[tuple[str, float]], tokens: frozenset[str]) -> list[tuple[str, float]]:
    """``heard`` (language tokens and probabilities, the likeliest first) among ``tokens``."""
    kept = [(token, p) for token, p in heard if token in tokens]
    total = sum(p for _, p in kept)
    if total <= 0.0:  # none of them is a language the model knows: what it heard
        return heard
    return [(token, p / total) for token, p in kept]


def _use(tokenizer: Any, language: str) -> None:
    """Decode in ``language`` from here on (faster-whisper's tokenizer is the job's own)."""
    tokenizer.language = tokenizer.tokenizer.token_to_id(f"<|{language}|>")
    tokenizer.language_code = language
