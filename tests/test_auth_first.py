"""Auth first, on every protocol: a client without a valid key learns nothing but
``unauthorized``, whatever else is wrong with its request; with the key, the same request gets
its own error."""

from __future__ import annotations

import base64
import json

import pytest
from websockets.exceptions import InvalidStatus

from tests.client import batch
from tests.serving import running_server
from tests.streaming_client import open_stream

SCRIPTED = {"scripted": {"type": "scripted", "text": "heard"}}
KEY = "right-key-1"
WAV_STUB = b"RIFF\x00\x00\x00\x00WAVE"  # never read: every request here fails before its audio


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"language": 42}, "invalid_request"),
        ({"task": "dance"}, "unsupported_task"),
        ({"language": "not a language"}, "unsupported_language"),
        ({"language": "xx"}, "unsupported_language"),  # shaped right, served by nobody
        ({"machine_id": "m" * 300}, "invalid_request"),
        ({"postprocess": "yes"}, "invalid_request"),
        ({"type": "transcribe-now"}, "invalid_request"),
    ],
)
def test_batch_a_wrong_key_with_a_malformed_field_gets_unauthorized(
    fields: dict, error: str
) -> None:
    backends = {"w": {"type": "scripted", "text": "heard"}}
    keys = {"auth": {"keys": [{"name": "ops", "key": KEY}]}}
    routing = {"routing": [{"backend": "w", "match": {"language": ["en", "de"]}}]}
    with running_server({**keys, **routing}, backends=backends) as server:
        for key in ({}, {"api_key": "wrong-key"}, {"api_key": 7}):
            frame = {"type": "transcribe", "language": "en", **key, **fields}
            exchange = batch(server.ws, frame, WAV_STUB)
            assert exchange.messages == [
                {"error": "unauthorized", "message": exchange.messages[0]["message"]}
            ]
            assert exchange.close_code == 1008 and exchange.close_reason == "unauthorized"
        # the valid key: now the field is what is wrong
        frame = {"type": "transcribe", "language": "en", "api_key": KEY, **fields}
        assert batch(server.ws, frame, WAV_STUB).messages[0]["error"] == error


def test_streaming_a_wrong_key_is_refused_before_any_message_is_read() -> None:
    """The streaming key travels in the query string: it is checked before the upgrade, so
    a first message with a bad rate and language is never read without a valid key."""
    routing = {"routing": [{"backend": "scripted"}]}
    with running_server(routing, env={"SERVER_API_KEY": KEY}, backends=SCRIPTED) as server:
        for key in (None, "wrong-key"):
            with pytest.raises(InvalidStatus) as refused:
                open_stream(server.ws, api_key=key)
            response = refused.value.response
            assert response.status_code == 401
            assert json.loads(response.body)["error"] == "unauthorized"
        with open_stream(server.ws, api_key=KEY) as ws:
            json.loads(ws.recv(timeout=10))  # the connection message
            audio = base64.b64encode(b"\x00\x00" * 160).decode()
            ws.send(json.dumps({"audio": audio, "rate": 12, "language_code": "en-US"}))
            reply = json.loads(ws.recv(timeout=10))
            assert reply["message"] == "Audio Decoding Error" and reply["error"] == "invalid_audio"
