"""FFmpeg's decoders, through PyAV: any container and codec FFmpeg knows, as 16 kHz mono
float32, with the audio's length bounded as it is decoded.

This runs in the decoder processes (:mod:`speechgw.decoder_pool`), never in the server's own:
FFmpeg is C code reading whatever a client sent, and a fault there (PyAV 19 crashed on a
decoder that would not start) must end one request, not the server. So it imports only what
decoding needs (NumPy, PyAV and speechgw's error types), and a process starts in 0.2 s.
PyAV's resampler turns every rate and channel layout into 16 kHz mono frame by frame, so
nothing larger than the output is ever held, and decoding stops as soon as the audio runs
past the caller's limit: a small, highly compressed upload cannot expand into gigabytes.
"""

from __future__ import annotations

import io

import numpy as np

from .errors import AudioTooLong, InvalidAudio
from .jobs import SAMPLE_RATE
from .rates import check_rate

__all__ = ["decode"]


def decode(data: bytes, max_seconds: float) -> np.ndarray:
    """The first audio stream of the file ``data``, as 16 kHz mono float32 samples.

    Packets FFmpeg cannot decode in the middle of a stream are skipped (as faster-whisper
    does); a file with no decodable audio at all is refused.

    Raises:
        InvalidAudio: not a media file FFmpeg knows, one without an audio stream or without
            a decoder for it, a sample rate outside 8-384 kHz, or nothing decodable.
        AudioTooLong: the audio lasts more than ``max_seconds``.
    """
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
