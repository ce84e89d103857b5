"""Whether what Whisper wrote was spoken: the segments kept, and those dropped as words written
into silence, noise or tones.

Whisper rates each 30 s window it decodes by how likely it is to hold no speech
(``no_speech_prob``), and faster-whisper drops a window only when that is above 0.6 *and* its
words are unsure (``avg_logprob`` below -1). Into silence and hiss it writes "You" with
words it is not unsure of (-0.75 to -0.99), and so keeps them. Whisper's scores alone cannot
settle it: a word said briskly alone, or real speech after a pause in a long recording, is
rated as likely not speech as that "You". Silero VAD (the model faster-whisper ships) tells the
two apart, so where Whisper is in doubt it is asked, once per utterance or window, and only
then (rarely, for speech); a recording's window is not heard again where Silero heard the
whole recording already (for its clips and times, or to cut it at its pauses).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from speechgw import silero
from speechgw.jobs import SAMPLE_RATE

from .whisper_batching import WINDOW_SECONDS
from .whisper_clips import listening_gain

if TYPE_CHECKING:
    from .whisper import WhisperOptions

__all__ = [
    "HEARD_SPEECH_WINDOWS",
    "SURE_LOG_PROB",
    "UNSURE_LOG_PROB",
    "RecordingCheck",
    "UtteranceCheck",
]

UNSURE_LOG_PROB = -1.25
"""Below this ``avg_logprob`` Whisper is unsure of its words. Below faster-whisper's own line
(-1, where it tries a higher temperature), because a word said alone can end there: tiny.en
heard "one" at -1.01, base "thanks" at -1.08, and words cut out of real recordings, heard
right, went down to -1.21; words written into tones scored -1.29 to -2.04: the line is midway
(``bench/non_speech.py``, also ``--real-words``)."""
SURE_LOG_PROB = -1.0
"""At or above this ``avg_logprob`` Whisper is sure enough of its words that a second opinion on
whether they were spoken may keep them: faster-whisper's own line, below which it decodes again
at a higher temperature."""
HEARD_SPEECH_WINDOWS = 3
"""Silero VAD windows (32 ms each, so about 0.1 s) rated as speech that make an utterance (or a
recording's window) one with speech in it, for ``utterance_vad_no_speech_prob``,
``utterance_unheard_no_speech_prob`` and ``recording_no_speech_prob``: each of 465 answers
said alone had 5 and more, most words clipped out of recordings 3 and more; of the sox noises
and tones Whisper wrote words into, only a chord with tremolo had any
(``bench/non_speech.py``)."""
_SAMPLES_PER_FRAME = SAMPLE_RATE // 100  # a segment's ``seek`` counts Whisper's 10 ms frames


class UtteranceCheck:
    """Whether a segment of a stream's utterance is speech worth a reply, by Whisper's own
    scores (``no_speech_prob``, ``avg_logprob``) and, where those leave it in doubt, Silero
    VAD's hearing of the utterance (asked once, and only if needed, which is rare)."""

    def __init__(self, options: WhisperOptions, audio: np.ndarray) -> None:
        self._limit = options.utterance_no_speech_prob
        self._unsure_limit = options.utterance_unsure_no_speech_prob
        self._vad_limit = options.utterance_vad_no_speech_prob
        self._unheard_limit = options.utterance_unheard_no_speech_prob
        self._audio = audio
        self._heard: bool | None = None

    def __call__(self, segment: Any) -> bool:
        no_speech, log_prob = segment.no_speech_prob, segment.avg_logprob
        if log_prob < UNSURE_LOG_PROB and no_speech > self._unsure_limit:
            return False
        if no_speech <= self._limit:
            return no_speech <= self._unheard_limit or self._heard_speech()
        if no_speech > self._vad_limit or log_prob < SURE_LOG_PROB:
            return False
        return self._heard_speech()

    def _heard_speech(self) -> bool:
        if self._heard is None:
            self._heard = silero.speech_windows(self._audio) >= HEARD_SPEECH_WINDOWS
        return self._heard


class RecordingCheck:
    """Whether a segment of a recording is speech worth keeping: unless Whisper rates its
    window more likely than ``recording_no_speech_prob`` to hold no speech, yes; if it does,
    only when Silero VAD hears about 0.1 s of speech in that window.

    Silence, a quiet room's hiss or one click came back from the default model as "You"
    (rated 0.65-0.96: words written into nothing), which a user who sent a recording in which
    nobody spoke reads as speech. Real speech can be rated as high (after a pause, in context),
    and Silero hears it: so the window is dropped only on both opinions. Silero hears the
    recording brought up to a normal level (:func:`~.whisper_clips.listening_gain`), as
    ``skip_non_speech_seconds`` does, so that a quiet speaker is heard; where it has heard the
    recording already (for its clips and times, or its windows), what it heard is counted,
    and it is not asked again; else a window is heard once, whatever its segments.
    """

    def __init__(
        self, limit: float, audio: np.ndarray, probabilities: np.ndarray | None = None
    ) -> None:
        """``probabilities``: Silero's for each 32 ms of ``audio`` brought up to a normal level
        (:class:`~.whisper_vad.Heard`'s), where they are known."""
        self._limit = limit
        self._audio = audio
        self._probabilities = probabilities
        self._gain: np.float32 | None = None
        self._heard: dict[int, bool] = {}

    def __call__(self, segment: Any) -> bool:
        if segment.no_speech_prob <= self._limit:
            return True
        heard = self._heard.get(segment.seek)
        if heard is None:
            heard = self._heard[segment.seek] = self._heard_speech(segment.seek)
        return heard

    def _heard_speech(self, seek: int) -> bool:
        """Whether Silero hears speech in the window that begins at frame ``seek`` (its 30 s,
        or to the recording's end: a clip's window may end sooner, and hearing more only keeps
        more)."""
        start = seek * _SAMPLES_PER_FRAME
        length = int(WINDOW_SECONDS * SAMPLE_RATE)
        if self._probabilities is not None:
            first = start // silero.WINDOW
            heard = self._probabilities[first : first + math.ceil(length / silero.WINDOW)]
            return silero.speech_count(heard) >= HEARD_SPEECH_WINDOWS
        window = self._audio[start : start + length]
        if self._gain is None:
            self._gain = listening_gain(self._audio)
        if self._gain > 1:
            window = np.clip(window * self._gain, -1.0, 1.0)
        return silero.speech_windows(window) >= HEARD_SPEECH_WINDOWS
