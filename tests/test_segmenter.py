"""The segmenter and the stream resampler, sample by sample, without a server."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from speechgw.audio import from_pcm16, read_wav, sample_ratio, to_16k_mono, to_pcm16
from speechgw.config import StreamingConfig
from speechgw.segmenter import Segmenter, StreamResampler
from tests import speech


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000, 12345])
def test_chunked_resampling_equals_whole_signal_resampling(rate: int) -> None:
    rng = np.random.default_rng(rate)
    signal = (rng.standard_normal(rate * 2 + 77) * 0.1).astype(np.float32)
    up, down = sample_ratio(rate)
    whole = resample_poly(signal, up, down).astype(np.float32)
    resampler = StreamResampler(rate)
    pieces, i = [], 0
    while i < len(signal):
        n = int(rng.integers(1, rate // 5))
        pieces.append(resampler.feed(signal[i : i + n]))
        i += n
    pieces.append(resampler.flush())
    chunked = np.concatenate(pieces)
    assert len(chunked) == len(whole)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def _speech_and_silence(voices, tmp_path) -> np.ndarray:
    names = ["children", "market", "window"]
    path = speech.concat([voices[n] for n in names], tmp_path / "s.wav", silence_seconds=1.2)
    samples, info = read_wav(path.read_bytes())
    return to_16k_mono(samples, info.sample_rate)


@pytest.mark.parametrize("chunk", [160, 1600, 4099])
def test_utterances_are_ordered_disjoint_slices_of_the_input(voices, tmp_path, chunk: int) -> None:
    audio = _speech_and_silence(voices, tmp_path)
    audio = np.concatenate((np.zeros(16000, np.float32), audio))  # real lead-in everywhere
    segmenter = Segmenter(StreamingConfig())
    utterances = []
    for i in range(0, len(audio), chunk):
        utterances += segmenter.feed(audio[i : i + chunk])
    utterances += segmenter.flush()
    assert len(utterances) == 3
    pcm = from_pcm16(to_pcm16(audio))  # the segmenter works on LINEAR16, as webrtcvad does
    cursor = 0
    for u in utterances:  # each one is found, in order, after the previous one: none repeated
        for start in range(cursor, len(pcm) - len(u) + 1, 480):
            if np.array_equal(pcm[start : start + len(u)], u):
                cursor = start + len(u)
                break
        else:
            raise AssertionError("an utterance is not a slice of the input")


def test_max_utterance_length_cuts_without_losing_samples(voices, tmp_path) -> None:
    audio = _speech_and_silence(voices, tmp_path)
    speech_only = audio[np.abs(audio) > 0][: 16000 * 3]  # 3 s with no pause at all
    config = StreamingConfig(max_utterance_seconds=1.0, min_speech_ms=30)
    segmenter = Segmenter(config)
    lead = np.zeros(16000, np.float32)
    utterances = segmenter.feed(np.concatenate((lead, speech_only))) + segmenter.flush()
    assert len(utterances) >= 3
    assert all(len(u) <= 16000 for u in utterances)


def test_silence_gives_no_utterance() -> None:
    segmenter = Segmenter(StreamingConfig())
    assert segmenter.feed(np.zeros(16000 * 30, np.float32)) + segmenter.flush() == []


def test_lead_in_silence_is_added_at_the_stream_start_and_accounted(voices) -> None:
    samples, info = read_wav(voices["children"].read_bytes())  # speech from the first frames
    audio = to_16k_mono(samples, info.sample_rate)
    segmenter = Segmenter(StreamingConfig())
    (utterance,) = segmenter.feed(audio) + segmenter.flush()
    pad = segmenter.lead_in_padding
    assert 0 < pad <= 16000 * 300 // 1000
    assert not np.any(utterance[:pad])
    pcm = from_pcm16(to_pcm16(audio))  # the segmenter works on LINEAR16, as webrtcvad does
    body = utterance[pad:]
    np.testing.assert_array_equal(body, pcm[: len(body)])  # the rest is the client's audio


def _utterances(path, config: StreamingConfig) -> list[np.ndarray]:
    samples, info = read_wav(path.read_bytes())
    audio = to_16k_mono(samples, info.sample_rate)
    segmenter = Segmenter(config)
    return segmenter.feed(audio) + segmenter.flush()


def test_a_short_fragment_waits_for_a_longer_pause(voices, tmp_path) -> None:
    """A speaker who says a word or two and pauses mid-sentence is not cut there: an
    utterance with under fragment_speech_ms of speech needs fragment_silence_ms to end, while
    a sentence still ends at the first end_silence_ms pause."""
    word = speech.speak("Well", tmp_path / "well.wav")
    sentence = voices["children"]
    # espeak-ng ends and starts its audio with silence of its own: 0.3 s more makes a pause
    # that ends an utterance at end_silence_ms (as the rule switched off shows)
    fragment_then_sentence = speech.concat([word, sentence], tmp_path / "a.wav", 0.3)
    assert len(_utterances(fragment_then_sentence, StreamingConfig())) == 1
    off = StreamingConfig(fragment_speech_ms=0)
    assert len(_utterances(fragment_then_sentence, off)) == 2
    # a long pause still ends the fragment
    fragment_alone = speech.concat([word, sentence], tmp_path / "b.wav", 1.0)
    assert len(_utterances(fragment_alone, StreamingConfig())) == 2
    # after a whole sentence, the ordinary pause ends the utterance
    two_sentences = speech.concat([sentence, voices["coffee"]], tmp_path / "c.wav", 0.3)
    assert len(_utterances(two_sentences, StreamingConfig())) == 2
