"""examples/deploy: the dashboard and scrape config name metrics the server really serves."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from websockets.sync.client import connect

from tests import speech
from tests.certificates import self_signed
from tests.client import multipart_upload, transcribe
from tests.fleet import running_nginx
from tests.serving import REPO, ServeProcess, free_port, running_server
from tests.waiting import wait_for

DEPLOY = REPO / "examples" / "deploy"


def test_grafana_dashboard_uses_only_real_metric_names(voices) -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for e in exprs
        for m in re.findall(r"\b(asr_\w+|speechgw_\w+)", e)
    }
    with running_server(backends={"null": {"type": "scripted", "text": "x"}}) as server:
        transcribe(server.ws, voices["children"].read_bytes())
        served = set(re.findall(r"^# TYPE (\w+) ", server.get("/metrics")[1], re.M))
    assert used and used <= served, used - served
    assert {
        "asr_requests_total",
        "asr_audio_seconds_total",
        "asr_processing_seconds",
        "asr_postprocess_seconds",
    } <= used


def test_prometheus_scrapes_every_replica_and_grafana_sums_them() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (targets,) = [c["targets"] for c in job["static_configs"]]
    assert len(targets) >= 2  # each gateway directly, not one address behind the balancer
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # one line per fleet, not per replica: every expression aggregates over instances
    assert all(e.startswith(("sum", "histogram_quantile(")) for e in exprs), exprs
    assert all("sum" in e for e in exprs), exprs


def test_nginx_config_terminates_tls_for_every_path(
    tmp_path, tiny_server, voices, long_speech
) -> None:
    """The shipped nginx.conf, run by a real nginx in front of a real gateway: batch,
    streaming and a Realtime session over wss://, /health over https://, and no TLS session
    ticket for a client."""
    text = (DEPLOY / "nginx.conf").read_text()
    assert "ws/transcribe" in text and "api/core/google/asr" in text
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed here: only the paths were checked")
    cert, key = self_signed(tmp_path, host="asr.example.com")
    text = text.replace("/etc/ssl/certs/asr.example.com.pem", str(cert))
    text = text.replace("/etc/ssl/private/asr.example.com.key", str(key))
    access_log = tmp_path / "access.log"
    assert text.count("/var/log/nginx/speechgw.access.log speechgw;") == 2  # both servers
    text = text.replace("/var/log/nginx/speechgw.access.log", str(access_log))
    wrapper = tmp_path / "nginx.conf"
    wrapper.write_text(f"events {{}}\nhttp {{\n{text}\n}}\n")
    result = subprocess.run(["nginx", "-t", "-c", str(wrapper)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    port = free_port()
    text = text.replace("server 127.0.0.1:8765;", f"server 127.0.0.1:{tiny_server.port};")
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the certificate names asr.example.com; we dial 127.0.0.1
    with running_nginx(text, port):
        url = f"wss://127.0.0.1:{port}"
        with connect(url + "/ws/transcribe", ssl=context, open_timeout=30) as ws:
            ws.send(json.dumps({"type": "transcribe", "language": "en"}))
            ws.send(voices["coffee"].read_bytes())
            reply = json.loads(ws.recv(timeout=60))
        assert speech.words(reply["text"]) == speech.words(speech.SENTENCES["coffee"])
        secret = "om1_live_" + "k" * 24  # ignored by this keyless gateway, not by nginx's log
        with connect(f"{url}/api/core/google/asr?api_key={secret}", ssl=context) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "connection"
        # OpenAI's Realtime API: upgraded too, not taken by the /v1/ location's plain HTTP
        with connect(f"{url}/v1/realtime?intent=transcription", ssl=context) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "session.created"
        # nginx writes a WebSocket's line once the connection is over
        wait_for(lambda: access_log.exists() and "/api/core/google/asr" in access_log.read_text())
        assert secret not in access_log.read_text()
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="asr.example.com") as tls:
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: asr.example.com\r\n\r\n")
            assert tls.recv(12) == b"HTTP/1.1 200"
            assert tls.version() == "TLSv1.3" and not tls.session.has_ticket
        # OpenAI's stream=true: nginx passes each event on as it comes (45 s of speech, two
        # windows: the first window's words arrive while the second is decoded)
        body, content_type = multipart_upload(long_speech[0].read_bytes(), stream="true")
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/v1/audio/transcriptions",
            data=body,
            headers={"Content-Type": content_type},
        )
        with urllib.request.urlopen(request, timeout=120, context=context) as answer:
            assert answer.headers["Content-Type"].startswith("text/event-stream")
            first = answer.readline()
            in_flight = tiny_server.metric("speechgw_requests_in_flight")
            rest = answer.read().decode()
        assert first == b"event: transcript.text.delta\n" and in_flight == 1
        assert rest.count("event: transcript.text.done\n") == 1


def _unit_settings(text: str) -> dict[str, list[str]]:
    """A unit file's ``Key=value`` lines (repeated keys in order); comments skipped."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_runs_real_commands_and_is_valid(tmp_path) -> None:
    """The unit's commands are this checkout's: its reload checks the config as it would run
    (from the unit's environment and working directory), and a bad config fails the reload
    before any signal is sent."""
    text = (DEPLOY / "speechgw.service").read_text()
    unit = _unit_settings(text)
    venv = str(Path(sys.executable).parent)
    assert unit["ExecStart"] == ["/opt/speechgw/.venv/bin/speechgw serve"]
    check, signal = unit["ExecReload"]
    assert signal == "/bin/kill -HUP $MAINPID"
    (config_variable,) = unit["Environment"]
    name, _, config_path = config_variable.partition("=")
    assert name == "SPEECHGW_CONFIG" and config_path == "/etc/speechgw/speechgw.yaml"
    shipped = yaml.safe_load((REPO / "config" / "speechgw.yaml").read_text())
    assert int(unit["TimeoutStopSec"][0]) > shipped["server"]["shutdown_grace_seconds"]
    command = check.replace("/opt/speechgw/.venv/bin", venv).split()
    config = tmp_path / "speechgw.yaml"
    config.write_text((REPO / "config" / "speechgw.yaml").read_text())
    env = {"PATH": os.environ["PATH"], "SPEECHGW_CONFIG": str(config)}
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: valid")
    assert f"store: SQLite {tmp_path / 'speechgw.db'}" in result.stdout  # WorkingDirectory
    config.write_text("server:\n  port: eighty\n")
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "server.port: expected an integer" in result.stderr
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd is not installed here: the commands were checked, not the unit")
    installed = tmp_path / "speechgw.service"
    installed.write_text(text.replace("/opt/speechgw/.venv/bin", venv))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(installed)], capture_output=True, text=True
    )
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


