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

from .audio import UnknownWavEncoding, check_rate, read_wav
from .errors import AudioTooLong, InvalidAudio
from .jobs import SAMPLE_RATE

__all__ = ["decode_media", "decode_wav"]


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
    return _decode_ffmpeg(data, max_seconds), SAMPLE_RATE


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
            return _decode_ffmpeg(data, max_seconds), SAMPLE_RATE
        except InvalidAudio:
            raise wav_error from None
    return samples, info.sample_rate


def _decode_ffmpeg(data: bytes, max_seconds: float) -> np.ndarray:
    import av  # FFmpeg's libraries load on first use, not at import of the server

    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        # a tag that is not UTF-8 (a Latin-1 title) must not refuse the file; PyAV 19 has no
        # such argument, and is kept out for a worse fault (pyproject.toml says which)
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidAudio(f"the file could not be decoded as audio ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise InvalidAudio("the file holds no audio stream")
        stream = container.streams.audio[0]
        _open_decoder(stream)
        to_16k = _ToMono16k()
        for frame in _frames(container, stream):
            for samples in to_16k.resample(frame):
                chunks.append(samples)
                total += samples.size
            if total > limit:
                raise AudioTooLong(
                    f"the audio lasts more than {max_seconds:g} s; the limit is {max_seconds:g} s"
                )
        chunks.extend(to_16k.flush())
    if not any(chunk.size for chunk in chunks):
        raise InvalidAudio("the file holds no audio FFmpeg could decode")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _open_decoder(stream) -> None:  # type: ignore[no-untyped-def]
    """Refuse, before any packet is read, a stream FFmpeg has no decoder for, one whose
    decoder will not start on the stream's parameters, and one whose header claims a rate
    outside what speechgw takes (resampling from a "rate" of 1 GHz costs seconds of CPU)."""
    import av

    codec = stream.codec_context
    if codec is None:
        raise InvalidAudio("FFmpeg has no decoder for the file's audio codec")
    if codec.sample_rate:  # 0: not in the header, known from the first frame
        check_rate(codec.sample_rate, "the audio's sample rate")
    try:
        codec.open()
    except av.error.FFmpegError as exc:
        raise InvalidAudio(
            f"the {codec.name} decoder could not start on this file ({_reason(exc)})"
        ) from None


class _ToMono16k:
    """PyAV's resampler, rebuilt whenever the frames' format, channel layout or rate
    change: its setup is fixed by the first frame it sees, and a stream may change midway
    (mp3 files joined end to end, a capture that switches from stereo to mono). Every
    frame's rate is checked first, for the same reason as the header's."""

    def __init__(self) -> None:
        self._resampler = None
        self._input: tuple[str, str, int] | None = None

    def resample(self, frame) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
        import av

        check_rate(frame.sample_rate, "the audio's sample rate")
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        tail = []
        if shape != self._input:
            tail = self.flush()
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self._input = shape
        return tail + self._pcm(self._resampler.resample(frame))

    def flush(self) -> list[np.ndarray]:
        """What the resampler still holds of the frames given so far."""
        if self._resampler is None:
            return []
        return self._pcm(self._resampler.resample(None))

    @staticmethod
    def _pcm(frames) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
        return [out.to_ndarray().reshape(-1) for out in frames]


def _frames(container, stream):  # type: ignore[no-untyped-def]
    """Decoded frames. A packet the decoder rejects (FFmpeg's invalid data, or the EPERM
    AAC's decoder answers a mangled packet with) is skipped; an error of the container
    itself ends the audio where it happened, keeping what came before it, as a truncated
    file does."""
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError:
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            continue
        yield from frames


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words ("Invalid data found when processing input"), without errno and
    the placeholder file name PyAV adds for in-memory files."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text[:120].lower() or type(exc).__name__
