"""Audio in: RIFF WAV files and raw LINEAR16 chunks, normalised to 16 kHz mono float32.

The WAV reader is written here rather than taken from the standard library because ``wave``
reads integer PCM only: clients of the batch protocol send float32 as often as int16, and
telephony systems record calls in G.711 (8-bit mu-law or A-law, the ITU-T telephone codec).
Every failure is an :class:`~speechgw.errors.InvalidAudio` with a message that says what was
wrong with the file, so that a client author can fix their encoder.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import InvalidAudio
from .jobs import SAMPLE_RATE
from .rates import MAX_RATE, MIN_RATE, check_rate

__all__ = [
    "MAX_RATE",
    "MIN_RATE",
    "UnknownWavEncoding",
    "WavInfo",
    "check_rate",
    "from_g711",
    "from_pcm16",
    "linear16",
    "read_wav",
    "sample_ratio",
    "to_16k_mono",
    "to_pcm16",
]

_PCM16_SCALE = 32768.0
"""int16 <-> float: one scale both ways, so a sample survives the round trip exactly."""

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_ALAW = 0x0006
_FORMAT_MULAW = 0x0007
_FORMAT_EXTENSIBLE = 0xFFFE
_ENCODINGS = {
    _FORMAT_PCM: ("PCM", (8, 16, 24, 32)),
    _FORMAT_FLOAT: ("float", (32, 64)),
    _FORMAT_MULAW: ("mu-law", (8,)),
    _FORMAT_ALAW: ("A-law", (8,)),
}
"""The format tags read, with their names and the sample widths (bits) each comes in."""
_UNKNOWN_SIZE = 0xFFFFFFFF  # what streaming WAV writers put in a size they could not know yet
_MOST_CHUNKS = 1000
"""Chunks read before the data chunk. Real files hold a handful (fmt, fact, LIST, bext, iXML,
cue); walking the 8 million empty chunks that 64 MiB can hold, one Python step each, costs
seconds of a core with the GIL held (tests/test_audio.py refuses such a file in < 0.5 s)."""


class UnknownWavEncoding(InvalidAudio):
    """A WAV file in an encoding this reader does not know (ADPCM, GSM 6.10...), with a sound
    header otherwise: a decoder that knows more codecs may still read it. Every other
    failure is a corrupt or unusable file that no other decoder should be asked about."""


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What the ``fmt `` chunk said about a WAV file."""

    sample_rate: int
    channels: int
    bits: int
    is_float: bool
    companding: str | None = None
    """``"mu-law"`` or ``"A-law"`` for G.711 (8 bits a sample), else None (linear)."""


def _g711_tables() -> dict[str, np.ndarray]:
    """The 16-bit linear value of each of the 256 G.711 codes (ITU-T G.711's expansion, as
    sox and every telephony stack decode it), for decoding a file with one lookup."""
    codes = np.arange(256, dtype=np.int32)
    mu = ~codes & 0xFF
    exponent, mantissa = (mu >> 4) & 7, mu & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    mu_law = np.where(mu & 0x80, -magnitude, magnitude)
    a = codes ^ 0x55
    exponent, mantissa = (a >> 4) & 7, a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    a_law = np.where(a & 0x80, magnitude, -magnitude)
    return {
        name: (table / _PCM16_SCALE).astype(np.float32)
        for name, table in (("mu-law", mu_law), ("A-law", a_law))
    }


_G711 = _g711_tables()


def read_wav(data: bytes | bytearray | memoryview) -> tuple[np.ndarray, WavInfo]:
    """Parse a RIFF WAV file and return its samples as mono float32 at the file's own rate.

    Accepts PCM 8/16/24/32-bit, IEEE float 32/64 and G.711 mu-law/A-law, plain or
    WAVE_FORMAT_EXTENSIBLE, any number of channels (down-mixed by averaging). A data chunk
    whose declared size runs past the end of the file (as streaming writers leave it), or is 0
    with samples after it (a writer that never came back to its header), is read up to the last
    whole frame, as FFmpeg reads it. NaN and infinite float samples become silence, so that they
    cannot poison a model.

    Raises:
        InvalidAudio: not a RIFF/WAVE file, a truncated or corrupt header, an unsupported
            encoding, or no samples; :class:`UnknownWavEncoding` where only the encoding
            is unknown to this reader.
    """
    view = memoryview(data)
    if len(view) < 12 or bytes(view[0:4]) != b"RIFF" or bytes(view[8:12]) != b"WAVE":
        raise InvalidAudio("not a RIFF WAVE file")
    info: WavInfo | None = None
    pos = 12
    for _ in range(_MOST_CHUNKS):
        if pos + 8 > len(view):
            break
        chunk_id = bytes(view[pos : pos + 4])
        (size,) = struct.unpack_from("<I", view, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            info = _parse_fmt(view[body : body + size])
        elif chunk_id == b"data":
            if info is None:
                raise InvalidAudio("the data chunk comes before the fmt chunk")
            unfinished = size == _UNKNOWN_SIZE or (size == 0 and not _chunk_at(view, body))
            end = len(view) if unfinished else min(body + size, len(view))
            return _decode_samples(view[body:end], info), info
        pos = body + size + (size & 1)  # chunks are word-aligned
    else:
        raise InvalidAudio(f"the WAV file has more than {_MOST_CHUNKS} chunks before its data")
    if info is None:
        raise InvalidAudio("the WAV header is truncated: no fmt chunk")
    raise InvalidAudio("the WAV file has no data chunk")


def _chunk_at(view: memoryview, pos: int) -> bool:
    """Whether a chunk header (a four-character printable ASCII id and a size that fits the
    file) begins at ``pos``: after a data chunk of size 0, such bytes are the next chunk of an
    empty recording; anything else is the samples of a recording whose writer never came back
    to fill in its sizes (killed mid-recording, or writing to a pipe)."""
    if pos + 8 > len(view):
        return True  # a few stray bytes: no recording's worth
    chunk_id = bytes(view[pos : pos + 4])
    (size,) = struct.unpack_from("<I", view, pos + 4)
    return all(0x20 <= c <= 0x7E for c in chunk_id) and pos + 8 + size <= len(view)


def _parse_fmt(fmt: memoryview) -> WavInfo:
    if len(fmt) < 16:
        raise InvalidAudio("the WAV fmt chunk is truncated")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt, 0)
    if tag == _FORMAT_EXTENSIBLE:
        if len(fmt) < 26:
            raise InvalidAudio("the WAVE_FORMAT_EXTENSIBLE fmt chunk is truncated")
        (tag,) = struct.unpack_from("<H", fmt, 24)  # first two bytes of the sub-format GUID
    if channels < 1:
        raise InvalidAudio("the WAV header declares no channels")
    check_rate(rate, "the WAV header's sample rate")
    name, widths = _ENCODINGS.get(tag, (f"format tag 0x{tag:04x}", ()))
    if bits not in widths:
        error = UnknownWavEncoding if tag not in _ENCODINGS else InvalidAudio
        raise error(
            f"unsupported WAV encoding: {name} with {bits} bits per sample (PCM "
            "8/16/24/32-bit, float 32/64-bit and 8-bit mu-law/A-law are supported)"
        )
    if block_align != channels * bits // 8:
        raise InvalidAudio("the WAV header is corrupt: block align does not match the format")
    return WavInfo(
        sample_rate=rate,
        channels=channels,
        bits=bits,
        is_float=tag == _FORMAT_FLOAT,
        companding=name if tag in (_FORMAT_MULAW, _FORMAT_ALAW) else None,
    )


