"""Config reload on SIGHUP: routing switches for new requests, connections in flight carry on,
and an invalid file is refused while the old config keeps serving."""

from __future__ import annotations

import base64
import json
import signal
import time
from pathlib import Path

from tests.client import transcribe
from tests.serving import ServeProcess
from tests.streaming_client import open_stream, read_pcm16

CONFIG = """
store: {{path: null}}
backends:
  first: {{type: scripted, text: from the first backend}}
  second: {{type: scripted, text: from the second backend}}
routing:
  - backend: {backend}
"""


def wait_for_log(server: ServeProcess, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while server.log.count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{server.log}"
        time.sleep(0.02)


def test_sighup_reloads_routing_and_refuses_an_invalid_file(tmp_path: Path, voices) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(CONFIG.format(backend="first"))
    wav = voices["children"].read_bytes()
    pcm, rate = read_pcm16(voices["coffee"])
    with ServeProcess("--config", str(config)) as server:
        assert transcribe(server.url, wav).reply["text"] == "from the first backend"
        half = len(pcm) // 4 * 2
        with open_stream(server.url) as stream:  # streaming before the reload and after it
            stream.recv(timeout=10)
            stream.send(json.dumps({"audio": base64.b64encode(pcm[:half]).decode(), "rate": rate}))
            config.write_text(CONFIG.format(backend="second"))
            server.process.send_signal(signal.SIGHUP)
            wait_for_log(server, "config reloaded from")
            assert transcribe(server.url, wav).reply["text"] == "from the second backend"
            stream.send(json.dumps({"audio": base64.b64encode(pcm[half:]).decode()}))
            stream.send(json.dumps({"type": "end"}))
            replies = [json.loads(m)["asr_reply"] for m in stream]
            # a stream is routed by its first audio message and keeps that route
            assert replies == ["from the first backend"]

            config.write_text(CONFIG.format(backend="second") + "limits: {max_audio_secs: 5}\n")
            server.process.send_signal(signal.SIGHUP)
            wait_for_log(server, "config reload refused")
            assert "limits.max_audio_secs: unknown key" in server.log
            assert transcribe(server.url, wav).reply["text"] == "from the second backend"
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0


def test_a_reload_whose_model_cannot_load_is_refused_in_one_line(tmp_path: Path, voices) -> None:
    """A reload that adds a Whisper backend whose model.bin CTranslate2 cannot read: the
    valid file passes the config check, the model fails to load, and the reload is refused
    as an invalid file is (one log line, no traceback), the old routing serving on."""
    config = tmp_path / "gw.yaml"
    config.write_text(CONFIG.format(backend="first"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"\xff" * 64)
    wav = voices["children"].read_bytes()
    with ServeProcess("--config", str(config)) as server:
        config.write_text(
            "store: {path: null}\n"
            "backends:\n"
            "  first: {type: scripted, text: from the first backend}\n"
            f"  broken: {{type: whisper, model: {broken}}}\n"
            "routing:\n  - backend: broken\n"
        )
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "config reload refused")
        assert "backend 'broken' could not start: Unsupported model binary version" in server.log
        assert "Traceback" not in server.log and "never retrieved" not in server.log
        assert transcribe(server.url, wav).reply["text"] == "from the first backend"
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
