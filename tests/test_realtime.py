"""OpenAI's Realtime API transcription sessions (``/v1/realtime``), driven by the official
``openai`` package's ``client.realtime.connect()`` as its users drive it, and by a raw
WebSocket client for what the SDK would not send: a real server, the real model, a real
SQLite ledger."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI
from scipy.signal import resample_poly

from tests import speech
from tests.ledger import rows as ledger_rows
from tests.serving import ServeProcess, Server, running_server

KEY = "realtime-test-key-0123"
AUTH = {"auth": {"keys": [{"name": "carol", "key": KEY}]}}
NAMES = ("children", "coffee")
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
FAILED = "conversation.item.input_audio_transcription.failed"
SPOKEN = {"type": "transcription", "audio": {"input": {"transcription": {"language": "en"}}}}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("realtime") / "ledger.db"


@pytest.fixture(scope="module")
def server(ledger: Path) -> Iterator[Server]:
    """tiny.en with a key and a real SQLite ledger."""
    with running_server({**AUTH, "store": {"path": str(ledger)}}) as serving:
        yield serving


@pytest.fixture(scope="module")
def two_turns(voices, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list]:
    """Two sentences, a second of silence around each, at 16 kHz; and where each lies."""
    folder = tmp_path_factory.mktemp("turns")
    return speech.sentences_apart(voices, list(NAMES), 1.0, folder)


def pcm24k(samples_16k: np.ndarray) -> bytes:
    """16 kHz float samples as the Realtime API's ``audio/pcm``: 24 kHz LINEAR16."""
    audio = resample_poly(samples_16k, 3, 2)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def chunks(data: bytes, size: int = 4800) -> list[str]:
    """base64 appends of ``size`` bytes (100 ms of 24 kHz audio), as a microphone sends them."""
    return [base64.b64encode(data[i : i + size]).decode() for i in range(0, len(data), size)]


async def session(
    server: Server,
    update: dict[str, Any] | None,
    actions: list[dict[str, Any]],
    answers: int,
    key: str = KEY,
) -> list[dict[str, Any]]:
    """Connect with the SDK, send ``update`` (a ``session.update``'s session) and the client
    events ``actions``, and read the server's events until ``answers`` turns are answered
    (completed or failed). Returns them all, as dicts."""
    client = AsyncOpenAI(base_url=server.http + "/v1", api_key=key, max_retries=0)
    events: list[dict[str, Any]] = []
    try:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            if update is not None:
                await conn.session.update(session=update)  # type: ignore[arg-type]
            for action in actions:
                await conn.send(action)  # type: ignore[arg-type]
            async with asyncio.timeout(120):
                async for event in conn:
                    events.append(event.model_dump())
                    if sum(e["type"] in (COMPLETED, FAILED) for e in events) == answers:
                        break
    finally:
        await client.close()
    return events


def appends(data: bytes, size: int = 4800) -> list[dict[str, Any]]:
    return [{"type": "input_audio_buffer.append", "audio": part} for part in chunks(data, size)]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_an_sdk_client_is_answered_turn_by_turn(server: Server, two_turns, ledger: Path) -> None:
    audio, spans = two_turns
    events = asyncio.run(session(server, SPOKEN, appends(pcm24k(audio)), answers=2))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["session.created", "session.updated"]
    created = events[0]["session"]
    assert created["type"] == "transcription"
    turn = created["audio"]["input"]["turn_detection"]
    assert (turn["type"], turn["silence_duration_ms"], turn["prefix_padding_ms"]) == (
        "server_vad",
        500,
        300,
    )
    started = of_type(events, "input_audio_buffer.speech_started")
    stopped = of_type(events, "input_audio_buffer.speech_stopped")
    committed = of_type(events, "input_audio_buffer.committed")
    completed = of_type(events, COMPLETED)
    items = [e["item_id"] for e in started]
    assert len(items) == 2 and len(set(items)) == 2
    assert [e["item_id"] for e in stopped] == items
    assert [e["item_id"] for e in committed] == items
    assert [e["previous_item_id"] for e in committed] == [None, items[0]]
    assert [e["item_id"] for e in completed] == items
    # each turn's events in the order a client relies on
    for item in items:
        order = [e["type"] for e in events if e.get("item_id") == item]
        assert order[:3] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
        ]
        assert order[-1] == COMPLETED
        assert DELTA in order  # the words, as deltas, before the completed transcript
    # where the speech was: the sentences' spans, with the lead-in and the closing pause
    for (start, end), began, ended in zip(spans, started, stopped, strict=True):
        assert start / 16 - 500 <= began["audio_start_ms"] <= start / 16 + 100
        assert end / 16 - 500 <= ended["audio_end_ms"] <= end / 16 + 800
    for name, event in zip(NAMES, completed, strict=True):
        assert speech.word_recall(speech.SENTENCES[name], event["transcript"]) >= 0.8
        assert event["usage"]["type"] == "duration" and event["usage"]["seconds"] > 1
        assert event["languages"] == [{"code": "en"}]
    (billed,) = ledger_rows(
        ledger, "SELECT count(*) FROM usage WHERE protocol = 'realtime' AND key_name = 'carol'"
    )
    assert billed == (2,)


