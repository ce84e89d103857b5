"""Graceful shutdown: SIGTERM with clients in flight. Batch jobs finish, streams recognise what
they buffered, reply and close with 1001, usage is committed, and the process exits 0."""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests import speech
from tests.client import multipart_upload, transcribe
from tests.ledger import rows as ledger_rows
from tests.serving import ServeProcess
from tests.streaming_client import open_stream, read_pcm16, replies_until_closed, stream_pcm
from tests.waiting import wait_for


def test_sigterm_with_a_batch_job_and_a_stream_in_flight(tmp_path: Path, voices) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"store:\n  path: {tmp_path / 'ledger.db'}\n"
        "backends:\n  'null': {type: scripted, text: finished, delay_seconds: 1.5}\n"
        "routing:\n  - backend: 'null'\n"
    )
    server = ServeProcess("--config", str(config)).__enter__()
    process, port = server.process, server.port
    url = f"ws://127.0.0.1:{port}"

    try:
        with open_stream(url) as stream:
            stream.recv(timeout=10)
            pcm, rate = read_pcm16(voices["coffee"])  # ends on speech: still buffered
            stream.send(json.dumps({"audio": base64.b64encode(pcm).decode(), "rate": rate}))
            batch_result: list = []
            wav = voices["children"].read_bytes()
            batch = threading.Thread(target=lambda: batch_result.append(transcribe(url, wav)))
            batch.start()
            deadline = time.monotonic() + 30
            while _in_flight(port) < 1:
                assert time.monotonic() < deadline, "the batch job never started"
            process.send_signal(signal.SIGTERM)
            replies = replies_until_closed(stream)
            assert [r.get("asr_reply") for r in replies] == ["finished"]
        batch.join(timeout=30)
        assert batch_result[0].reply["text"] == "finished"
        assert batch_result[0].close_code == 1000
        assert process.wait(timeout=30) == 0
    finally:
        server.stop()
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT protocol FROM usage ORDER BY protocol")
    assert rows == [("batch",), ("streaming",)]


def test_sigterm_while_a_large_message_is_taken_loses_none_of_it(tmp_path: Path, voices) -> None:
    """A stream sends seven minutes in one message to a backend slower than the stream (its
    queue fills, and the server has taken only part of the message when SIGTERM comes): every
    utterance of the message is still recognised and answered before the 1001 close, as many
    replies as the same audio gets without a shutdown."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        "store: {path: null}\n"
        "backends:\n  'null': {type: scripted, text: said, delay_seconds: 0.03}\n"
        "routing:\n  - backend: 'null'\n"
    )
    parts = [voices[name] for name in ("children", "market", "window")]
    pcm, rate = read_pcm16(speech.concat(parts, tmp_path / "three.wav", silence_seconds=1.0))
    pcm *= 42  # seven minutes, 126 sentences
    message = json.dumps({"audio": base64.b64encode(pcm).decode(), "rate": rate})
    with ServeProcess("--config", str(config)) as server:
        expected = stream_pcm(server.url, pcm, rate, chunk_ms=1000)
        assert len(expected.replies) >= 100
        full_before = server.log.count("Audio stream buffer full")
        with open_stream(server.url) as stream:
            stream.recv(timeout=10)
            stream.send(message)
            wait_for(lambda: server.log.count("Audio stream buffer full") > full_before)
            server.process.send_signal(signal.SIGTERM)
            replies = replies_until_closed(stream)
        assert server.process.wait(timeout=60) == 0
    assert [r.get("asr_reply") for r in replies] == ["said"] * len(expected.replies)


def test_recordings_still_running_as_the_grace_ends_are_told_to_retry(
    tmp_path: Path, voices
) -> None:
    """A recording that would outlast ``shutdown_grace_seconds`` is stopped just before the
    grace ends and answered ``server_busy`` with a retry hint, in its protocol's terms, so
    that its client retries (elsewhere, behind a load balancer): not an empty 500 from the
    HTTP server, nor a WebSocket closed without a word. So is a live stream whose last
    utterances are still being recognised: one error message, then the 1001 close. None is
    billed, and the process still exits 0 with no traceback in its log."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"store: {{path: {tmp_path / 'ledger.db'}}}\n"
        "server: {shutdown_grace_seconds: 1}\n"
        "backends: {slow: {type: scripted, text: too late, delay_seconds: 20}}\n"
        "routing: [{backend: slow}]\n"
    )
    wav = voices["children"].read_bytes()
    answers: dict[str, object] = {}
    with ServeProcess("--config", str(config)) as server:

        def upload() -> None:
            body, kind = multipart_upload(wav)
            request = urllib.request.Request(
                f"{server.http}/v1/audio/transcriptions", body, {"Content-Type": kind}
            )
            try:
                urllib.request.urlopen(request, timeout=60)
            except urllib.error.HTTPError as refused:
                answers["http"] = (refused.code, refused.headers, json.loads(refused.read()))

        def batch() -> None:
            answers["batch"] = transcribe(server.url, wav)

        def stream() -> None:
            with open_stream(server.url) as ws:
                ws.recv(timeout=10)
                # one utterance recognised as SIGTERM comes, one still buffered (it ends on
                # speech): both are unanswered when the grace ends, and one message says so
                ws.send(json.dumps({"audio": base64.b64encode(pcm).decode(), "rate": rate}))
                answers["stream"] = replies_until_closed(ws)  # asserts the 1001

        parts = [voices["children"], voices["coffee"]]
        pcm, rate = read_pcm16(speech.concat(parts, tmp_path / "two.wav", silence_seconds=1.0))
        clients = [threading.Thread(target=f) for f in (upload, batch, stream)]
        for client in clients:
            client.start()
        wait_for(lambda: _in_flight(server.port) == 3)
        # and a connection still sending its request's headers: cut when the grace ends
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: speechgw\r\n")
        server.process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=30)
        assert server.process.wait(timeout=30) == 0
        log = server.log
        slow.close()
    status, headers, body = answers["http"]
    message = "the server is shutting down; retry in 5 s"
    assert status == 503 and headers["Retry-After"] == "5"
    assert body["error"]["code"] == "server_busy" and body["error"]["message"] == message
    result = answers["batch"]
    assert result.reply == {"error": "server_busy", "message": message, "retry_after": 5}
    assert result.close_code == 1013
    [told] = answers["stream"]
    assert told["type"] == "error" and told["message"] == "Speech Recognition Error"
    assert told["error"] == "server_busy" and told["detail"] == message
    assert "answering server_busy to what still runs: 2 recordings and 1 stream" in log
    assert log.count("outcome=server_busy") == 4  # each utterance, logged and unbilled
    assert "Traceback" not in log and "ERROR" not in log
    assert ledger_rows(tmp_path / "ledger.db", "SELECT COUNT(*) FROM usage") == [(0,)]


def _in_flight(port: int) -> float:
    """``speechgw_requests_in_flight`` as the server's /metrics says it now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return float(re.search(r"^speechgw_requests_in_flight (\S+)", text, re.M).group(1))