def _decode_samples(raw: memoryview, info: WavInfo) -> np.ndarray:
    width = info.bits // 8
    frame_bytes = width * info.channels
    frames = len(raw) // frame_bytes
    if frames == 0:
        raise InvalidAudio("the WAV file holds no samples")
    raw = raw[: frames * frame_bytes]
    if info.is_float:
        stored = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8")
        # cleaned in the file's own precision: a float64 beyond float32's range would
        # overflow in the cast (found by tests/test_audio.py's mangled headers)
        cleaned = np.nan_to_num(stored, nan=0.0, posinf=0.0, neginf=0.0)
        samples = np.clip(cleaned, -1.0, 1.0).astype(np.float32)
    elif info.companding is not None:
        samples = _G711[info.companding][np.frombuffer(raw, dtype=np.uint8)]
    elif width == 1:  # 8-bit PCM WAV is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = from_pcm16(np.frombuffer(raw, dtype="<i2"))
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints & 0x800000, ints - 0x1000000, ints)
        samples = ints.astype(np.float32) / 8388608.0
    else:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    if info.channels > 1:
        samples = samples.reshape(frames, info.channels).mean(axis=1, dtype=np.float32)
    return samples


def from_g711(raw: bytes, law: str) -> np.ndarray:
    """G.711 bytes (``law``: ``"mu-law"`` or ``"A-law"``), a sample each, as float32."""
    return _G711[law][np.frombuffer(raw, dtype=np.uint8)]


def from_pcm16(pcm: np.ndarray) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1); float samples are returned as they are."""
    if pcm.dtype != np.int16:
        return pcm
    return pcm.astype(np.float32) / _PCM16_SCALE


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 -> little-endian int16, rounded to the nearest step and saturated: the inverse
    of :func:`from_pcm16` for every value it produces, and no wrap-around for values past ±1.
    int16 samples are returned as they are."""
    if samples.dtype == np.int16:
        return samples
    # ufuncs in place: np.clip's dispatch costs more than the work on a 100 ms chunk
    scaled = np.multiply(samples, _PCM16_SCALE, dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.minimum(scaled, 32767.0, out=scaled)
    np.maximum(scaled, -32768.0, out=scaled)
    return scaled.astype("<i2")


def linear16(raw: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes (LINEAR16) as int16 samples, without a copy.

    Raises:
        InvalidAudio: an odd number of bytes (half a sample).
    """
    if len(raw) % 2:
        raise InvalidAudio("LINEAR16 audio must hold a whole number of 2-byte samples")
    return np.frombuffer(raw, dtype="<i2")


@lru_cache(maxsize=64)
def sample_ratio(rate: int) -> tuple[int, int]:
    """``(up, down)`` in lowest terms such that ``rate * up / down == 16000``."""
    g = math.gcd(SAMPLE_RATE, rate)
    return SAMPLE_RATE // g, rate // g


def to_16k_mono(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample mono float32 ``samples`` from ``rate`` to 16 kHz with scipy's polyphase filter.

    Polyphase filtering (``resample_poly``) is exact for rational ratios such as 44100/16000 and
    keeps the anti-aliasing filter short, so it costs little next to inference.
    """
    if rate == SAMPLE_RATE:
        return samples
    # imported here: scipy.signal takes 0.8 s to import, which the command line's key and
    # usage commands (they read the config, so they import the backends) have no use for
    from scipy.signal import resample_poly

    up, down = sample_ratio(rate)
    return resample_poly(samples, up, down).astype(np.float32, copy=False)
