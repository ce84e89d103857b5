"""Limits and the busy signal: over capacity, clients are told so and when to retry."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.client import transcribe
from tests.serving import running_server
from tests.streaming_client import open_stream

SLOW = {"null": {"type": "scripted", "text": "done", "delay_seconds": 1.0}}


def test_batch_over_capacity_gets_server_busy_with_retry_after(voices) -> None:
    wav = voices["children"].read_bytes()
    limits = {"limits": {"max_pending_jobs": 2, "busy_retry_after_seconds": 7}}
    with running_server(limits, backends=SLOW) as server:
        with ThreadPoolExecutor(5) as pool:
            exchanges = list(pool.map(lambda _: transcribe(server.ws, wav), range(5)))
        served = [e for e in exchanges if e.messages and "text" in e.messages[0]]
        busy = [e for e in exchanges if e.messages and e.messages[0].get("error") == "server_busy"]
        assert len(served) == 2 and len(busy) == 3, [e.messages for e in exchanges]
        for e in busy:
            assert e.messages[0]["retry_after"] == 7
            assert "retry in 7 s" in e.messages[0]["message"]
            assert e.close_code == 1013
        # capacity comes back once the jobs are done
        assert transcribe(server.ws, wav).reply["text"] == "done"


def test_streams_over_capacity_are_refused_before_the_upgrade() -> None:
    with running_server({"limits": {"max_streams": 1}}, backends=SLOW) as server:
        with open_stream(server.ws) as first:
            first.recv(timeout=10)
            with pytest.raises(InvalidStatus) as refused:
                open_stream(server.ws)
            response = refused.value.response
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            body = json.loads(response.body)
            assert body["error"] == "server_busy" and "1 streams" in body["message"]
            assert server.metric("speechgw_active_streams") == 1
        # the place is free again once the server has seen the first stream go
        deadline = time.monotonic() + 30
        while server.metric("speechgw_active_streams") != 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with open_stream(server.ws) as again:
            assert json.loads(again.recv(timeout=10))["type"] == "connection"


def test_an_idle_stream_is_closed_after_its_buffered_audio_is_answered(voices) -> None:
    import base64

    from tests.streaming_client import read_pcm16

    pcm, rate = read_pcm16(voices["coffee"])  # no trailing pause: still buffered when idle
    backends = {"null": {"type": "scripted", "text": "answered"}}
    limits = {"limits": {"stream_idle_seconds": 0.5}}
    with running_server(limits, backends=backends) as server, open_stream(server.ws) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"audio": base64.b64encode(pcm).decode(), "rate": rate}))
        started = time.monotonic()
        reply = json.loads(ws.recv(timeout=10))
        assert reply["asr_reply"] == "answered"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "timeout"
        assert time.monotonic() - started < 5


def test_overall_connection_cap_covers_both_protocols(voices) -> None:
    wav = voices["children"].read_bytes()
    limits = {"limits": {"max_connections": 2}}
    with (
        running_server(limits, backends=SLOW) as server,
        open_stream(server.ws) as first,
        connect(server.ws + "/ws/transcribe") as second,
    ):
        first.recv(timeout=10)
        second.send(json.dumps({"type": "ping"}))
        second.recv(timeout=10)  # both are in: 2 of 2 places
        refused = transcribe(server.ws, wav)
        assert refused.messages[0]["error"] == "server_busy"
        assert "2 connections" in refused.messages[0]["message"]
        assert refused.close_code == 1013
        with pytest.raises(InvalidStatus) as stream_refused:
            open_stream(server.ws)
        assert stream_refused.value.response.status_code == 503


def test_per_key_connection_cap(voices) -> None:
    wav = voices["children"].read_bytes()
    keys = {
        "auth": {
            "keys": [{"name": "alice", "key": "alice-key"}, {"name": "bob", "key": "bob-key"}]
        },
        "limits": {"max_connections_per_key": 1},
    }
    with (
        running_server(keys, backends=SLOW) as server,
        open_stream(server.ws, api_key="alice-key") as alice,
    ):
        alice.recv(timeout=10)
        busy = transcribe(server.ws, wav, api_key="alice-key").messages[0]
        assert busy["error"] == "server_busy" and "'alice'" in busy["message"]
        assert transcribe(server.ws, wav, api_key="bob-key").reply["text"] == "done"


def test_per_key_rate_limit(voices) -> None:
    wav = voices["children"].read_bytes()
    settings = {
        "auth": {"keys": [{"name": "carol", "key": "carol-key"}]},
        "limits": {"rate_limit_per_key": 6, "rate_limit_burst": 2},
    }
    with running_server(settings, backends={"null": {"type": "scripted", "text": "ok"}}) as server:
        for _ in range(2):  # the burst
            assert transcribe(server.ws, wav, api_key="carol-key").reply["text"] == "ok"
        limited = transcribe(server.ws, wav, api_key="carol-key")
        assert limited.messages[0]["error"] == "rate_limited"
        assert 1 <= limited.messages[0]["retry_after"] <= 10  # one token per 10 s
        assert limited.close_code == 1013
        with pytest.raises(InvalidStatus) as refused:
            open_stream(server.ws, api_key="carol-key")
        assert refused.value.response.status_code == 429
        assert json.loads(refused.value.response.body)["error"] == "rate_limited"


def test_longest_stream(voices) -> None:
    import base64

    from tests.streaming_client import read_pcm16

    pcm, rate = read_pcm16(voices["coffee"])  # about 3 s; the limit is 2 s
    backends = {"null": {"type": "scripted", "text": "answered"}}
    with (
        running_server({"limits": {"max_stream_seconds": 2}}, backends=backends) as server,
        open_stream(server.ws) as ws,
    ):
        ws.recv(timeout=10)
        step = rate // 10 * 2
        for i in range(0, len(pcm), step):
            message = {"audio": base64.b64encode(pcm[i : i + step]).decode(), "rate": rate}
            try:
                ws.send(json.dumps(message))
            except ConnectionClosed:
                break
        replies = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                replies.append(json.loads(ws.recv(timeout=10)))
        assert [r.get("asr_reply") for r in replies] == ["answered"]  # what came before
        assert closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == "stream too long"
