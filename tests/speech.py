"""Test audio made on the spot with espeak-ng and sox: nothing is downloaded or committed.

sox, not speechgw, converts rates, channels and encodings, so that the reader under test never
checks its own output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

SENTENCES = {
    # Chosen because tiny.en transcribes espeak-ng's 150 wpm rendering of each word for word
    # (measured); "Thank you ..." is avoided on purpose: it is Whisper's hallucination on silence.
    "children": "The children are playing football in the park.",
    "market": "We need to buy bread, milk and eggs from the market.",
    "window": "Open the window because it is very hot in here.",
    "coffee": "I would like a cup of coffee with sugar please.",
    "garden": "My grandmother planted tomatoes and roses in her garden.",
    "train": "The train to London leaves from platform number four.",
}


def require_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"the tests need {' and '.join(missing)}: run the README's test command, which "
            "installs them (apt-get install espeak-ng sox)"
        )


def speak(text: str, path: Path, voice: str = "en", words_per_minute: int = 150) -> Path:
    """espeak-ng's own output: 22050 Hz mono 16-bit PCM."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path


def convert(source: Path, target: Path, *out_format: str, effects: tuple[str, ...] = ()) -> Path:
    """``sox source [out_format] target [effects]``: ``out_format`` like ``-r 8000`` or
    ``-e floating-point -b 32``, ``effects`` like ``("pad", "0", "1")``."""
    subprocess.run(
        ["sox", str(source), *out_format, str(target), *effects], check=True, capture_output=True
    )
    return target


def concat(parts: list[Path], target: Path, silence_seconds: float = 0.0) -> Path:
    """The parts one after another, each followed by ``silence_seconds`` of silence."""
    if silence_seconds:
        padded = []
        for i, part in enumerate(parts):
            out = target.with_name(f"{target.stem}.pad{i}.wav")
            convert(part, out, effects=("pad", "0", str(silence_seconds)))
            padded.append(out)
        parts = padded
    subprocess.run(["sox", *map(str, parts), str(target)], check=True, capture_output=True)
    return target


def made_sound(target: Path, seconds: float, *sound: str) -> Path:
    """``seconds`` of sox's ``synth`` ``sound`` (e.g. ``"sine", "50", "vol", "0.05"``), or of
    silence when none is given, as espeak-ng writes (22050 Hz mono 16-bit), to concat."""
    effects = ["synth", str(seconds), *sound] if sound else ["trim", "0", str(seconds)]
    subprocess.run(
        ["sox", "-n", "-r", "22050", "-b", "16", "-c", "1", str(target), *effects],
        check=True,
        capture_output=True,
    )
    return target


def sentences_apart(
    voices: dict[str, Path], names: list[str], gap_seconds: float, folder: Path
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The sentences at 16 kHz (float32), with ``gap_seconds`` of silence before each and
    after the last; and where each one's audio lies, (start, end) in samples."""
    import wave

    gap = np.zeros(int(gap_seconds * 16000), np.float32)
    parts, spans, at = [gap], [], len(gap)
    for name in names:
        path = convert(voices[name], folder / f"{name}.16k.wav", "-r", "16000")
        with wave.open(str(path)) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        sentence = pcm.astype(np.float32) / 32768
        parts += [sentence, gap]
        spans.append((at, at + len(sentence)))
        at += len(sentence) + len(gap)
    return np.concatenate(parts), spans


def under_white_noise(audio: np.ndarray, dbfs: float = -25.0) -> np.ndarray:
    """``audio`` under steady white noise at ``dbfs`` RMS (the same noise for the same
    length): from about -30 dBFS on, webrtcvad hears it as speech and no pause in it."""
    noise = np.random.default_rng(len(audio)).normal(0, 1, len(audio)).astype(np.float32)
    return audio + noise * np.float32(10 ** (dbfs / 20))


def on_a_cheap_microphone(samples: np.ndarray, quieter_db: float, offset: float) -> np.ndarray:
    """``samples`` (float, full scale 1) ``quieter_db`` quieter, over a faint hiss (-60 dBFS,
    the same for the same length), all of it ``offset`` (of full scale) off zero, as int16: a
    soft speaker on a microphone with a DC offset, as cheap ones have."""
    from speechgw.audio import to_pcm16

    hiss = np.random.default_rng(60).normal(0, 10 ** (-60 / 20), len(samples))
    return to_pcm16((samples * 10 ** (-quieter_db / 20) + hiss + offset).astype(np.float32))


def samples_16k(path: Path) -> np.ndarray:
    """A WAV file's samples as the gateway hands them to a backend: 16 kHz mono float32."""
    from speechgw.audio import read_wav, to_16k_mono

    samples, info = read_wav(path.read_bytes())
    return to_16k_mono(samples, info.sample_rate)


def duration(path: Path) -> float:
    """Seconds of audio in a WAV file."""
    import wave

    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    return re.findall(r"[\w']+", text.lower())


def word_recall(expected: str, heard: str) -> float:
    """The share of the expected words that appear in what was heard."""
    want = words(expected)
    got = set(words(heard))
    return sum(w in got for w in want) / len(want)


ENCODINGS = {
    # container -> (PyAV format, codec): FFmpeg's own encoders, from the PyAV wheel
    "wav": ("wav", "pcm_s16le"),
    "mp3": ("mp3", "libmp3lame"),
    "flac": ("flac", "flac"),
    "ogg": ("ogg", "libopus"),
    "webm": ("webm", "libopus"),
    "m4a": ("ipod", "aac"),
}


def encode(
    source: Path,
    target: Path,
    container: str,
    rate: int = 48000,
    layout: str = "stereo",
    bit_rate: int | None = None,
) -> Path:
    """``source`` (any file FFmpeg reads) re-encoded as ``container`` (a key of
    :data:`ENCODINGS`), by default at 48 kHz stereo, the way a phone or browser recorder
    writes it."""
    import av

    fmt, codec = ENCODINGS[container]
    with av.open(str(source)) as src, av.open(str(target), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        wanted = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=wanted, layout=layout, rate=rate)
        frames = [*src.decode(audio=0), None]
        for frame in frames:
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    return target


def with_a_latin1_title(mp3: bytes) -> bytes:
    """``mp3`` behind an ID3v2.3 tag whose title says UTF-8 but holds Latin-1 bytes, as older
    taggers write them (PyAV before 19 refuses such a file unless told to ignore its tags)."""
    import struct

    body = b"\x03Caf\xe9 au lait \xff"  # text encoding 3 (UTF-8), then bytes that are not
    frame = b"TIT2" + struct.pack(">I", len(body)) + b"\x00\x00" + body
    size = bytes((len(frame) >> shift) & 0x7F for shift in (21, 14, 7, 0))  # syncsafe
    return b"ID3\x03\x00\x00" + size + frame + mp3
