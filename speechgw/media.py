"""Audio files in any container and codec (mp3, m4a, ogg/opus, webm, flac, wav...), decoded by
FFmpeg through PyAV into what backends take: 16 kHz mono float32.

A protocol that accepts whatever a phone or a browser recorded uses this. A PCM or float WAV
goes through the batch protocol's exact reader (:func:`speechgw.audio.read_wav`): the same
samples as over the batch protocol, and 0.1 ms instead of FFmpeg's 7 ms for 10 s (probing the
container alone costs 2.5 ms). Everything else goes to PyAV, which is what faster-whisper
decodes files with; its resampler turns every rate and channel layout into 16 kHz mono frame
by frame, so nothing larger than the output is ever held, and decoding stops as soon as the
audio runs past the caller's limit: a small, highly compressed upload cannot expand into
gigabytes.
"""

from __future__ import annotations

import io

import numpy as np

from .audio import read_wav
from .errors import AudioTooLong, InvalidAudio
from .jobs import SAMPLE_RATE

__all__ = ["decode_media"]


def decode_media(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """The first audio stream of the file ``data`` as mono float32 samples, and their rate
    (a WAV's own; 16 kHz for what FFmpeg decodes).

    Frames FFmpeg cannot decode in the middle of a stream are skipped (as faster-whisper
    does); a file with no decodable audio at all is refused.

    Raises:
        InvalidAudio: not a media file FFmpeg knows, or one without an audio stream.
        AudioTooLong: FFmpeg's audio lasts more than ``max_seconds`` (a WAV's length is
            the caller's to check: it is known before anything is decoded).
    """
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        try:
            samples, info = read_wav(data)
        except InvalidAudio as wav_error:
            # a WAV codec the reader does not know (ADPCM, GSM 6.10...): FFmpeg may; if it
            # cannot either, the reader's reason is the more precise one
            try:
                return _decode_ffmpeg(data, max_seconds), SAMPLE_RATE
            except InvalidAudio:
                raise wav_error from None
        return samples, info.sample_rate
    return _decode_ffmpeg(data, max_seconds), SAMPLE_RATE


def _decode_ffmpeg(data: bytes, max_seconds: float) -> np.ndarray:
    import av  # FFmpeg's libraries load on first use, not at import of the server

    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidAudio(f"the file could not be decoded as audio ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise InvalidAudio("the file holds no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in _frames(container, stream):
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                chunks.append(samples)
                total += samples.size
            if total > limit:
                raise AudioTooLong(
                    f"the audio lasts more than {max_seconds:g} s; the limit is {max_seconds:g} s"
                )
        for out in resampler.resample(None):  # what the resampler still holds
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _frames(container, stream):  # type: ignore[no-untyped-def]
    """Decoded frames, skipping packets FFmpeg rejects as invalid data mid-stream."""
    import av

    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words ("Invalid data found when processing input"), without errno and
    the placeholder file name PyAV adds for in-memory files."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text[:120].lower() or type(exc).__name__