def test_the_pause_that_ends_a_turn_is_the_sessions(server: Server, two_turns) -> None:
    """``silence_duration_ms``: 2 s makes the two sentences, a second apart, one turn."""
    audio, _ = two_turns
    update = {
        "type": "transcription",
        "audio": {
            "input": {
                "transcription": {"language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 2000},
            }
        },
    }
    ended = np.concatenate((audio, np.zeros(40000, np.float32)))  # 2.5 s more of silence
    events = asyncio.run(session(server, update, appends(pcm24k(ended)), answers=1))
    assert events[1]["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 2000
    assert len(of_type(events, "input_audio_buffer.speech_started")) == 1
    (completed,) = of_type(events, COMPLETED)
    both = " ".join(speech.SENTENCES[name] for name in NAMES)
    assert speech.word_recall(both, completed["transcript"]) >= 0.8


def test_a_cleared_turn_is_never_transcribed(server: Server, voices) -> None:
    """server_vad: half a sentence, cleared while it is spoken, then another sentence: one
    turn answered, the second; the first was started and never committed."""
    market = pcm24k(speech.samples_16k(voices["market"]))
    coffee = pcm24k(speech.samples_16k(voices["coffee"]))
    silence = bytes(48000)  # a second
    actions = [
        *appends(market[: len(market) // 2 // 2 * 2]),
        {"type": "input_audio_buffer.clear"},
        *appends(silence + coffee + silence),
    ]
    events = asyncio.run(session(server, SPOKEN, actions, answers=1))
    started = [e["item_id"] for e in of_type(events, "input_audio_buffer.speech_started")]
    committed = [e["item_id"] for e in of_type(events, "input_audio_buffer.committed")]
    (completed,) = of_type(events, COMPLETED)
    assert len(started) == 2 and committed == started[1:] == [completed["item_id"]]
    assert speech.word_recall(speech.SENTENCES["coffee"], completed["transcript"]) >= 0.8
    assert "market" not in completed["transcript"].lower()


def test_whisper_1_sends_the_whole_transcript_as_one_delta(server: Server, two_turns) -> None:
    audio, _ = two_turns
    update = {
        "type": "transcription",
        "audio": {"input": {"transcription": {"model": "whisper-1", "language": "en"}}},
    }
    events = asyncio.run(session(server, update, appends(pcm24k(audio)), answers=2))
    for event in of_type(events, COMPLETED):
        deltas = [e["delta"] for e in of_type(events, DELTA) if e["item_id"] == event["item_id"]]
        assert deltas == [event["transcript"]]


def test_a_push_to_talk_client_ends_its_turns(server: Server, voices, tmp_path: Path) -> None:
    """``turn_detection: null``: each commit is a turn, pauses and all; a commit of nothing is
    OpenAI's error; a cleared turn is never transcribed."""
    one = pcm24k(speech.samples_16k(voices["children"]))
    other = pcm24k(speech.samples_16k(voices["train"]))
    update = {**SPOKEN, "audio": {"input": {**SPOKEN["audio"]["input"], "turn_detection": None}}}
    actions = [
        {"type": "input_audio_buffer.commit", "event_id": "empty-commit"},
        *appends(pcm24k(speech.samples_16k(voices["market"]))),
        {"type": "input_audio_buffer.clear"},
        *appends(one),
        {"type": "input_audio_buffer.commit"},
        *appends(other),
        {"type": "input_audio_buffer.commit"},
    ]
    events = asyncio.run(session(server, update, actions, answers=2))
    assert events[1]["session"]["audio"]["input"]["turn_detection"] is None
    (refused,) = of_type(events, "error")
    assert refused["error"]["code"] == "input_audio_buffer_commit_empty"
    assert refused["error"]["event_id"] == "empty-commit"
    assert refused["error"]["message"].startswith(
        "Error committing input audio buffer: buffer too small."
    )
    assert len(of_type(events, "input_audio_buffer.cleared")) == 1
    assert not of_type(events, "input_audio_buffer.speech_started")
    committed = [e["item_id"] for e in of_type(events, "input_audio_buffer.committed")]
    completed = of_type(events, COMPLETED)
    assert [e["item_id"] for e in completed] == committed
    texts = [e["transcript"] for e in completed]
    assert speech.word_recall(speech.SENTENCES["children"], texts[0]) >= 0.8
    assert speech.word_recall(speech.SENTENCES["train"], texts[1]) >= 0.8
    assert "market" not in " ".join(texts).lower()


def test_telephone_audio_in_g711(server: Server, voices) -> None:
    """``audio/pcmu`` and ``audio/pcma``: 8 kHz G.711, as telephony bridges send it."""
    path = voices["children"]
    for kind, encoding in (("audio/pcmu", "u-law"), ("audio/pcma", "a-law")):
        law = speech.convert(
            path, path.with_suffix(f".{encoding}.raw"), "-r", "8000", "-e", encoding, "-t", "raw"
        )
        update = {
            "type": "transcription",
            "audio": {"input": {"format": {"type": kind}, "turn_detection": None}},
        }
        actions = [*appends(law.read_bytes(), 800), {"type": "input_audio_buffer.commit"}]
        events = asyncio.run(session(server, update, actions, answers=1))
        (completed,) = of_type(events, COMPLETED)
        assert speech.word_recall(speech.SENTENCES["children"], completed["transcript"]) >= 0.8


async def raw_session(
    server: Server,
    messages: list[str | bytes],
    answers: int,
    headers: dict | None = None,
    subprotocols: list[str] | None = None,
) -> list[dict[str, Any]]:
    """A raw WebSocket client: sends ``messages`` as they are and reads until ``answers``
    error or completed events came."""
    url = server.ws + "/v1/realtime?intent=transcription"
    events: list[dict[str, Any]] = []
    async with websockets.connect(
        url,
        additional_headers=headers if headers is not None else {"Authorization": f"Bearer {KEY}"},
        subprotocols=subprotocols,  # type: ignore[arg-type]
    ) as ws:
        for message in messages:
            await ws.send(message)
        async with asyncio.timeout(120):
            while sum(e["type"] in ("error", COMPLETED) for e in events) < answers:
                events.append(json.loads(await ws.recv()))
    return events


def test_refused_events_get_openais_error_and_the_session_goes_on(server: Server, voices) -> None:
    audio = pcm24k(speech.samples_16k(voices["coffee"]))
    turn_off = json.dumps(
        {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
        }
    )
    refused = [
        ("not json", "invalid_json", None),
        (b"\x00\x01", "invalid_json", None),
        ('{"no": "type"}', "missing_required_parameter", "type"),
        ('{"type": "response.create"}', "invalid_value", "type"),
        ('{"type": "no.such.event"}', "invalid_value", "type"),
        (
            '{"type": "session.update", "session": {"type": "realtime"}}',
            "invalid_value",
            "session.type",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/flac"}}},
                    },
                }
            ),
            "invalid_value",
            "session.audio.input.format.type",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {
                            "input": {
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": -1}
                            }
                        },
                    },
                }
            ),
            "invalid_value",
            "session.audio.input.turn_detection.silence_duration_ms",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"transcription": {"language": "klingon"}}},
                    },
                }
            ),
            "unsupported_language",
            "session.audio.input.transcription.language",
        ),
        ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_audio", None),
        ('{"type": "input_audio_buffer.append", "audio": 5}', "invalid_value", "audio"),
    ]
    messages: list[str | bytes] = [m for m, _, _ in refused]
    messages += [turn_off, *(json.dumps(a) for a in appends(audio))]
    messages.append(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"language": "de"}}},
                },
            }
        )
    )
    messages.append('{"type": "input_audio_buffer.commit"}')
    events = asyncio.run(raw_session(server, messages, answers=len(refused) + 2))
    errors = of_type(events, "error")
    said = [(e["error"]["code"], e["error"]["param"]) for e in errors]
    assert said == [(code, param) for _, code, param in refused] + [("session_in_use", "session")]
    assert all(e["error"]["type"] == "invalid_request_error" for e in errors)
    (completed,) = of_type(events, COMPLETED)
    assert speech.word_recall(speech.SENTENCES["coffee"], completed["transcript"]) >= 0.8


