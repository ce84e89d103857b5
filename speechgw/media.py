"""Audio files in any container and codec (mp3, m4a, ogg/opus, webm, flac, wav...), decoded
into what backends take.

A protocol that accepts whatever a phone or a browser recorded uses this. A PCM or float WAV
goes through the batch protocol's exact reader (:func:`speechgw.audio.read_wav`), in this
process: the same samples as over the batch protocol, and 0.1 ms instead of FFmpeg's 7 ms for
10 s. Everything else goes to FFmpeg (:mod:`speechgw.ffmpeg`, through PyAV, which is what
faster-whisper decodes files with), in a decoder process of :data:`DECODERS`: a crash or a
hang in FFmpeg then costs one request, not the server.
"""

from __future__ import annotations

import atexit
import os

import numpy as np

from .audio import UnknownWavEncoding, read_wav
from .decoder_pool import DecoderFailed, DecoderPool
from .errors import InvalidAudio
from .jobs import SAMPLE_RATE

__all__ = ["DECODERS", "decode_media", "decode_wav"]


def _cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


DECODERS = DecoderPool(size=min(8, max(2, _cores())))
"""The server's FFmpeg decoder processes: one per core (at least 2, so that a long file does
not hold up a short one; at most 8, each holding about 60 MB when idle). One pool for the
whole server process, as decoding is per file and knows no config."""
atexit.register(DECODERS.close)


def decode_media(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """The first audio stream of the file ``data`` as mono float32 samples, and their rate
    (a WAV's own; 16 kHz for what FFmpeg decodes).

    Packets FFmpeg cannot decode in the middle of a stream are skipped (as faster-whisper
    does); a file with no decodable audio at all is refused.

    Raises:
        InvalidAudio: not a media file FFmpeg knows, one without an audio stream or without
            a decoder for it, a sample rate outside 8-384 kHz, or nothing decodable.
        AudioTooLong: FFmpeg's audio lasts more than ``max_seconds`` (a WAV's length is
            the caller's to check: it is known before anything is decoded).
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return decode_wav(data, max_seconds)
    return DECODERS.decode(data, max_seconds), SAMPLE_RATE


def decode_wav(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """A RIFF WAV file in any codec, as mono float32 samples and their rate: PCM, float and
    G.711 through the exact reader (:func:`speechgw.audio.read_wav`, at the file's rate), the
    codecs it does not know (IMA and MS ADPCM, GSM 6.10: telephony recorders write them)
    through FFmpeg (at 16 kHz).

    Raises:
        InvalidAudio: as :func:`~speechgw.audio.read_wav` says; for a codec FFmpeg cannot
            decode either, the reader's reason (it names the format tag).
        AudioTooLong: FFmpeg's audio lasts more than ``max_seconds``.
    """
    try:
        samples, info = read_wav(data)
    except UnknownWavEncoding as wav_error:
        # A corrupt header is not passed on, only an unknown codec: FFmpeg would believe the
        # header (a resampler built for a "rate" of 1 GHz took 10 s of CPU)
        try:
            return DECODERS.decode(data, max_seconds), SAMPLE_RATE
        except DecoderFailed:
            raise
        except InvalidAudio:
            raise wav_error from None
    return samples, info.sample_rate
