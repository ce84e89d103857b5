"""The segmenter and the stream resampler, sample by sample, without a server."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter, resample_poly

from speechgw.audio import from_pcm16, sample_ratio, to_pcm16
from speechgw.config import StreamingConfig
from speechgw.segmenter import DcBlocker, Segmenter, StreamResampler
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


def test_the_dc_blocker_takes_out_the_offset_and_leaves_speech() -> None:
    """A 1 % offset, alone for half a second, then under a 300 Hz tone, fed in chunks of any
    size: the same samples as the filter run over the whole stream (to the nearest int16
    step); the offset is gone from the first sample (the filter starts settled on it: no
    step, which webrtcvad would hear) and the tone is kept within 0.1 dB."""
    t = np.arange(16000 * 2) / 16000
    tone = np.where(t >= 0.5, 0.1 * np.sin(2 * np.pi * 300 * t), 0.0)
    signal = to_pcm16((tone + 0.01).astype(np.float32))
    rng = np.random.default_rng(7)
    blocker, pieces, i = DcBlocker(), [], 0
    while i < len(signal):
        n = int(rng.integers(1, 3000))
        pieces.append(blocker.feed(signal[i : i + n]))
        assert pieces[-1].dtype == np.int16
        i += n
    out = np.concatenate(pieces).astype(np.float64)
    first = np.median(signal[: len(pieces[0])].astype(np.float64))
    whole, _ = lfilter([1, -1], [1, -DcBlocker.R], signal.astype(np.float64), zi=[-first])
    np.testing.assert_allclose(out, whole, atol=1.0)
    assert np.max(np.abs(out[:8000])) <= 1  # the offset alone: nothing left of it
    played = out[8800:] / 32768  # the tone, 50 ms after it began
    kept = np.sqrt(np.mean(played**2)) / np.sqrt(np.mean(tone[8800:] ** 2))
    assert abs(20 * np.log10(kept)) < 0.1
    assert abs(played.mean()) < 1e-4


def _speech_and_silence(voices, tmp_path) -> np.ndarray:
    names = ["children", "market", "window"]
    path = speech.concat([voices[n] for n in names], tmp_path / "s.wav", silence_seconds=1.2)
    return speech.samples_16k(path)


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
    # at the shortest limit the config allows (min_speech_ms), speech is still kept
    shortest = StreamingConfig(max_utterance_seconds=0.15, min_speech_ms=150)
    utterances = Segmenter(shortest).feed(np.concatenate((lead, speech_only)))
    assert len(utterances) >= 10 and all(len(u) == 2400 for u in utterances[1:])


def test_silence_gives_no_utterance() -> None:
    segmenter = Segmenter(StreamingConfig())
    assert segmenter.feed(np.zeros(16000 * 30, np.float32)) + segmenter.flush() == []


def test_lead_in_silence_is_added_at_the_stream_start_and_accounted(voices) -> None:
    audio = speech.samples_16k(voices["children"])  # speech from the first frames
    segmenter = Segmenter(StreamingConfig())
    (utterance,) = segmenter.feed(audio) + segmenter.flush()
    pad = segmenter.lead_in_padding
    assert 0 < pad <= 16000 * 300 // 1000
    assert not np.any(utterance[:pad])
    pcm = from_pcm16(to_pcm16(audio))  # the segmenter works on LINEAR16, as webrtcvad does
    body = utterance[pad:]
    np.testing.assert_array_equal(body, pcm[: len(body)])  # the rest is the client's audio


def _utterances(path, config: StreamingConfig) -> list[np.ndarray]:
    audio = speech.samples_16k(path)
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


SILERO = StreamingConfig(silero_vad_after_seconds=3.0)


def _cut(audio: np.ndarray, config: StreamingConfig, chunk: int = 1600) -> list[np.ndarray]:
    segmenter = Segmenter(config)
    found = []
    for i in range(0, len(audio), chunk):
        found += segmenter.feed(audio[i : i + chunk])
    return found + segmenter.flush()


def test_silero_fed_in_pieces_hears_what_faster_whisper_hears_in_the_whole(
    voices, tmp_path
) -> None:
    """The listener carries Silero's state and context from call to call: pieces of any size
    give the probabilities faster-whisper's own VAD computes over the whole recording."""
    from faster_whisper.vad import get_vad_model

    from speechgw.silero import SileroListener

    audio, _ = speech.sentences_apart(voices, ["children", "market"], 1.0, tmp_path)
    audio = speech.under_white_noise(audio, -40.0)
    whole = get_vad_model()(audio[: len(audio) // 512 * 512]).reshape(-1)
    listener, pieces, i = SileroListener(), [], 0
    rng = np.random.default_rng(0)
    while i < len(audio):
        n = int(rng.integers(1, 4000))
        pieces.append(listener.feed(audio[i : i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)
    assert whole.max() > 0.9 and listener.speech_windows > 0


@pytest.mark.parametrize("chunk", [1600, 16000])
def test_in_steady_noise_silero_finds_the_pauses_webrtcvad_cannot_hear(
    voices, tmp_path, chunk
) -> None:
    """Two sentences 3 s apart under white noise at -25 dBFS: webrtcvad hears one utterance
    from the first sample to the last; with ``silero_vad_after_seconds`` each sentence is an
    utterance of its own that ends about ``silero_vad_silence_ms`` after it (whatever the
    size of the client's chunks), and the noise after the last is dropped, not sent."""
    clean, spans = speech.sentences_apart(voices, ["children", "market"], 3.0, tmp_path)
    audio = speech.under_white_noise(clean)
    (everything,) = _cut(audio, StreamingConfig(), chunk)
    assert len(everything) >= len(audio) - 480
    first, second = _cut(audio, SILERO, chunk)
    pcm = from_pcm16(to_pcm16(audio))
    for utterance, (start, end) in zip((first, second), spans, strict=True):
        heard = np.trim_zeros(utterance, "f")  # the stream's lead-in padding, if any
        at = _find(pcm, heard)
        assert at <= start, "the sentence's start is in its utterance"
        # espeak-ng's audio ends in a little silence of its own
        assert end - 0.2 * 16000 <= at + len(heard) <= end + 0.8 * 16000, "it ends soon after"


def _find(pcm: np.ndarray, utterance: np.ndarray) -> int:
    for start in range(0, len(pcm) - len(utterance) + 1, 480):
        if np.array_equal(pcm[start : start + len(utterance)], utterance):
            return start
    raise AssertionError("an utterance is not a slice of the input")


@pytest.mark.parametrize("chunk", [1440, 4800])
def test_with_silero_noise_alone_is_no_utterance(chunk: int) -> None:
    """Ten seconds of steady noise: webrtcvad takes it for speech; Silero hears none, so
    nothing is sent to be recognised (also when the stream ends just after Silero listened:
    1440 samples are the 90 ms it hears at a time)."""
    noise = speech.under_white_noise(np.zeros(16000 * 10, np.float32))
    assert _cut(noise, StreamingConfig(), chunk)
    assert _cut(noise, SILERO, chunk) == []


def test_in_quiet_silero_changes_nothing(voices, tmp_path) -> None:
    """Where webrtcvad hears the pauses, it ends the utterances before Silero would (Silero
    listens here from 1 s in: these sentences are about 3 s long)."""
    audio = _speech_and_silence(voices, tmp_path)
    early = StreamingConfig(silero_vad_after_seconds=1.0)
    plain, with_silero = _cut(audio, StreamingConfig()), _cut(audio, early)
    assert len(plain) == len(with_silero) == 3
    for a, b in zip(plain, with_silero, strict=True):
        np.testing.assert_array_equal(a, b)


def test_in_noise_the_utterance_silero_will_close_is_foreseen(voices, tmp_path) -> None:
    """Once Silero's silence passes the end padding, closing_utterance() is exactly what its
    pause closes if it goes on (so that the final can be decoded early, as for webrtcvad's
    pauses), and the stream flushed then ends the utterance the same way."""
    clean, _ = speech.sentences_apart(voices, ["children", "market"], 3.0, tmp_path)
    audio = speech.under_white_noise(clean)
    segmenter = Segmenter(SILERO)
    foreseen: list[np.ndarray | None] = []
    closed = []
    for i in range(0, len(audio), 1600):
        for utterance in segmenter.feed(audio[i : i + 1600]):
            closed.append(utterance)
            assert foreseen and foreseen[-1] is not None
            np.testing.assert_array_equal(utterance, foreseen[-1])
        foreseen.append(segmenter.closing_utterance())
    assert len(closed) == 2
    # flushed in the pause after the first sentence: the utterance that pause would close
    segmenter = Segmenter(SILERO)
    for i in range(0, len(audio), 1600):
        assert segmenter.feed(audio[i : i + 1600]) == []
        ahead = segmenter.closing_utterance()
        if ahead is not None:
            (flushed,) = segmenter.flush()
            np.testing.assert_array_equal(flushed, ahead)
            break
    else:
        raise AssertionError("Silero's pause was never foreseen")


@pytest.mark.parametrize("chunk", [1600, 16000])
def test_an_utterance_too_long_is_cut_in_a_pause_noise_hides(voices, tmp_path, chunk) -> None:
    """Six sentences 0.3 s apart under white noise at -25 dBFS, where webrtcvad hears no
    pause: each time an utterance reaches ``max_utterance_seconds`` it is cut at its quietest
    moment in its last fifth, here always a silence between sentences, not mid-word at the
    limit; the utterances follow each other sample for sample from the first, none dropped
    or repeated, and none padded with silence that the client did not send."""
    clean, _ = speech.sentences_apart(voices, list(speech.SENTENCES), 0.3, tmp_path)
    audio = speech.under_white_noise(clean)
    utterances = _cut(audio, StreamingConfig(max_utterance_seconds=4.0), chunk)
    assert len(utterances) >= 6
    pcm = from_pcm16(to_pcm16(audio))
    first = np.trim_zeros(utterances[0], "f")  # the stream's lead-in padding, if any
    at = _find(pcm, first)
    np.testing.assert_array_equal(np.concatenate([first, *utterances[1:]]), pcm[at:])
    frame = 480
    assert all(0.8 * 4.0 * 16000 - frame <= len(u) <= 4.0 * 16000 for u in utterances[:-1])
    for utterance in [first, *utterances[1:]][:-1]:
        at += len(utterance)
        around = clean[at - frame : at + frame]  # the sentences' 60 ms around the cut
        assert np.sqrt(np.mean(around**2)) < 0.005, f"cut at {at / 16000:.2f} s, in speech"


def test_speech_that_resumes_just_after_a_close_has_its_own_audio_as_lead_in(voices) -> None:
    """A sentence, a pause just long enough to end its utterance (0.6 s), then the next
    sentence: that one still begins with as much of what the client sent before it as any
    utterance does (half of ``start_padding_ms``: an utterance starts once half of that
    window is speech), taken from the pause the close cut off, not with silence the server
    made up (billed as audio) and not shorter (Whisper mishears a word that begins at once)."""
    sentences = []
    for name in ("children", "market"):
        audio = speech.samples_16k(voices[name])
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        sentences.append(audio[loud[0] : loud[-1] + 1])  # espeak-ng's own silence cut off
    first, second = sentences
    gap = np.zeros(int(0.6 * 16000), np.float32)
    lead, tail = np.zeros(8000, np.float32), np.zeros(16000, np.float32)
    clean = np.concatenate((lead, first, gap, second, tail))
    audio = speech.under_white_noise(clean, -60.0)  # a quiet room: no sample is exactly 0
    utterances = _cut(audio, StreamingConfig())
    assert len(utterances) == 2
    pcm = from_pcm16(to_pcm16(audio))
    at = _find(pcm, utterances[1])  # a slice of what was sent: nothing made up
    begins = len(lead) + len(first) + len(gap)
    assert begins - at >= 0.12 * 16000, f"{(begins - at) / 16000:.3f} s of lead-in"


def test_lead_in_padding_is_the_silence_of_the_first_utterance_returned(voices, tmp_path) -> None:
    """``lead_in_padding`` (what the stream does not bill) is the silence before the first
    utterance returned: when the first one started is dropped (noise Silero hears no speech
    in), the next one has none, and neither does its count."""
    clean, _ = speech.sentences_apart(voices, ["children"], 6.0, tmp_path)
    audio = speech.under_white_noise(clean)  # noise from the first sample: padded at once
    segmenter = Segmenter(SILERO)
    utterances = []
    for i in range(0, len(audio), 1600):
        utterances += segmenter.feed(audio[i : i + 1600])
    utterances += segmenter.flush()
    assert utterances, "the sentence is heard"
    padding = len(utterances[0]) - len(np.trim_zeros(utterances[0], "f"))
    assert segmenter.lead_in_padding == padding


@pytest.mark.parametrize("quieter_db", [35, 40])
def test_a_quiet_speaker_is_cut_as_a_loud_one(voices, tmp_path, quieter_db: int) -> None:
    """Six sentences 35 and 40 dB quieter than espeak-ng speaks them (loudest samples at -36
    and -41 dBFS): webrtcvad alone lost one sentence of the six at -35 dB and heard nothing at
    -40 dB. Its copy of the stream is raised (``vad_max_gain_db``), so each sentence is one
    utterance, as loud (each within 200 ms of its length), and the utterances hold the quiet
    samples as they came."""
    audio, spans = speech.sentences_apart(voices, list(speech.SENTENCES), 1.0, tmp_path)
    quiet = from_pcm16(to_pcm16(audio * np.float32(10 ** (-quieter_db / 20))))
    loud = _cut(audio, StreamingConfig())
    heard = _cut(quiet, StreamingConfig())
    assert len(loud) == len(heard) == len(spans) == 6
    for a, b in zip(loud, heard, strict=True):
        assert abs(len(a) - len(b)) <= 0.2 * 16000  # within 200 ms of the loud one's cut
    pcm = to_pcm16(quiet)
    for utterance in heard:  # the samples decoded are the client's, not the raised copy
        _find(pcm, to_pcm16(utterance))
    assert len(_cut(quiet, StreamingConfig(vad_max_gain_db=0))) < 6


@pytest.mark.parametrize("dbfs", [-60, -50, -40])
def test_quiet_noise_is_not_raised_into_speech(dbfs: int) -> None:
    """Noise alone, white and low-pass (its level wanders, dipping for a frame or two), at
    -60 to -40 dBFS: webrtcvad hears no speech in it, and the raised copy does not change that
    (the quietest 300 ms stretch of the last 2 s is raised to -40 dBFS at most)."""
    rng = np.random.default_rng(-dbfs)
    white = rng.normal(0, 1, 16000 * 20)
    wandering = np.cumsum(rng.normal(0, 1, 16000 * 20))
    wandering -= np.convolve(wandering, np.ones(400) / 400, mode="same")
    for noise in (white, wandering):
        samples = (noise / noise.std() * 10 ** (dbfs / 20)).astype(np.float32)
        assert _cut(samples, StreamingConfig()) == []


@pytest.mark.parametrize("chunk", [160, 1600, 4099])
def test_a_dc_offset_hides_no_pause(voices, tmp_path, chunk: int) -> None:
    """Three sentences 30 dB under espeak-ng's level over a -60 dBFS hiss, on a microphone 1 %
    of full scale off zero: cut as the same speech without the offset, one utterance each,
    and the utterances hold the samples as they came, offset and all (only webrtcvad's copy
    is filtered). Judging the stream as sent (``vad_remove_dc_offset: false``), webrtcvad
    heard under a second of its three sentences (one utterance of 0.6 s)."""
    audio = _speech_and_silence(voices, tmp_path)
    clean = from_pcm16(speech.on_a_cheap_microphone(audio, 30, 0.0))
    mic = from_pcm16(speech.on_a_cheap_microphone(audio, 30, 0.01))
    as_clean = _cut(clean, StreamingConfig(), chunk)
    heard = _cut(mic, StreamingConfig(), chunk)
    assert len(as_clean) == len(heard) == 3
    for a, b in zip(as_clean, heard, strict=True):
        assert abs(len(a) - len(b)) <= 0.1 * 16000
    sent = to_pcm16(mic).tobytes()
    for utterance in heard:
        # the client's samples (never 0 here: the offset), after the first one's lead-in
        kept = np.trim_zeros(to_pcm16(utterance), "f").tobytes()
        assert sent.find(kept) % 2 == 0, "an utterance is not a slice of the input"
    left_in = _cut(mic, StreamingConfig(vad_remove_dc_offset=False), chunk)
    assert sum(map(len, left_in)) < 16000, [len(u) / 16000 for u in left_in]
