"""The stretches of a recording worth decoding: long silences, hums and hisses left out.

faster-whisper decodes a whole recording window by window, each window starting where the
last one's last timestamp fell. Whisper must begin a window's first segment within its first
second (``max_initial_timestamp``), so a window that starts in a long stretch without speech
times the speech after it from the window's start (5 s of silence and then jfk: jfk at 0.0 s,
not 4.9 s), and it fills such a stretch with words: 25 s of silence, hiss or mains hum after
jfk came back as "You" or as jfk's sentence again, on the text before it as its prompt; 40 s
of silence between two sentences as the second sentence three times (BENCHMARKS.md, "Long
stretches without speech"). Silero VAD (faster-whisper's, as its ``vad_filter`` and
``BatchedInferencePipeline`` use) finds the speech; the stretches between it that are long are
left out with faster-whisper's ``clip_timestamps``, so each stretch of speech is decoded from
its start, on the recording's clock, with the text before it as its prompt as before. Shorter
pauses stay inside a clip: a recording with none that long, and no more than
:data:`EDGE_SECONDS` without speech at its ends, decodes exactly as before (all but two of
../shared/audio's real recordings, which lose their first 0.65 and 0.78 s).
"""

from __future__ import annotations

import math

import numpy as np

from .whisper_vad import Heard, hear

__all__ = ["EDGE_SECONDS", "PEAK", "SPEECH_THRESHOLD", "listen", "listening_gain", "speech_clips"]

EDGE_SECONDS = 0.5
"""Audio without speech at a recording's start or end longer than this is left out. Whisper
writes a window's first timestamp as 0.00 after a short lead, so the first segment started
where the audio did: with 1.0 here, up to 1.3 s before the speech (a sentence after 1.2 s of
silence); with 0.5, at most 0.7 s (Silero's 0.4 s of padding is left before the speech), and
the word errors of 36 such recordings went 22 -> 19 (``bench/long_stretches.py --edges``)."""

SPEECH_THRESHOLD = 0.2
"""Silero's speech probability that counts as speech here (its own default: 0.5). Leaving
speech out costs its words, and decoding a silence costs at worst what it did before, so the
line is low: at 0.5 Silero heard no speech in 4-18 s of the 1949 interview made 30-40 dB
quieter, noisy or reverberant, and left out they cost words (1061 -> 1140 errors over five
such versions); at 0.2, with :data:`PEAK` as well, none of four of them, while 25 s of
silence, hiss, mains hum or a steady tone between two sentences was still left out whole but
for Silero's 0.4 s of padding (BENCHMARKS.md, "Long stretches without speech")."""
PEAK = 0.5
"""Silero hears the recording at this peak (the 99.9th percentile of its samples, made up to
40 dB louder at most): it heard far less of the interview 40 dB quieter than as recorded."""

BLOCK_SECONDS = 300.0
"""Silero hears a long recording this much at a time (for its clips, and for the windows of
one cut at its pauses): over the whole of a 29-minute upload at once it held 362 MB (its
windows, and the louder copy), more than the recording's features take; a block at a time,
62 MB. The stretches of speech are found in all the blocks' probabilities together, so none
is cut where a block ends (only Silero's memory of the audio before starts afresh there)."""

_FRAMES_PER_SECOND = 100  # Whisper's mel frames (10 ms hop)


def listening_gain(audio: np.ndarray) -> np.float32:
    """What brings ``audio`` up to :data:`PEAK` for Silero to hear it (never down, at most
    40 dB up): Silero hears much less speech in a quiet recording than in the same one loud."""
    loudest = float(np.percentile(np.abs(audio[::8]), 99.9)) if len(audio) else 0.0
    return np.float32(min(100.0, max(1.0, PEAK / loudest)) if loudest > 0 else 1.0)


def listen(
    audio: np.ndarray,
    *,
    threshold: float = SPEECH_THRESHOLD,
    min_silence_ms: int = 2000,
    max_speech_s: float = math.inf,
) -> Heard:
    """Silero over a recording brought up to :data:`PEAK`, :data:`BLOCK_SECONDS` at a time:
    its probabilities, and the stretches of speech faster-whisper's rule finds with these
    options (by default those :func:`speech_clips` joins; the windows of a recording cut at
    its pauses ask for others)."""
    return hear(
        audio,
        gain=float(listening_gain(audio)),
        block_seconds=BLOCK_SECONDS,
        threshold=threshold,
        min_silence_ms=min_silence_ms,
        max_speech_s=max_speech_s,
    )


def speech_clips(
    audio: np.ndarray, skip_seconds: float, heard: Heard | None = None, sample_rate: int = 16000
) -> list[float] | None:
    """``clip_timestamps`` for faster-whisper (start, end, start, end... in seconds): the
    stretches of ``audio`` from its speech to its speech, split where Silero hears none for
    ``skip_seconds`` or longer, and without more than :data:`EDGE_SECONDS` of non-speech at
    either end. None where there is nothing to leave out (the whole recording is one clip) or
    no speech is heard at all (then Whisper's own no-speech rule decides, as before).
    ``heard``: what :func:`listen` heard in ``audio``, if it has been asked already.

    Silero's chunks carry 0.4 s of padding either side and join across pauses under 2 s
    (faster-whisper's defaults for its ``vad_filter``), so a gap of ``skip_seconds`` between
    two chunks is 0.8 s more of audio without speech. Each time is put a quarter frame past a
    mel frame: faster-whisper reads a clip's start both by truncating (where it hears the
    language) and by rounding (where it decodes), and so both read the same frame.
    """
    chunks = (heard or listen(audio)).spans
    if not chunks:
        return None
    clips: list[list[int]] = []
    for start, end in chunks:
        if clips and start - clips[-1][1] < skip_seconds * sample_rate:
            clips[-1][1] = end
        else:
            clips.append([start, end])
    edge = EDGE_SECONDS * sample_rate
    if clips[0][0] <= edge:
        clips[0][0] = 0
    if len(audio) - clips[-1][1] <= edge:
        clips[-1][1] = len(audio)
    if clips == [[0, len(audio)]]:
        return None
    per_frame = sample_rate // _FRAMES_PER_SECOND
    return [(s // per_frame + 0.25) / _FRAMES_PER_SECOND for clip in clips for s in clip]
