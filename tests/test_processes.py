"""``speechgw serve --processes 2``: two server processes on one port under one parent, as a
user runs it (a real process tree, tiny.en, the SQLite ledger, signals)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from prometheus_client import generate_latest

from speechgw.metrics import GatewayMetrics
from speechgw.siblings import merge_expositions
from tests import speech
from tests.client import transcribe
from tests.ledger import rows as ledger_rows
from tests.processes import children, ended
from tests.serving import ServeProcess, metric_in
from tests.waiting import wait_for

KEY = "processes-test-key-0123"
M1 = {"machine_id": "m1", "status": "ok", "task": "transcribe"}


def _config(folder: Path, store: str | None = None) -> Path:
    config = folder / "two.yaml"
    config.write_text(
        f"store: {store or '{path: ' + str(folder / 'ledger.db') + '}'}\n"
        "backends: {whisper: {type: whisper, model: tiny.en, cpu_threads: 1}}\n"
        "routing: [{backend: whisper}]\n"
    )
    return config


def _serving_pids(server: ServeProcess, count: int) -> set[int]:
    """The pids that answer ``/health``, asked until ``count`` different ones have."""
    seen: set[int] = set()

    def all_answered() -> bool:
        try:
            status, body = server.get("/health")  # a connection of its own: any process's
        except OSError as error:  # refused once in CI (session 41): say what the server said
            raise AssertionError(f"/health: {error}\n{server.log}") from error
        if status == 200:
            process = json.loads(body)["process"]
            assert process["of"] == count
            seen.add(process["pid"])
        return len(seen) == count

    wait_for(all_answered, seconds=120)
    return seen


def _servers_of_requests(log: str) -> set[str]:
    """The process tags of the request ids in the access log."""
    return set(re.findall(r"request=([0-9a-f]+)-\d+ ", log))


def test_two_processes_share_the_port_and_answer_metrics_as_one(voices, tmp_path: Path) -> None:
    config = _config(tmp_path)
    wav = voices["children"].read_bytes()
    with ServeProcess(
        "--config", str(config), "--processes", "2", env={"SERVER_API_KEY": KEY}
    ) as server:
        pids = _serving_pids(server, 2)
        assert pids == set(children(server.process.pid))  # the parent's: decoders are theirs
        # requests until both processes have served some (each request id starts with its
        # process's tag; the kernel deals connections out by their addresses)
        sent = 0
        while len(_servers_of_requests(server.log)) < 2:
            assert sent < 20, server.log
            reply = transcribe(server.url, wav, api_key=KEY, machine_id="m1").reply
            assert speech.word_recall(speech.SENTENCES["children"], reply["text"]) > 0.8, reply
            sent += 1
        wait_for(lambda: server.log.count("outcome=ok") == sent)
        # every scrape, whichever process takes it, counts the requests of both
        for _ in range(6):
            status, metrics = server.get("/metrics")
            assert status == 200
            assert metric_in(metrics, "asr_requests_total", **M1) == sent, metrics
            assert 'speechgw_backend_ready{backend="whisper"} 1.0' in metrics
        (rows,) = ledger_rows(tmp_path / "ledger.db", "SELECT COUNT(*) FROM usage")
        assert rows == (sent,)
        # SIGHUP (systemctl reload signals the parent alone): every process reloads
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: server.log.count("config reloaded from") == 2, seconds=30)
        # a process that dies (a crash, the OOM killer) is replaced; the other serves meanwhile
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        # reaped: its last thread is gone, and with it its socket (a connection the kernel
        # queued to it until then is lost with it)
        wait_for(lambda: "starting another" in server.log, seconds=30)
        assert transcribe(server.url, wav, api_key=KEY).close_code == 1000
        now = _serving_pids(server, 2)
        assert victim not in now and len(now & pids) == 1
        # SIGTERM: each process drains, the parent exits 0 after them
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        wait_for(lambda: all(ended(pid) for pid in now), seconds=10)
    assert KEY not in server.log


def test_a_process_that_cannot_start_stops_them_all(tmp_path: Path) -> None:
    """A store that is down at start: each process says why in its own line and the parent
    exits 1, rather than serve with fewer processes than asked for or retry for ever."""
    config = _config(tmp_path, store="{url: 'postgresql://speechgw@127.0.0.1:9/none'}")
    server = ServeProcess("--config", str(config), "--processes", "2")
    try:
        assert server.process.wait(timeout=120) == 1
    finally:
        server.stop()
    assert "the store is unreachable" in server.log
    assert "could not start" in server.log


def test_a_stop_while_the_processes_start_is_a_clean_stop(tmp_path: Path) -> None:
    """``systemctl stop`` just after a start: SIGTERM reaches the processes while they still
    load their models, before they serve, and ends them. That is the stop asked for: the
    parent exits 0 (it exited 1 without a word, and systemd marked the unit failed)."""
    server = ServeProcess("--config", str(_config(tmp_path)), "--processes", "2")
    try:
        wait_for(lambda: "server processes share the port" in server.log, seconds=60)
        assert "Running on" not in server.log  # neither serves yet: they load tiny.en
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log
    finally:
        server.stop()
    assert "ended with exit code" not in server.log and "could not start" not in server.log


def test_the_processes_end_with_a_parent_that_is_killed(tmp_path: Path) -> None:
    """``kill -9`` (the OOM killer) gives the parent no time to stop its processes: Linux
    signals each one as its parent dies, and each drains and ends by itself."""
    with ServeProcess("--config", str(_config(tmp_path)), "--processes", "2") as server:
        pids = _serving_pids(server, 2)
        folder = _metrics_folder(server.process.pid)
        server.process.kill()
        server.process.wait(timeout=30)
        wait_for(lambda: all(ended(pid) for pid in pids), seconds=60)
    wait_for(lambda: not folder.exists(), seconds=10)  # the last one out removed it


def _metrics_folder(parent: int) -> Path:
    """The folder the processes' metrics sockets are in, from a child's command line."""
    child = children(parent)[0]
    argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    spec = argv[argv.index(b"--child") + 1].decode()
    return Path(spec.split(":", 4)[4])


def test_merged_metrics_add_counts_and_keep_the_least_readiness() -> None:
    """What a scrape of any process shows, from two processes' registries: requests and
    latency observations added up, a backend ready only if ready in both, one build line."""
    first, second = GatewayMetrics(), GatewayMetrics()
    first.requests.labels("m1", "transcribe", "ok").inc(2)
    second.requests.labels("m1", "transcribe", "ok").inc(3)
    second.requests.labels('odd"id\\', "translate", "ok").inc()
    first.processing.labels("m1", "transcribe").observe(0.3)
    second.processing.labels("m1", "transcribe").observe(3.0)
    first.backend_ready.labels("whisper").set(1)
    second.backend_ready.labels("whisper").set(0)
    first.active_streams.set(2)
    second.active_streams.set(5)
    merged = merge_expositions(
        [generate_latest(first.registry), generate_latest(second.registry)]
    ).decode()
    assert metric_in(merged, "asr_requests_total", **M1) == 5
    assert (
        'asr_requests_total{machine_id="odd\\"id\\\\",status="ok",task="translate"} 1.0' in merged
    )
    assert 'asr_processing_seconds_bucket{le="0.5",machine_id="m1",task="transcribe"} 1.0' in merged
    assert 'asr_processing_seconds_count{machine_id="m1",task="transcribe"} 2.0' in merged
    assert 'speechgw_backend_ready{backend="whisper"} 0.0' in merged
    assert "speechgw_active_streams 7.0" in merged
    assert merged.count("speechgw_build_info{") == 1
    # one process's text comes back as it was
    alone = generate_latest(first.registry)
    assert merge_expositions([alone]) == alone


def test_processes_that_keep_ending_stop_the_parent(tmp_path: Path) -> None:
    """A process that ends while serving is replaced, but six ending within a minute say
    something is wrong with every one of them: the parent stops them all and exits 1."""
    config = tmp_path / "scripted.yaml"
    config.write_text(
        f"store: {{path: {tmp_path / 'ledger.db'}}}\n"
        "backends: {scripted: {type: scripted, text: words}}\n"
        "routing: [{backend: scripted}]\n"
    )
    with ServeProcess("--config", str(config), "--processes", "2") as server:
        for killed in range(1, 7):
            victim = min(_serving_pids(server, 2))
            os.kill(victim, signal.SIGKILL)
            if killed < 6:
                wait_for(lambda n=killed: server.log.count("starting another") == n, seconds=30)
        assert server.process.wait(timeout=60) == 1
    assert "6 processes ended within 60 s: stopping" in server.log
    assert server.log.count("starting another") == 5