@pytest.mark.parametrize("keep_alive", [0.5, 1.5])
def test_an_idle_http_connection_is_closed_after_keep_alive_seconds(keep_alive: float) -> None:
    """``server.keep_alive_seconds``: how long the gateway keeps an idle HTTP/1.1 connection
    for its next request, the figure a proxy that reuses connections must stay under (the
    example nginx configs drop theirs after 4 s, under the default 5)."""
    overrides = {"server": {"keep_alive_seconds": keep_alive}}
    with (
        running_server(overrides, backends={"null": {"type": "scripted"}}) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        answer = b""
        while b'"status"' not in answer:  # the JSON body, after the headers
            answer += sock.recv(65536)
        answered = time.monotonic()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert sock.recv(65536) == b""  # the server closed it (a timeout would raise)
        idle = time.monotonic() - answered
    assert keep_alive - 0.1 < idle < keep_alive + 1.5, idle


def _idle_connections(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]


def _health(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as answer:
        return answer.status


def test_the_server_raises_its_open_files_limit_to_serve_its_connections(tmp_path) -> None:
    """Started under a low ``ulimit -n`` (a shell's is 1024), the server raises its soft limit
    to the hard one: 80 idle connections and /health beside them, where a limit of 60 reset
    /health (and every new client) with nothing in the log."""
    config = tmp_path / "scripted.yaml"
    config.write_text(
        "backends: {echo: {type: scripted, text: ok}}\nrouting: [{backend: echo}]\n"
        "store: {path: null}\n"
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"this machine's hard limit on open files is {hard}")
    with ServeProcess("--config", str(config), open_files=(60, hard)) as server:
        connections = _idle_connections(server.port, 80)
        try:
            assert _health(server.port) == 200
        finally:
            for connection in connections:
                connection.close()
        raised = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
        assert f"open files: limit raised from 60 to {raised}" in server.log


@pytest.mark.parametrize("when", ["at start", "on a reload that raises max_connections"])
def test_an_open_files_limit_under_max_connections_is_said(tmp_path, when: str) -> None:
    """A hard limit the server cannot raise past: the log says what it holds, what
    max_connections needs, and where to raise it, and the server serves what it can."""
    config = tmp_path / "scripted.yaml"
    scripted = (
        "backends: {echo: {type: scripted, text: ok}}\nrouting: [{backend: echo}]\n"
        "store: {path: null}\nlimits: {max_connections: %d}\n"
    )
    config.write_text(scripted % (100 if when == "at start" else 30))
    warning = "open files limited to 100 (hard limit 100): under the 164 that "
    warning += "limits.max_connections 100 needs"
    with ServeProcess("--config", str(config), open_files=(100, 100)) as server:
        assert _health(server.port) == 200
        if when != "at start":
            assert "open files limited" not in server.log  # 30 + 64 fit
            config.write_text(scripted % 100)
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "config reloaded from" in server.log)
        assert warning in server.log, server.log
