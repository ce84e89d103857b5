"""Interim results on the streaming protocol (our extension): the words so far of the utterance
being spoken, for clients that ask, from a real server with the real model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from speechgw.backends.whisper import WhisperBackend, WhisperOptions
from websockets.sync.client import connect

from speechgw.backend import InterimSkipped
from speechgw.jobs import Caller, JobSpec
from tests import speech
from tests.client import UploadInBackground
from tests.serving import Server, running_server
from tests.streaming_client import read_pcm16, stream_pcm

CONTINUOUS = ["children", "market", "window"]


@pytest.fixture(scope="module")
def continuous(voices, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sentences without a pause between them: one utterance of about 9 s."""
    folder = tmp_path_factory.mktemp("interim")
    return speech.concat([voices[n] for n in CONTINUOUS], folder / "continuous.wav")


PAUSED_AFTER = ["coffee", "train"]


def paused_parts(voices, continuous: Path) -> list[Path]:
    """The 9 s utterance, then two sentences of about 3 s."""
    return [continuous, *(voices[n] for n in PAUSED_AFTER)]


@pytest.fixture(scope="module")
def paused(voices, continuous: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`paused_parts`, each followed by 2 s of silence: three utterances."""
    folder = tmp_path_factory.mktemp("interim-paused")
    parts = paused_parts(voices, continuous)
    return speech.concat(parts, folder / "paused.wav", silence_seconds=2.0)


def test_interims_come_while_speaking_and_the_final_closes_the_utterance(
    tiny_server: Server, continuous: Path
) -> None:
    before = tiny_server.metric("speechgw_interims_total", protocol="streaming")
    requests_before = tiny_server.metric(
        "asr_requests_total", machine_id="unknown", task="transcribe", status="ok"
    )
    pcm, rate = read_pcm16(continuous)
    # At real time, as a live client speaks: how many interims fit depends on how long one
    # decode takes (on an AMD EPYC of 2 vCPUs, where tiny.en decodes a stream's utterance of
    # under 8 s in 1.6 s, `bench/utterance_decode.py --model tiny.en`: 4 in this 10 s
    # utterance, at 2x one or two), so at least two, the later holding more words.
    result = stream_pcm(tiny_server.ws, pcm, rate, realtime=1.0, interim_results=True)
    assert len(result.replies) == 1, result.events
    kinds = [kind for kind, _, _ in result.events]
    # words while the utterance was open, then its final, and nothing after it
    assert kinds.count("interim") >= 2, result.events
    assert kinds[-1] == "reply" and "reply" not in kinds[:-1]
    final = result.replies[0]
    for name in CONTINUOUS:
        assert speech.word_recall(speech.SENTENCES[name], final) >= 0.6, final
    # each interim is a growing prefix of what was said: the last one has most of the words
    assert len(speech.words(result.interims[-1])) > len(speech.words(result.interims[0]))
    assert speech.word_recall(speech.SENTENCES["children"], result.interims[-1]) >= 0.6
    # interims are counted as interims, not as requests, and are not billed
    after = tiny_server.metric("speechgw_interims_total", protocol="streaming")
    assert after - before == len(result.interims)
    requests_after = tiny_server.metric(
        "asr_requests_total", machine_id="unknown", task="transcribe", status="ok"
    )
    assert requests_after - requests_before == 1


def test_a_client_that_did_not_ask_gets_no_interim(tiny_server: Server, continuous: Path) -> None:
    pcm, rate = read_pcm16(continuous)
    for asked in (None, False):
        result = stream_pcm(tiny_server.ws, pcm, rate, realtime=2.0, interim_results=asked)
        assert result.interims == [] and result.others == [], result.events
        assert len(result.replies) == 1


def test_interims_never_reorder_finals(
    tiny_server: Server, voices, continuous: Path, paused: Path
) -> None:
    pcm, rate = read_pcm16(paused)
    # At real time: the long utterance has interims on any machine (4 where a decode takes
    # 1.6 s); the short ones may have none where one takes as long as half the sentence (CI
    # once saw none in three such sentences), as the words come in their finals anyway.
    result = stream_pcm(tiny_server.ws, pcm, rate, realtime=1.0, interim_results=True)
    assert len(result.replies) == 3, result.events
    long_reply, *short_replies = result.replies
    for name in CONTINUOUS:
        assert speech.word_recall(speech.SENTENCES[name], long_reply) >= 0.6, long_reply
    for name, reply in zip(PAUSED_AFTER, short_replies, strict=True):
        assert speech.word_recall(speech.SENTENCES[name], reply) >= 0.6, (name, reply)
    assert result.interims, result.events
    assert result.events[-1][0] == "reply"
    # An interim after utterance k's final can only be utterance k+1's: it must come after
    # that utterance's audio began to arrive. A stale interim of k would come right after
    # the final, about 0.3 s after k's silence closed it (0.5 s into the 2 s between them),
    # when the next utterance is still a second away.
    starts, at = [], 0.0
    for part in paused_parts(voices, continuous):
        starts.append(result.started + at)
        at += speech.duration(part) + 2.0
    finals = [t for kind, _, t in result.events if kind == "reply"]
    for kind, text, t in result.events:
        if kind == "interim":
            answered = sum(f < t for f in finals)  # finals already sent
            assert answered < len(starts) and t > starts[answered], (text, result.events)


def test_an_interim_that_comes_back_after_its_final_is_not_sent(voices, tmp_path) -> None:
    """A final can overtake an interim decode of its utterance (a slow worker, a GPU batch):
    the late interim is dropped, since the client would take it for the next utterance's
    words. The scripted backend answers finals at once; its interims here take past the
    final (the first starts after 0.5 s of speech) but end before the stream does."""
    sentence = voices["children"]
    pcm, rate = read_pcm16(speech.concat([sentence], tmp_path / "one.wav", silence_seconds=6.0))
    pace = 2.0
    slow = speech.duration(sentence) / pace + 1.0
    for interim_seconds in (0.0, slow):
        scripted = {"type": "scripted", "text": "heard", "interim_delay_seconds": interim_seconds}
        with running_server({"routing": [{"backend": "s"}]}, backends={"s": scripted}) as server:
            result = stream_pcm(server.ws, pcm, rate, realtime=pace, interim_results=True)
        kinds = [kind for kind, _, _ in result.events]
        if interim_seconds:
            assert kinds == ["reply"], result.events
        else:  # the same stream with quick interims gets them, all before its final
            assert kinds[-1] == "reply" and kinds.count("interim") >= 2, result.events


def test_an_interim_due_in_a_pause_waits_for_the_next_speech(voices, tmp_path: Path) -> None:
    """Interims due every 100 ms, answered at once (a scripted backend); the utterance closes
    after 1 s of silence. Once the speaker has paused for 0.1 s no interim starts: a pause
    that goes on wants the worker for the utterance's final, and the final says the words.
    Before, interims kept coming through the pause, the last a chunk or two before the final."""
    sentence = voices["children"]
    pcm, rate = read_pcm16(speech.concat([sentence], tmp_path / "one.wav", silence_seconds=3.0))
    config = {
        "routing": [{"backend": "s"}],
        "streaming": {
            "interim_interval_ms": 100,
            "end_silence_ms": 1000,
            "fragment_silence_ms": 1000,
        },
    }
    scripted = {"type": "scripted", "text": "heard"}
    with running_server(config, backends={"s": scripted}) as server:
        result = stream_pcm(server.ws, pcm, rate, realtime=1.0, interim_results=True)
    interims = [t for kind, _, t in result.events if kind == "interim"]
    finals = [t for kind, _, t in result.events if kind == "reply"]
    assert len(finals) == 1 and len(interims) >= 5, result.events  # while it was spoken
    assert finals[0] - interims[-1] >= 0.6, result.events


def test_an_interim_still_decoded_when_its_utterance_closes_is_stopped(
    continuous: Path, tmp_path: Path
) -> None:
    """A short word, a pause, then a long utterance; interims take 7 s each (a slow worker).
    The word's interim is still being decoded when the word's utterance closes: it is stopped
    there (its words come in the final), so the long utterance's first interim starts at once
    and comes while that utterance is still being said. Waited out, the word's interim held
    the stream's interims until 7 s in, and the long utterance's came after its final."""
    word = speech.concat([speech.speak("Yes.", tmp_path / "yes.wav")], tmp_path / "w.wav", 2.0)
    pcm, rate = read_pcm16(speech.concat([word, continuous], tmp_path / "both.wav"))
    scripted = {"type": "scripted", "text": "heard", "interim_delay_seconds": 7.0}
    with running_server({"routing": [{"backend": "s"}]}, backends={"s": scripted}) as server:
        result = stream_pcm(server.ws, pcm, rate, realtime=1.0, interim_results=True)
    assert [kind for kind, _, _ in result.events] == ["reply", "interim", "reply"], result.events


def test_an_interim_waiting_on_a_final_comes_when_it_ends_without_more_audio(
    voices, tmp_path
) -> None:
    """Interims wait while a final of their stream runs. The client here has said the start
    of its next sentence and then sends nothing (a client pausing its microphone, a network
    stall): that sentence's interim must still come as soon as the final is out, not only
    with the client's next audio."""
    first = voices["children"]
    second, _ = read_pcm16(voices["coffee"])
    head = speech.concat([first], tmp_path / "first.wav", silence_seconds=1.0)
    pcm, rate = read_pcm16(head)
    pcm += second[: rate * 2 * 3 // 2]  # 1.5 s of the next sentence, still being spoken
    scripted = {
        "type": "scripted",
        "text": "heard",
        "delay_seconds": 2.0,
        "interim_delay_seconds": 0,
    }
    overrides = {"routing": [{"backend": "s"}], "limits": {"stream_idle_seconds": 4}}
    with running_server(overrides, backends={"s": scripted}) as server:
        # sent 4x real time: the second sentence is all sent while the first one's final runs
        result = stream_pcm(server.ws, pcm, rate, realtime=4.0, interim_results=True, end=False)
    kinds = [kind for kind, _, _ in result.events]
    assert kinds.count("reply") == 2, result.events
    after_first = kinds[kinds.index("reply") + 1 :]
    assert after_first == ["interim", "reply"], result.events
    # the interim followed the first final at once, long before the idle timeout ended it all
    first_final, interim = (t for _, _, t in result.events[kinds.index("reply") :][:2])
    assert interim - first_final < 1.0, result.events


def test_interim_results_must_be_a_boolean(tiny_server: Server) -> None:
    with connect(tiny_server.ws + "/api/core/google/asr") as ws:
        ws.recv(timeout=30)
        audio = {"audio": "AAAAAA==", "rate": 16000, "interim_results": "yes"}
        ws.send(json.dumps(audio))
        error = json.loads(ws.recv(timeout=30))
        assert error["type"] == "error" and error["message"] == "Invalid Message Format"
        assert "interim_results" in error["detail"]


def test_a_busy_whisper_backend_says_so_and_skips_best_effort_jobs(voices) -> None:
    """While its one worker decodes, the backend is not ``idle`` and an interim is skipped at
    once (streams look at ``idle`` before they copy an utterance out for one); once the worker
    is free again, the same interim is decoded."""
    audio = speech.samples_16k(voices["children"])
    final = JobSpec("en", "transcribe", "google", Caller("k"), segmented=True)
    interim = dataclasses.replace(final, interim=True)

    async def run() -> tuple[bool, bool, str, str]:
        backend = WhisperBackend("w", WhisperOptions(model="tiny.en", cpu_threads=1))
        await backend.start()
        try:
            assert backend.idle
            decoding = asyncio.ensure_future(backend.transcribe(audio, final))
            while backend.idle and not decoding.done():  # until it holds the worker
                await asyncio.sleep(0)
            busy = not backend.idle
            with pytest.raises(InterimSkipped):
                await backend.transcribe(audio, interim)
            text = (await decoding).text
            return busy, backend.idle, text, (await backend.transcribe(audio, interim)).text
        finally:
            await backend.close()

    busy, idle_after, text, interim_text = asyncio.run(run())
    assert busy and idle_after
    for heard in (text, interim_text):  # the interim is greedy: its words may differ a little
        assert speech.word_recall(speech.SENTENCES["children"], heard) >= 0.8, heard


def test_a_final_does_not_wait_for_an_interim_to_end(voices, continuous: Path) -> None:
    """One worker, an interim of a long utterance under way when a stream's final comes: the
    final's model calls go before the interim's next one, so the final is answered first (it
    waited for the interim's whole decode before), and the interim still gets its words."""
    long = speech.samples_16k(continuous)
    short = speech.samples_16k(voices["train"])
    final = JobSpec("en", "transcribe", "google", Caller("k"), segmented=True)
    interim = dataclasses.replace(final, interim=True)

    async def run() -> tuple[str, bool, str]:
        backend = WhisperBackend("w", WhisperOptions(model="tiny.en", cpu_threads=1))
        await backend.start()
        try:
            glimpse = asyncio.ensure_future(backend.transcribe(long, interim))
            while backend.room_for_interim and not glimpse.done():  # until it is under way
                await asyncio.sleep(0)
            assert backend.idle  # an early final, too, may start beside it
            text = (await backend.transcribe(short, final)).text
            interim_ended_first = glimpse.done()
            return text, interim_ended_first, (await glimpse).text
        finally:
            await backend.close()

    text, interim_ended_first, interim_text = asyncio.run(run())
    assert speech.word_recall(speech.SENTENCES["train"], text) >= 0.8, text
    assert not interim_ended_first
    assert speech.word_recall(speech.SENTENCES["children"], interim_text) >= 0.6, interim_text


def test_interims_keep_coming_beside_a_long_upload(
    tiny_server: Server, continuous: Path, seven_windows: tuple[Path, str], tmp_path: Path
) -> None:
    """One model worker (the CPU default), a recording of several 30 s windows being decoded
    through the OpenAI API, and a live stream that asks for interims: they still come while
    the recording is decoded (a share of the model's time between its calls), then the
    stream's finals; both answers have their words. The stream says its 10 s utterance twice:
    interims beside recordings get a fifth of the model's time, and where one interim's
    decode takes 1.5 s (a slow 2-vCPU machine) the next may start only 6 s of recording
    calls later, none in one 10 s utterance there."""
    long, said = seven_windows
    twice = speech.concat([continuous, continuous], tmp_path / "twice.wav", silence_seconds=1.5)
    pcm, rate = read_pcm16(twice)
    with UploadInBackground(tiny_server.http, long) as upload:
        result = stream_pcm(tiny_server.ws, pcm, rate, realtime=1.0, interim_results=True)
    assert len(result.replies) == 2, result.events
    for reply in result.replies:
        for name in CONTINUOUS:
            assert speech.word_recall(speech.SENTENCES[name], reply) >= 0.6, result
    beside = [at for kind, _, at in result.events if kind == "interim" and at < upload.finished]
    assert beside, (result.events, upload.finished)
    assert upload.text and speech.word_recall(said, upload.text) > 0.8, upload.text
