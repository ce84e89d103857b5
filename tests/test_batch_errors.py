"""Every error of the batch protocol: the exact JSON, the close code, and a server that keeps
serving afterwards."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests import speech
from tests.client import batch, transcribe
from tests.serving import Server, running_server


def assert_error(exchange, error: str, close_code: int, message_part: str = "") -> None:
    assert len(exchange.messages) == 1, (
        exchange.messages,
        exchange.close_code,
        exchange.close_reason,
    )
    reply = exchange.messages[0]
    assert set(reply) == {"error", "message"}, reply
    assert reply["error"] == error, reply
    assert message_part in reply["message"], reply
    assert exchange.close_code == close_code
    assert exchange.close_reason == error


def assert_still_serving(server: Server, wav: bytes) -> None:
    reply = transcribe(server.ws, wav).reply
    assert speech.word_recall(speech.SENTENCES["children"], reply["text"]) >= 0.75, reply


def wav_header(
    fmt_tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    bits: int = 16,
    data: bytes = b"\x00\x01" * 1600,
    block_align: int | None = None,
) -> bytes:
    block_align = channels * bits // 8 if block_align is None else block_align
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block_align, block_align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


BAD_METADATA = [
    ("not json", "invalid_request", "not valid JSON"),
    ("[1, 2]", "invalid_request", "JSON object"),
    (
        '{"type": "transcribe", "a": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "invalid_request",
        "not valid JSON",
    ),
    ({"language": "en"}, "invalid_request", "no 'type'"),
    ({"type": "summarise"}, "invalid_request", "unknown type"),
    ({"type": "transcribe", "language": 5}, "invalid_request", "'language'"),
    ({"type": "transcribe", "task": ["transcribe"]}, "invalid_request", "'task'"),
    ({"type": "transcribe", "machine_id": 7}, "invalid_request", "'machine_id'"),
    ({"type": "transcribe", "postprocess": "yes"}, "invalid_request", "'postprocess'"),
    ({"type": "transcribe", "machine_id": "x" * 300}, "invalid_request", "'machine_id'"),
    (b"RIFF\x00\x00", "invalid_request", "got a binary frame"),
    ({"type": "transcribe", "language": "xx"}, "unsupported_language", "'xx'"),
    ({"type": "transcribe", "language": "english"}, "unsupported_language", "ISO 639-1"),
    ({"type": "transcribe", "language": "de"}, "unsupported_language", "'de'"),
    ({"type": "transcribe", "task": "summarise"}, "unsupported_task", "'summarise'"),
    ({"type": "transcribe", "task": "translate"}, "unsupported_task", "'translate'"),
]


@pytest.mark.parametrize(
    ("frame", "error", "message_part"),
    BAD_METADATA,
    ids=[f"{e}-{i}" for i, (_, e, _) in enumerate(BAD_METADATA)],
)
def test_bad_metadata(tiny_server: Server, voices, frame, error: str, message_part: str) -> None:
    wav = voices["children"].read_bytes()
    jobs_before = backend_jobs(tiny_server)
    started = time.monotonic()
    # sent the way clients send: metadata and audio back to back, without waiting
    exchange = batch(tiny_server.ws, frame, wav)
    assert_error(exchange, error, 1008, message_part)
    assert time.monotonic() - started < 1.5, "the refused audio should close at once"
    assert backend_jobs(tiny_server) == jobs_before, "a refused request cost backend time"
    assert_still_serving(tiny_server, wav)


def backend_jobs(server: Server) -> float:
    return server.metric("speechgw_backend_seconds_count", backend="whisper")


def test_error_reaches_a_client_that_waits_before_sending_audio(tiny_server: Server) -> None:
    with connect(tiny_server.ws + "/ws/transcribe") as ws:
        ws.send(json.dumps({"type": "transcribe", "language": "xx"}))
        started = time.monotonic()
        reply = json.loads(ws.recv(timeout=10))
        assert time.monotonic() - started < 0.5
    assert reply["error"] == "unsupported_language"


def test_text_frame_where_audio_was_due(tiny_server: Server) -> None:
    exchange = batch(tiny_server.ws, {"type": "transcribe"}, "here is my audio")
    assert_error(exchange, "invalid_request", 1008, "binary frame holding a WAV file")


BAD_AUDIO = [
    (b"", "not a RIFF WAVE file"),
    (b"ID3\x03\x00\x00\x00" + b"\x00" * 100, "not a RIFF WAVE file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "truncated"),
    # a codec neither the reader nor FFmpeg knows (ADPCM and GSM 6.10 go to FFmpeg)
    (wav_header(fmt_tag=0x4242, bits=4), "unsupported WAV encoding: format tag 0x4242"),
    (wav_header(fmt_tag=7, bits=16), "unsupported WAV encoding: mu-law with 16 bits"),
    (wav_header(bits=12), "unsupported WAV encoding"),
    (wav_header(fmt_tag=3, bits=16), "unsupported WAV encoding"),
    (wav_header(data=b""), "no samples"),
    (wav_header(data=b"\x01"), "no samples"),
    (wav_header(rate=0), "8000 to 384000 Hz are accepted"),
    (wav_header(channels=0), "no channels"),
    (wav_header(block_align=7), "corrupt"),
    (wav_header()[:36], "no data chunk"),
]


@pytest.mark.parametrize(
    ("wav", "message_part"), BAD_AUDIO, ids=[f"audio-{i}" for i in range(len(BAD_AUDIO))]
)
def test_invalid_audio(tiny_server: Server, voices, wav: bytes, message_part: str) -> None:
    exchange = transcribe(tiny_server.ws, wav)
    assert_error(exchange, "invalid_audio", 1008, message_part)
    assert_still_serving(tiny_server, voices["children"].read_bytes())


def test_unauthorized_costs_no_backend_time(voices) -> None:
    wav = voices["children"].read_bytes()
    with running_server(env={"SERVER_API_KEY": "s3cret-key"}) as server:
        for fields in ({}, {"api_key": "wrong"}, {"api_key": 12345}, {"api_key": ""}):
            assert_error(transcribe(server.ws, wav, **fields), "unauthorized", 1008)
        assert server.metric("speechgw_backend_seconds_count", backend="whisper") == 0
        assert (
            server.metric(
                "asr_requests_total", machine_id="unknown", task="transcribe", status="unauthorized"
            )
            == 4
        )
        # a ping needs no key
        with connect(server.ws + "/ws/transcribe") as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "status": "ok"}
        good = transcribe(server.ws, wav, api_key="s3cret-key").reply
        assert speech.word_recall(speech.SENTENCES["children"], good["text"]) >= 0.75


def test_named_keys_from_config(voices, caplog: pytest.LogCaptureFixture) -> None:
    wav = voices["children"].read_bytes()
    keys = {"auth": {"keys": [{"name": "alice", "key": "alice-key-123"}]}}
    with running_server(keys) as server:
        assert_error(transcribe(server.ws, wav, api_key="bob-key"), "unauthorized", 1008)
        assert transcribe(server.ws, wav, api_key="alice-key-123").close_code == 1000
    access = [r.getMessage() for r in caplog.records if r.name == "speechgw.access"]
    assert any("key=alice" in line and "outcome=ok" in line for line in access), access
    assert not any("alice-key-123" in r.getMessage() for r in caplog.records)


def test_audio_too_long(voices, tmp_path: Path) -> None:
    long = speech.concat([voices["children"]] * 3, tmp_path / "long.wav")
    with running_server({"limits": {"max_audio_seconds": 5}}) as server:
        exchange = transcribe(server.ws, long.read_bytes())
        assert_error(exchange, "audio_too_long", 1009, "the limit is 5 s")
        assert_still_serving(server, voices["children"].read_bytes())


def test_timeouts_when_the_client_stops_sending(voices) -> None:
    with running_server({"limits": {"receive_timeout_seconds": 0.5}}) as server:
        started = time.monotonic()
        silent = batch(server.ws, timeout=10)  # connects, sends nothing
        assert_error(silent, "timeout", 1008, "no metadata frame within 0.5 s")
        no_audio = batch(server.ws, {"type": "transcribe"}, timeout=10)
        assert_error(no_audio, "timeout", 1008, "no audio frame within 0.5 s")
        assert time.monotonic() - started < 5
        assert_still_serving(server, voices["children"].read_bytes())


def test_frame_over_the_limit_is_refused_with_1009(voices) -> None:
    with running_server({"limits": {"max_frame_bytes": 300_000}}) as server:
        exchange = transcribe(server.ws, b"RIFF" + b"\x00" * 400_000)
        assert exchange.close_code == 1009
        assert_still_serving(server, voices["children"].read_bytes())


@pytest.mark.parametrize(
    ("fail", "error", "code"),
    [("unavailable", "backend_unavailable", 1013), ("crash", "internal_error", 1011)],
)
def test_backend_failures(voices, fail: str, error: str, code: int) -> None:
    backends = {"null": {"type": "scripted", "fail": fail}}
    with running_server(backends=backends) as server:
        exchange = transcribe(server.ws, voices["children"].read_bytes())
        assert_error(exchange, error, code)
        assert (
            server.metric(
                "asr_requests_total", machine_id="unknown", task="transcribe", status=error
            )
            == 1
        )


def test_fallback_to_the_next_backend(voices) -> None:
    backends = {
        "broken": {"type": "scripted", "fail": "unavailable"},
        "spare": {"type": "scripted", "text": "served by the spare"},
    }
    routing = {"routing": [{"backend": "broken", "fallback": ["spare"]}]}
    with running_server(routing, backends=backends) as server:
        reply = transcribe(server.ws, voices["children"].read_bytes()).reply
        assert reply["text"] == "served by the spare"
        assert server.metric("speechgw_fallbacks_total", **{"from": "broken", "to": "spare"}) == 1


def test_client_that_leaves_mid_request_does_not_disturb_others(
    tiny_server: Server, voices
) -> None:
    wav = voices["children"].read_bytes()
    for _ in range(3):
        with connect(tiny_server.ws + "/ws/transcribe", max_size=None) as ws:
            ws.send(json.dumps({"type": "transcribe"}))
            ws.send(wav)
        # closed before the answer
    assert_still_serving(tiny_server, wav)
