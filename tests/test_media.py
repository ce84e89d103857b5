"""Files FFmpeg decodes (the OpenAI API's uploads), whole, joined and mangled: every one is
audio or a documented ``invalid_audio``, at once, never another error."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechgw.errors import AudioTooLong, InvalidAudio
from speechgw.jobs import SAMPLE_RATE
from speechgw.media import decode_media
from tests import speech

SEEDS = ("mp3", "flac", "ogg", "m4a", "adpcm")


@pytest.fixture(scope="module")
def seeds(voices, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One spoken sentence in each container and codec a recorder writes, and as IMA ADPCM
    WAV (a WAV codec only FFmpeg reads)."""
    folder = tmp_path_factory.mktemp("seeds")
    files = {
        name: speech.encode(voices["coffee"], folder / f"coffee.{name}", name, rate=16000)
        for name in SEEDS
        if name != "adpcm"
    }
    files["adpcm"] = speech.convert(voices["coffee"], folder / "adpcm.wav", "-e", "ima-adpcm")
    return {name: path.read_bytes() for name, path in files.items()}


def _mangled(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``data`` with each (position, bytes removed, bytes put there) applied in turn."""
    out = bytearray(data)
    for where, removed, put in edits:
        at = where % (len(out) + 1)
        out[at : at + removed] = put
    return bytes(out)


EDITS = st.lists(
    st.tuples(
        st.integers(0, 1 << 20),
        st.sampled_from([0, 1, 4, 64, 1000]),
        st.one_of(
            st.binary(max_size=8),
            st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00" * 4]),
        ),
    ),
    min_size=1,
    max_size=6,
)


# found by this fuzzing, each once an escape: an mp3 frame header changed to another rate or
# layout ("Frame does not match AudioResampler setup"), an AAC packet the decoder answered with
# EPERM, a WAV header whose codec FFmpeg has no decoder for, or whose block size made the PCM
# decoder refuse to start ("avcodec_open2 returned 22")
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(SEEDS), edits=EDITS)
def test_mangled_files_are_audio_or_invalid_audio(seeds, name: str, edits) -> None:
    try:
        samples, rate = decode_media(_mangled(seeds[name], edits), max_seconds=600)
    except (InvalidAudio, AudioTooLong):
        return
    assert samples.dtype == np.float32 and len(samples) > 0
    assert np.all(np.isfinite(samples))
    assert 8000 <= rate <= 384_000


def _pcm_wav(rate: int, format_tag: int = 1, seconds: float = 1.0) -> bytes:
    """A 16-bit mono WAV whose header says ``rate`` (and ``format_tag``) whatever the truth."""
    data = np.zeros(int(16000 * seconds), dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", format_tag, 1, rate, rate * 2 % (1 << 32), 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def _au(rate: int, samples: int = 16000) -> bytes:
    """A Sun .au file (a container only FFmpeg reads here): ``samples`` of 16-bit silence
    at ``rate``."""
    data = np.zeros(samples, dtype=">i2").tobytes()
    return b".snd" + struct.pack(">IIIII", 24, len(data), 3, rate, 1) + data


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        # 989 MHz: FFmpeg built a resampler for it, 10 s of CPU, and found no samples
        (_pcm_wav(989_871_744), "sample rate is 989871744 Hz"),
        (_pcm_wav(1_174_421_120, format_tag=0x11), "sample rate is 1174421120 Hz"),
        (_au(989_871_744), "sample rate is 989871744 Hz"),
        (_au(4000), "sample rate is 4000 Hz"),
        (_pcm_wav(16000, format_tag=0x4242), "unsupported WAV encoding: format tag 0x4242"),
    ],
)
def test_a_header_no_recording_has_is_refused_at_once(upload: bytes, reason: str) -> None:
    decode_media(_au(8000), max_seconds=600)  # a decoder process is up, outside the time

    started = time.monotonic()
    with pytest.raises(InvalidAudio, match=reason):
        decode_media(upload, max_seconds=600)
    assert time.monotonic() - started < 1.0


def test_a_container_ffmpeg_reads_at_a_rate_in_range_is_heard() -> None:
    samples, rate = decode_media(_au(8000, samples=16000), max_seconds=600)
    assert rate == SAMPLE_RATE and len(samples) == 32000  # 2 s at 8 kHz, as 16 kHz


def test_mp3s_joined_end_to_end_decode_whole(voices, tmp_path: Path) -> None:
    """Two mp3 files at different rates and layouts, one after the other in one upload (as
    cutters and podcast tools join them): each part is resampled from its own rate."""
    first = speech.encode(voices["children"], tmp_path / "a.mp3", "mp3", rate=16000, layout="mono")
    second = speech.encode(voices["window"], tmp_path / "b.mp3", "mp3", rate=44100)
    samples, rate = decode_media(first.read_bytes() + second.read_bytes(), max_seconds=600)
    expected = speech.duration(voices["children"]) + speech.duration(voices["window"])
    assert rate == SAMPLE_RATE
    assert len(samples) / SAMPLE_RATE == pytest.approx(expected, abs=0.2)


def test_a_file_cut_short_keeps_what_came_before_the_cut(seeds) -> None:
    whole, _ = decode_media(seeds["ogg"], max_seconds=600)
    cut, _ = decode_media(seeds["ogg"][: len(seeds["ogg"]) * 2 // 3], max_seconds=600)
    assert 0.3 * len(whole) < len(cut) < len(whole)


_DECODE_STDIN = """
import sys
from speechgw.errors import InvalidAudio
from speechgw.media import decode_media
try:
    decode_media(sys.stdin.buffer.read(), 600)
except InvalidAudio as refused:
    print("refused:", refused)
"""


def test_a_decoder_that_will_not_start_is_refused_not_a_crash(seeds) -> None:
    """Headers FFmpeg's decoder will not start on: a FLAC whose STREAMINFO has no sample
    rate, an IMA ADPCM WAV of 65535 bits per sample. Each is ``invalid_audio``. PyAV 19's
    ``CodecContext.open`` crashed the process on them (a segmentation fault, where PyAV 18
    raises): one such upload took the server down, hence ``av<19`` in pyproject.toml. Since
    FFmpeg runs in decoder processes a crash costs only the upload ("the decoder crashed on
    it"), which this test still refuses: the answer must be FFmpeg's reason. Decoded in a
    child process all the same, so that a crash fails this test rather than ending the run."""
    flac = bytearray(seeds["flac"])
    assert flac[:4] == b"fLaC"
    flac[18:22] = bytes(4)  # STREAMINFO's sample rate, channels and bits: all zero
    adpcm = bytearray(seeds["adpcm"])
    assert adpcm[12:16] == b"fmt " and adpcm[20:22] == b"\x11\x00"  # IMA ADPCM
    adpcm[34:36] = b"\xff\xff"  # bits per sample
    for upload in (flac, adpcm):
        child = subprocess.run(
            [sys.executable, "-c", _DECODE_STDIN],
            input=bytes(upload),
            capture_output=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr.decode(errors="replace")[-500:]
        assert child.stdout.startswith(b"refused: "), child.stdout
        assert b"crashed" not in child.stdout, child.stdout


def test_a_tag_that_is_not_utf8_does_not_refuse_the_file(voices, tmp_path: Path) -> None:
    """An mp3 whose ID3 title says UTF-8 but holds Latin-1 bytes (as older taggers write
    them) is heard: PyAV 18 decodes tags strictly unless told to ignore what is not UTF-8."""
    mp3 = speech.encode(voices["coffee"], tmp_path / "coffee.mp3", "mp3", rate=16000)
    tagged = speech.with_a_latin1_title(mp3.read_bytes())
    samples, rate = decode_media(tagged, max_seconds=600)
    untagged, _ = decode_media(mp3.read_bytes(), max_seconds=600)
    assert rate == SAMPLE_RATE
    assert len(samples) == pytest.approx(len(untagged), abs=SAMPLE_RATE // 10)


def test_an_rf64_wav_goes_to_ffmpeg() -> None:
    """RF64 (a WAV past 4 GiB, as broadcast recorders write it) is not RIFF: FFmpeg reads it."""
    import io

    import av

    pcm = np.round(np.sin(np.arange(16000) / 5) * 8000).astype(np.int16)
    out = io.BytesIO()
    with av.open(out, "w", format="wav", options={"rf64": "always"}) as container:
        stream = container.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert out.getvalue()[:4] == b"RF64"
    samples, rate = decode_media(out.getvalue(), max_seconds=600)
    assert rate == SAMPLE_RATE
    np.testing.assert_allclose(samples, pcm / 32768, atol=1e-4)