def test_an_unknown_model_is_refused_until_the_client_names_one(server: Server, voices) -> None:
    audio = pcm24k(speech.samples_16k(voices["coffee"]))
    unknown = {
        "type": "transcription",
        "audio": {"input": {"transcription": {"model": "no-such-model"}, "turn_detection": None}},
    }
    known = {
        "type": "transcription",
        "audio": {"input": {"transcription": {"model": "gpt-transcribe"}}},
    }
    messages = [
        json.dumps({"type": "session.update", "session": unknown}),
        json.dumps(appends(audio)[0]),
        json.dumps({"type": "session.update", "session": known}),
        *(json.dumps(a) for a in appends(audio)),
        '{"type": "input_audio_buffer.commit"}',
    ]
    events = asyncio.run(raw_session(server, messages, answers=2))
    (error,) = of_type(events, "error")
    assert error["error"]["code"] == "invalid_request"
    assert error["error"]["param"] == "session.audio.input.transcription.model"
    assert "no-such-model" in error["error"]["message"]
    (completed,) = of_type(events, COMPLETED)
    assert speech.word_recall(speech.SENTENCES["coffee"], completed["transcript"]) >= 0.8


def test_the_key_is_checked_before_the_upgrade(server: Server, voices) -> None:
    """A wrong key is refused with OpenAI's 401 before the WebSocket opens; a browser's key,
    sent as a subprotocol, is taken."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(raw_session(server, [], 0, headers={"Authorization": "Bearer wrong"}))
    response = refused.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "unauthorized"
    audio = pcm24k(speech.samples_16k(voices["coffee"]))
    messages = [
        json.dumps(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
            }
        ),
        *(json.dumps(a) for a in appends(audio)),
        '{"type": "input_audio_buffer.commit"}',
    ]
    events = asyncio.run(
        raw_session(
            server,
            messages,
            1,
            headers={},
            subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"],
        )
    )
    (completed,) = of_type(events, COMPLETED)
    assert speech.word_recall(speech.SENTENCES["coffee"], completed["transcript"]) >= 0.8


def test_a_shutdown_answers_the_turn_being_spoken_then_closes_1001(tmp_path: Path, voices) -> None:
    """SIGTERM mid-turn: the turn is committed and answered, billed, and the socket closes
    1001; the process exits 0."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"store:\n  path: {tmp_path / 'ledger.db'}\n"
        "backends:\n  'null': {type: scripted, text: finished, delay_seconds: 0.5}\n"
        "routing:\n  - backend: 'null'\n"
    )
    push_to_talk = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
    audio = pcm24k(speech.samples_16k(voices["coffee"]))

    async def run(port: int, process: Any) -> tuple[list[dict[str, Any]], int | None]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            await ws.send(json.dumps({"type": "session.update", "session": push_to_talk}))
            for append in appends(audio):
                await ws.send(json.dumps(append))
            # events are taken in order: its answer says the audio has been taken
            await ws.send(json.dumps({"type": "session.update", "session": push_to_talk}))
            events: list[dict[str, Any]] = []
            while len(of_type(events, "session.updated")) < 2:
                events.append(json.loads(await ws.recv()))
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(60):
                    while True:
                        events.append(json.loads(await ws.recv()))
            return events, ws.close_code

    server = ServeProcess("--config", str(config)).__enter__()
    try:
        events, code = asyncio.run(run(server.port, server.process))
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()
    (committed,) = of_type(events, "input_audio_buffer.committed")
    (completed,) = of_type(events, COMPLETED)
    assert completed["item_id"] == committed["item_id"] and completed["transcript"] == "finished"
    assert code == 1001
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT protocol FROM usage")
    assert rows == [("realtime",)]


def test_a_turn_too_short_to_be_speech_is_answered_empty_in_its_turn(voices, tmp_path) -> None:
    """A turn webrtcvad heard as less than ``min_speech_ms`` of speech is not transcribed, but
    it was started, so it is committed and completed with "" (and in order)."""
    oh = speech.samples_16k(speech.speak("Oh.", tmp_path / "oh.wav"))
    gap = np.zeros(24000, np.float32)
    children = speech.samples_16k(voices["children"])
    audio = np.concatenate((gap, oh, gap, children, gap))
    with running_server({"streaming": {"min_speech_ms": 900}}) as server:
        events = asyncio.run(session(server, SPOKEN, appends(pcm24k(audio)), answers=2))
    started = [e["item_id"] for e in of_type(events, "input_audio_buffer.speech_started")]
    committed = [e["item_id"] for e in of_type(events, "input_audio_buffer.committed")]
    completed = of_type(events, COMPLETED)
    assert started == committed == [e["item_id"] for e in completed]
    assert completed[0]["transcript"] == "" and completed[0]["usage"]["seconds"] == 0
    assert completed[0]["languages"] == []
    assert speech.word_recall(speech.SENTENCES["children"], completed[1]["transcript"]) >= 0.8
