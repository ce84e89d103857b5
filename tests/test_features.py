"""Whisper's features of a long recording, a block at a time: the numbers faster-whisper
computes, in memory that grows with the features rather than with the whole recording's STFT;
and the Whisper backend computing them so for a 5-minute recording it transcribes."""

from __future__ import annotations

import asyncio
import tracemalloc

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor
from speechgw.backends.whisper import WhisperBackend, WhisperOptions
from speechgw.backends.whisper_features import BLOCK_FRAMES, BlockwiseFeatureExtractor

from speechgw.jobs import Caller, JobSpec
from tests import speech

HOP = 160


def speech_like(samples: int, seed: int = 7) -> np.ndarray:
    """Noise shaped like speech's loudness (a 4 Hz envelope), with silent stretches: features
    over their whole range, and a clipped floor (``max - 8``) that some frames reach."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.1 * t) > 0)
    return (rng.standard_normal(samples) * 0.1 * envelope).astype(np.float32)


@pytest.mark.parametrize("mels", [80, 128])  # 128: large-v3's features
@pytest.mark.parametrize(
    "samples",
    # too short to reflect (faster-whisper's own path), the shortest reflected, a second,
    # one block's worth either side, and several blocks with a partial last one
    [1, 41, 100, 16000, BLOCK_FRAMES * HOP - 161, BLOCK_FRAMES * HOP, 2_500_001],
)
def test_the_features_are_faster_whispers(samples: int, mels: int) -> None:
    audio = speech_like(samples)
    expected = FeatureExtractor(feature_size=mels)(audio)
    features = BlockwiseFeatureExtractor(feature_size=mels)(audio)
    assert features.dtype == np.float32
    assert features.shape == expected.shape == (mels, (samples + HOP) // HOP)
    # bit for bit: a long decode conditioned on its own text can change words over one
    # rounding step of its features
    np.testing.assert_array_equal(features, expected)


def test_a_window_length_asked_for_stays_set_as_in_faster_whisper() -> None:
    ours, theirs = BlockwiseFeatureExtractor(), FeatureExtractor()
    for extractor in (ours, theirs):
        extractor(speech_like(48_000), chunk_length=20)
    assert (ours.n_samples, ours.nb_max_frames) == (theirs.n_samples, theirs.nb_max_frames)
    assert ours.nb_max_frames == 2000


def test_ten_minutes_take_memory_for_their_features_not_their_spectrum() -> None:
    """faster-whisper's one STFT of 10 minutes peaks near 600 MB (1,786 MB for 29 minutes,
    BENCHMARKS.md): its frames, its complex spectrum in float64 and again in complex64. A
    block at a time it is the power spectra (201 floats a frame, 48 MB), the features (80
    floats a frame, 19 MB) and one block's temporaries (36 MB, most of them NumPy's FFT's)."""
    audio = speech_like(600 * 16000)
    extractor = BlockwiseFeatureExtractor()
    tracemalloc.start()
    try:
        extractor(audio)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    frames = len(audio) // HOP
    assert peak < (201 + 80) * 4 * frames + 40e6, peak / 1e6


def test_the_backend_transcribes_five_minutes_in_little_memory(voices) -> None:
    """A 5-minute recording (a sentence, then silence) to the Whisper backend: the sentence's
    words, and the Python-side memory of the whole transcription (features included; the
    model's own memory is not Python's) within a few copies of the recording's 19 MB, where
    the whole recording's STFT alone took 300 MB."""
    sentence = speech.samples_16k(voices["children"])
    audio = np.zeros(300 * 16000, dtype=np.float32)
    audio[16000 : 16000 + len(sentence)] = sentence

    async def run() -> str:
        backend = WhisperBackend("w", WhisperOptions(model="tiny.en", cpu_threads=2))
        await backend.start()
        try:
            spec = JobSpec("en", "transcribe", "openai", Caller("k"))
            tracemalloc.start()
            try:
                transcript = await backend.transcribe(audio, spec)
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
            return transcript.text
        finally:
            await backend.close()

    peaks: list[int] = []
    text = asyncio.run(run())
    assert speech.word_recall(speech.SENTENCES["children"], text) >= 0.8, text
    assert peaks[0] < 4 * audio.nbytes, peaks[0] / 1e6
