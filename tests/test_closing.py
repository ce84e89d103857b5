"""Closing a WebSocket without losing what the client has not read yet (RFC 6455 7.1.1)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import speech
from tests.serving import running_server
from tests.streaming_client import read_pcm16

SCRIPTED = {"null": {"type": "scripted", "text": "heard"}}


def _client(url: str):
    """A client busy elsewhere: it takes one message off the socket at a time (``max_queue``
    1) while its keepalive pings go out every 20 ms, as a real client's may at any moment."""
    return connect(url, max_queue=1, ping_interval=0.02, ping_timeout=None, open_timeout=30)


def _read_all(ws) -> tuple[list[str], int | None]:
    messages = []
    try:
        while True:
            messages.append(ws.recv(timeout=30))
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None


@pytest.fixture(scope="module")
def three(voices, tmp_path_factory) -> Path:
    names = ["children", "market", "window"]
    folder = tmp_path_factory.mktemp("closing")
    return speech.concat([voices[n] for n in names], folder / "three.wav", silence_seconds=1.0)


def test_a_streams_last_replies_and_close_reach_a_client_that_reads_late(three: Path) -> None:
    pcm, rate = read_pcm16(three)
    with (
        running_server(backends=SCRIPTED) as server,
        _client(server.ws + "/api/core/google/asr") as ws,
    ):
        ws.recv(timeout=30)  # the connection message
        step = rate // 10 * 2
        for offset in range(0, len(pcm), step):
            ws.send(
                json.dumps(
                    {"audio": base64.b64encode(pcm[offset : offset + step]).decode(), "rate": rate}
                )
            )
        ws.send(json.dumps({"type": "end"}))
        time.sleep(1.0)  # busy: the replies and the server's close wait in the socket
        messages, code = _read_all(ws)
    assert [json.loads(m)["asr_reply"] for m in messages] == ["heard"] * 3
    assert code == 1000
