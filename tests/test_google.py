"""The Google backend through the real ``google-cloud-speech`` client over a real gRPC channel
to the local Speech API emulator; nothing of the client library is patched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from google.cloud import speech

from tests import speech as voices_module
from tests.client import transcribe
from tests.google_emulator import SpeechEmulator, running_emulator
from tests.serving import Server, running_server
from tests.streaming_client import read_pcm16, stream_pcm

TINY = {"type": "whisper", "model": "tiny.en", "cpu_threads": 2}


@pytest.fixture(scope="module")
def emulator() -> Iterator[SpeechEmulator]:
    with running_emulator() as emulator:
        yield emulator


@pytest.fixture
def fresh(emulator: SpeechEmulator) -> SpeechEmulator:
    emulator.faults.clear()
    emulator.calls.clear()
    return emulator


def google(emulator: SpeechEmulator, **options) -> dict:
    return {
        "type": "google",
        "endpoint": f"127.0.0.1:{emulator.port}",
        "insecure": True,
        "retry_seconds": 1.0,
        "backoff_seconds": 0.05,
        "timeout_seconds": 1.0,
        **options,
    }


@pytest.fixture(scope="module")
def google_first(emulator: SpeechEmulator) -> Iterator[Server]:
    """Google for everything it can do, tiny.en as its fallback and for the rest."""
    backends = {"google": google(emulator), "whisper": TINY}
    routing = {"routing": [{"backend": "google", "fallback": ["whisper"]}, {"backend": "whisper"}]}
    with running_server(routing, backends=backends) as server:
        yield server


def test_batch_through_recognize(google_first: Server, fresh: SpeechEmulator, voices) -> None:
    wav = voices["children"].read_bytes()
    reply = transcribe(google_first.ws, wav, language="bg").reply
    assert reply["text"] == "hello from the emulator"
    assert reply["language"] == "bg"
    (segment,) = reply["segments"]
    assert segment["start"] == 0.0 and 2.0 < segment["end"] < 4.0
    (call,) = fresh.calls
    assert call.method == "Recognize"
    assert call.config.language_code == "bg-BG"
    assert call.config.sample_rate_hertz == 16000
    assert call.config.encoding == speech.RecognitionConfig.AudioEncoding.LINEAR16
    assert abs(len(call.audio) / 32000 - reply["duration"]) < 0.01


def test_streaming_protocol_through_google(
    google_first: Server, fresh: SpeechEmulator, voices, tmp_path: Path
) -> None:
    two = voices_module.concat(
        [voices["market"], voices["window"]], tmp_path / "two.wav", silence_seconds=1.0
    )
    pcm, rate = read_pcm16(two)
    result = stream_pcm(google_first.ws, pcm, rate, language_code="de-DE")
    assert result.replies == ["hello from the emulator"] * 2
    assert [c.config.language_code for c in fresh.calls] == ["de-DE", "de-DE"]


def test_translate_is_routed_past_google(
    google_first: Server, fresh: SpeechEmulator, voices
) -> None:
    # tiny.en cannot translate either: the request is refused, and Google was never asked
    reply = transcribe(google_first.ws, voices["children"].read_bytes(), task="translate").reply
    assert reply["error"] == "unsupported_task"
    assert fresh.calls == []


def test_transient_unavailable_is_retried(
    google_first: Server, fresh: SpeechEmulator, voices
) -> None:
    fresh.faults.extend(["UNAVAILABLE", "DEADLINE_EXCEEDED"])
    reply = transcribe(google_first.ws, voices["children"].read_bytes()).reply
    assert reply["text"] == "hello from the emulator"
    assert len(fresh.calls) == 3


@pytest.mark.parametrize("fault", ["UNAVAILABLE", "PERMISSION_DENIED", "SLOW"])
def test_failures_fall_back_to_local_whisper(
    google_first: Server, fresh: SpeechEmulator, voices, fault: str
) -> None:
    fresh.faults.extend([fault] * 50)
    before = google_first.metric("speechgw_fallbacks_total", **{"from": "google", "to": "whisper"})
    reply = transcribe(google_first.ws, voices["children"].read_bytes()).reply
    assert voices_module.word_recall(voices_module.SENTENCES["children"], reply["text"]) >= 0.75
    assert (
        google_first.metric("speechgw_fallbacks_total", **{"from": "google", "to": "whisper"})
        == before + 1
    )
    if fault == "PERMISSION_DENIED":
        assert len(fresh.calls) == 1  # not retried: it will not get better
    fresh.faults.clear()


def test_without_a_fallback_the_client_gets_backend_unavailable(
    fresh: SpeechEmulator, voices
) -> None:
    backends = {"google": google(fresh)}
    with running_server({"routing": [{"backend": "google"}]}, backends=backends) as server:
        fresh.faults.extend(["UNAVAILABLE"] * 50)
        exchange = transcribe(server.ws, voices["children"].read_bytes())
        assert exchange.reply["error"] == "backend_unavailable"
        assert "UNAVAILABLE" in exchange.reply["message"]
        assert exchange.close_code == 1013
        fresh.faults.clear()
        pcm, rate = read_pcm16(voices["coffee"])
        fresh.faults.extend(["PERMISSION_DENIED"] * 5)
        result = stream_pcm(server.ws, pcm, rate)
        assert [e["message"] for e in result.errors] == ["Speech Recognition Error"]
        fresh.faults.clear()


def test_long_audio_goes_through_streaming_recognize_in_sessions(
    fresh: SpeechEmulator, voices, tmp_path
) -> None:
    long = voices_module.concat(
        [voices[n] for n in voices_module.SENTENCES] * 6, tmp_path / "long.wav", silence_seconds=0.5
    )  # about 125 s
    backends = {"google": google(fresh, session_seconds=50, timeout_seconds=30)}
    with running_server({"routing": [{"backend": "google"}]}, backends=backends) as server:
        fresh.faults.extend(["", "UNAVAILABLE"])  # the second session fails once: sent again
        reply = transcribe(server.ws, long.read_bytes()).reply
    assert [c.method for c in fresh.calls] == ["StreamingRecognize"] * 3
    sent = sum(len(c.audio) for c in fresh.calls) / 32000
    assert abs(sent - reply["duration"]) < 0.01  # every sample sent once
    assert [s["start"] for s in reply["segments"]] == [0.0, 50.0, 100.0]
    assert reply["segments"][-1]["end"] == pytest.approx(reply["duration"], abs=0.01)


def test_a_stream_aborted_midway_falls_back(fresh: SpeechEmulator, voices, tmp_path) -> None:
    long = voices_module.concat(
        [voices[n] for n in voices_module.SENTENCES] * 4, tmp_path / "long.wav", silence_seconds=0.5
    )  # about 85 s
    backends = {
        "google": google(fresh, timeout_seconds=30),
        "spare": {"type": "null", "text": "served by the spare"},
    }
    routing = {"routing": [{"backend": "google", "fallback": ["spare"]}]}
    with running_server(routing, backends=backends) as server:
        fresh.faults.append("ABORT")
        reply = transcribe(server.ws, long.read_bytes()).reply
    assert reply["text"] == "served by the spare"
    assert fresh.calls == []  # the aborted stream never completed


def test_real_words_through_the_emulator(voices) -> None:
    """The emulator answering with a real recognizer: the words cross the real client, gRPC
    and the gateway intact."""
    from faster_whisper import WhisperModel
    from speechgw.backends.whisper import resolve_model

    model = WhisperModel(resolve_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=2)

    def recognize(pcm: bytes, language_code: str) -> str:
        audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
        segments, _ = model.transcribe(audio, language=language_code.split("-")[0])
        return "".join(s.text for s in segments).strip()

    with (
        running_emulator(SpeechEmulator(recognizer=recognize)) as emulator,
        running_server(
            {"routing": [{"backend": "google"}]}, backends={"google": google(emulator)}
        ) as server,
    ):
        reply = transcribe(server.ws, voices["coffee"].read_bytes()).reply
    assert voices_module.word_recall(voices_module.SENTENCES["coffee"], reply["text"]) >= 0.75
