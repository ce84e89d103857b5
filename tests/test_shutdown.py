"""Graceful shutdown: SIGTERM with clients in flight. Batch jobs finish, streams recognise what
they buffered, reply and close with 1001, usage is committed, and the process exits 0."""

from __future__ import annotations

import base64
import json
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

from tests import speech
from tests.client import transcribe
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

    def in_flight() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return float(re.search(r"^speechgw_requests_in_flight (\S+)", text, re.M).group(1))

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
            while in_flight() < 1:
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
