"""Early finals (``streaming.early_finals``): an utterance's final is decoded while the pause
after it runs, and is the reply when the pause ends the utterance; a speaker who goes on makes
it worthless, and it is dropped. Real server, tiny.en, espeak-ng speech at real-time pace
(the pace at which pauses leave the worker free)."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from speechgw.audio import from_pcm16, to_pcm16
from speechgw.config import StreamingConfig
from speechgw.segmenter import Segmenter
from tests import speech
from tests.serving import Server, running_server
from tests.streaming_client import assert_sentences, open_stream, read_pcm16, stream_pcm
from tests.waiting import wait_for

PAUSED = ["children", "market", "window"]


@pytest.fixture(scope="module")
def paused(voices, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sentences, each followed by a second of silence: three utterances."""
    folder = tmp_path_factory.mktemp("early")
    return speech.concat([voices[n] for n in PAUSED], folder / "paused.wav", silence_seconds=1.0)


@pytest.fixture(scope="module")
def hesitant(voices, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sentences with a pause between them that reaches the end padding (300 ms) but not
    the 500 ms that ends an utterance (espeak-ng's own silence and 0.1 s: 420 ms), then a
    second of silence: one utterance."""
    folder = tmp_path_factory.mktemp("hesitant")
    both = speech.concat([voices["children"], voices["train"]], folder / "two.wav", 0.1)
    return speech.concat([both], folder / "hesitant.wav", silence_seconds=1.0)


def _early(server: Server, outcome: str) -> float:
    return server.metric("speechgw_early_finals_total", outcome=outcome)


def test_the_segmenter_foresees_the_utterance_its_pause_will_close(hesitant: Path) -> None:
    """While a pause runs past the end padding, closing_utterance() is exactly what the
    segmenter closes if the pause goes on; speech resuming takes it back."""
    audio = speech.samples_16k(hesitant)
    segmenter = Segmenter(StreamingConfig())
    foreseen: list[np.ndarray] = []
    closed: list[np.ndarray] = []
    for i in range(0, len(audio), 480):
        closed += segmenter.feed(audio[i : i + 480])
        ahead = segmenter.closing_utterance()
        if ahead is not None and not (foreseen and len(foreseen[-1]) == len(ahead)):
            assert segmenter.closing_length() == len(ahead)
            foreseen.append(ahead)
        elif ahead is None:
            assert segmenter.closing_length() is None
    assert len(closed) == 1  # the short pause did not end the utterance
    assert len(foreseen) == 2  # the short pause, then the second that ended it
    assert len(foreseen[0]) < len(closed[0])
    np.testing.assert_array_equal(foreseen[1], closed[0])


def test_a_stream_that_ends_in_a_pause_ends_its_utterance_as_the_pause_would(
    voices, tmp_path: Path
) -> None:
    """Flushed during a pause of end_padding_ms or more, the utterance is the one the pause
    would have closed (so its early final answers it); flushed sooner, everything is kept."""
    ends_in_pause = speech.concat([voices["children"]], tmp_path / "p.wav", 0.1)  # 0.42 s
    whole = speech.samples_16k(ends_in_pause)
    # ending 0.42 s into the pause, or 0.2 s into it; a partial frame pending either way
    for cut, pause_reached in ((100, True), (3300, False)):
        audio = whole[: len(whole) - cut]
        segmenter = Segmenter(StreamingConfig())
        assert segmenter.feed(audio) == []
        foreseen = segmenter.closing_utterance()
        (flushed,) = segmenter.flush()
        if pause_reached:
            assert foreseen is not None
            np.testing.assert_array_equal(flushed, foreseen)
        else:
            assert foreseen is None
            # the whole tail is kept, to the last (partial frame's) sample fed
            tail = from_pcm16(to_pcm16(audio[-1000:]))
            np.testing.assert_array_equal(flushed[-1000:], tail)


def test_a_final_decoded_during_its_pause_is_the_reply_with_the_same_words(
    tiny_server: Server, paused: Path
) -> None:
    pcm, rate = read_pcm16(paused)
    before = {o: _early(tiny_server, o) for o in ("used", "discarded", "failed")}
    with running_server({"streaming": {"early_finals": False}}) as off:
        with ThreadPoolExecutor(2) as pool:
            on_run, off_run = pool.map(
                lambda url: stream_pcm(url, pcm, rate, realtime=1.0), [tiny_server.ws, off.ws]
            )
        assert all(_early(off, o) == 0 for o in ("used", "discarded", "failed"))
    assert_sentences(on_run, PAUSED)
    # decoded from the same samples with the same context: the same words, to the letter
    assert on_run.replies == off_run.replies
    # each sentence's pause left the worker free: its reply was the final decoded ahead
    assert _early(tiny_server, "used") - before["used"] == len(PAUSED)
    assert _early(tiny_server, "discarded") == before["discarded"]
    assert _early(tiny_server, "failed") == before["failed"]


def test_speech_that_goes_on_after_a_short_pause_drops_the_early_final(
    tiny_server: Server, hesitant: Path
) -> None:
    pcm, rate = read_pcm16(hesitant)
    used, discarded = _early(tiny_server, "used"), _early(tiny_server, "discarded")
    result = stream_pcm(tiny_server.ws, pcm, rate, realtime=1.0)
    # one reply holding both sentences: the first one's early final was not sent
    assert len(result.replies) == 1, result.replies
    for name in ("children", "train"):
        assert speech.word_recall(speech.SENTENCES[name], result.replies[0]) >= 0.6, result
    assert _early(tiny_server, "discarded") - discarded == 1
    assert _early(tiny_server, "used") - used == 1


def test_a_client_that_leaves_while_its_early_final_decodes_leaks_nothing(
    tiny_server: Server, voices, tmp_path: Path
) -> None:
    """The client says a sentence, is silent for 0.42 s (espeak-ng's own silence and 0.1 s:
    its early final starts at 0.3 s) and closes the connection without a word. Its utterance
    is still recognised and billed, ended as the pause would have ended it (so the early
    final is its answer, sent to nobody), and nothing the stream started outlives it."""
    sentence = speech.concat([voices["children"]], tmp_path / "s.wav", silence_seconds=0.1)
    pcm, rate = read_pcm16(sentence)
    ok = {"machine_id": "unknown", "task": "transcribe", "status": "ok"}
    requests = tiny_server.metric("asr_requests_total", **ok)
    used, discarded = _early(tiny_server, "used"), _early(tiny_server, "discarded")
    tasks_before = tiny_server.tasks()
    with open_stream(tiny_server.ws) as ws:
        ws.recv(timeout=30)  # the connection message
        step = rate // 10 * 2  # 100 ms, sent in real time
        started = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), step)):
            message = {"audio": base64.b64encode(pcm[offset : offset + step]).decode()}
            if i == 0:
                message["rate"] = rate
            time.sleep(max(0.0, started + i / 10 - time.monotonic()))
            ws.send(json.dumps(message))
    # gone: its utterance is billed, its early final the answer that nobody reads
    wait_for(lambda: tiny_server.metric("asr_requests_total", **ok) == requests + 1)
    assert _early(tiny_server, "used") == used + 1
    assert _early(tiny_server, "discarded") == discarded
    wait_for(lambda: tiny_server.metric("speechgw_active_streams") == 0)
    wait_for(lambda: tiny_server.tasks() <= tasks_before)
    # and the next client is served as ever
    assert_sentences(stream_pcm(tiny_server.ws, pcm, rate), ["children"])
