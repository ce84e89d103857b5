"""A fleet: two ``speechgw serve`` processes sharing PostgreSQL behind a real nginx
(``examples/deploy/nginx-fleet.conf``), driven by batch and streaming clients.

What a team running several gateways relies on: a key is one key everywhere (created once,
revoked everywhere at the next request), the ledger is one ledger, a key's rate holds for the
fleet, and neither a replica killed under load nor a PostgreSQL restart loses a billed reply
or leaves a client hanging.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from websockets.exceptions import InvalidStatus

from tests import speech
from tests.client import transcribe
from tests.fleet import fleet_config, running_fleet
from tests.postgres import Cluster, fresh_database
from tests.streaming_client import open_stream, read_pcm16, stream_pcm
from tests.test_config import run_cli
from tests.waiting import wait_for

RATE = 6
"""Requests per minute (and burst) per key in the shared fleet: N across the fleet, not 2N."""


@pytest.fixture(scope="module")
def fleet(postgres_server: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fleet")
    with fresh_database(postgres_server) as url:
        limits = {"rate_limit_per_key": RATE, "rate_limit_burst": RATE}
        config = fleet_config(folder / "fleet.yaml", url, limits)
        with running_fleet(config, url) as running:
            yield running


def cli(config: Path, *args: str) -> str:
    done = run_cli(args[0], "--config", str(config), *args[1:])
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_key_and_its_usage_are_one_across_the_fleet(fleet, voices, tmp_path) -> None:
    a, b = fleet.replicas
    alice = cli(fleet.config, "keys", "create", "alice").strip()
    wav = voices["children"].read_bytes()
    replies = []
    # created once, in the shared store: both replicas know it at once, and so does nginx
    for url in (a.url, b.url, fleet.ws):
        reply = transcribe(url, wav, api_key=alice).reply
        assert "children are playing football" in reply["text"].lower(), reply
        replies.append(reply)
    two = speech.concat(
        [voices["market"], voices["window"]], tmp_path / "two.wav", silence_seconds=1.0
    )
    pcm, rate = read_pcm16(two)
    streamed = stream_pcm(fleet.ws, pcm, rate, api_key=alice)
    assert len(streamed.replies) == 2 and not streamed.errors, streamed
    assert "open the window" in streamed.replies[1].lower()
    # the stream's key was in its URL; nginx's access log has the path alone
    wait_for(lambda: "/api/core/google/asr" in fleet.access_log.read_text())
    assert alice not in fleet.access_log.read_text()

    # revoked in the store: every replica refuses it at its next request, both protocols
    cli(fleet.config, "keys", "revoke", "alice")
    for url in (a.url, b.url, fleet.ws):
        assert transcribe(url, wav, api_key=alice).reply["error"] == "unauthorized"
    for url in (a.url, b.url):
        with pytest.raises(InvalidStatus) as refused:
            open_stream(url, api_key=alice)
        assert refused.value.response.status_code == 401

    # one ledger: what `speechgw usage` totals is what the replicas answered
    (usage,) = json.loads(cli(fleet.config, "usage", "--key", "alice", "--json"))
    by = {p["protocol"]: p for p in usage["by"]}
    assert by["batch"]["requests"] == len(replies) == 3
    assert by["streaming"]["requests"] == len(streamed.replies)
    billed = by["batch"]["audio_minutes"] * 60
    assert billed == pytest.approx(sum(r["duration"] for r in replies), abs=0.01)


def test_a_keys_rate_limit_holds_across_the_fleet(fleet, voices) -> None:
    key = cli(fleet.config, "keys", "create", "rated").strip()
    wav = voices["children"].read_bytes()
    started = time.monotonic()
    outcomes = []
    for i in range(2 * RATE):  # alternating replicas: each alone would admit RATE
        reply = transcribe(fleet.replicas[i % 2].url, wav, api_key=key).reply
        outcomes.append("ok" if "text" in reply else reply["error"])
    refilled = (time.monotonic() - started) * RATE / 60
    counts = Counter(outcomes)
    assert RATE <= counts["ok"] <= RATE + refilled, outcomes
    assert counts["rate_limited"] == 2 * RATE - counts["ok"], outcomes
    assert outcomes[:RATE] == ["ok"] * RATE


class Load:
    """Batch and streaming clients looping through nginx until stopped. A request that fails
    on a closed connection is retried once at once; the retry must succeed."""

    def __init__(self, url: str, wav: bytes, pcm: bytes, rate: int, key: str | None) -> None:
        self.url, self.wav, self.pcm, self.rate, self.key = url, wav, pcm, rate, key
        self.batch_ids: list[str] = []
        self.stream_replies = 0
        self.busy = 0
        self.closed = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.progress = threading.Condition()
        self.threads: list[threading.Thread] = []

    def start(self, batch_clients: int, stream_clients: int) -> None:
        for target, n in ((self._batch, batch_clients), (self._stream, stream_clients)):
            for _ in range(n):
                thread = threading.Thread(target=self._loop, args=(target,), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _loop(self, attempt) -> None:
        while not self.stop.is_set():
            try:
                attempt()
            except Exception as exc:  # the connection was closed under us: retry once
                self.closed += 1
                try:
                    attempt()
                except Exception as again:
                    self.failures.append(f"retry failed: {again!r} (first: {exc!r})")

    def _note(self) -> None:
        with self.progress:
            self.progress.notify_all()

    def _batch(self) -> None:
        fields = {"api_key": self.key} if self.key else {}
        exchange = transcribe(self.url, self.wav, **fields)
        if not exchange.messages:
            raise ConnectionError(f"closed with {exchange.close_code} before a reply")
        reply = exchange.reply
        if "request_id" in reply:
            self.batch_ids.append(reply["request_id"])
        elif reply.get("error") == "server_busy":
            self.busy += 1
            time.sleep(0.2)
        else:
            self.failures.append(f"batch: {reply}")
        self._note()

    def _stream(self) -> None:
        try:
            result = stream_pcm(self.url, self.pcm, self.rate, api_key=self.key)
        except InvalidStatus as refused:  # before the upgrade: 503 server_busy is an answer
            response = refused.response
            if response.status_code != 503 or b"server_busy" not in response.body:
                raise
            self.busy += 1
            time.sleep(0.2)
            self._note()
            return
        if result.close_code not in (1000,) and not result.replies:
            raise ConnectionError(f"stream closed with {result.close_code}")
        busy = [e for e in result.errors if e.get("error") == "server_busy"]
        if len(busy) < len(result.errors):
            self.failures.append(f"stream: {result.errors}")
        self.busy += len(busy)
        self.stream_replies += len(result.replies)
        self._note()

    def wait_for(self, condition, timeout: float = 120) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: condition() or self.failures, timeout), (
                "the load made no progress"
            )
        assert not self.failures, self.failures

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a client hung"


def ledger(url: str) -> tuple[set[str], int]:
    with psycopg.connect(url) as db:
        ids = {r for (r,) in db.execute("SELECT request_id FROM usage WHERE protocol = 'batch'")}
        (streamed,) = db.execute(
            "SELECT count(*) FROM usage WHERE protocol = 'streaming'"
        ).fetchone()
    return ids, streamed


def test_kill_9_one_replica_under_mixed_load(postgres_server, voices, tmp_path) -> None:
    two = speech.concat(
        [voices["market"], voices["window"]], tmp_path / "two.wav", silence_seconds=1.0
    )
    pcm, rate = read_pcm16(two)
    with fresh_database(postgres_server) as url:
        config = fleet_config(tmp_path / "fleet.yaml", url)
        with running_fleet(config, url) as fleet:
            load = Load(fleet.ws, voices["children"].read_bytes(), pcm, rate, key=None)
            load.start(batch_clients=3, stream_clients=2)
            load.wait_for(lambda: len(load.batch_ids) >= 10 and load.stream_replies >= 4)
            victim = fleet.replicas[0]
            victim.process.send_signal(signal.SIGKILL)  # mid-load, no shutdown at all
            victim.process.wait(timeout=30)
            before = (len(load.batch_ids), load.stream_replies)
            load.wait_for(
                lambda: (
                    len(load.batch_ids) >= before[0] + 10 and load.stream_replies >= before[1] + 4
                )
            )
            load.finish()
        billed_ids, billed_streamed = ledger(url)
    assert not load.failures, load.failures
    assert load.busy == 0  # nobody was refused: the survivor took every retry
    missing = set(load.batch_ids) - billed_ids
    assert not missing, f"{len(missing)} replies have no ledger row"
    assert billed_streamed >= load.stream_replies


def test_postgres_restart_under_load(voices, tmp_path) -> None:
    cluster = Cluster()  # our own: the machine's PostgreSQL is never restarted by a test
    try:
        with fresh_database(cluster.url) as url:
            config = fleet_config(tmp_path / "fleet.yaml", url)
            key = cli(config, "keys", "create", "steady").strip()  # checked in PostgreSQL
            pcm, rate = read_pcm16(voices["coffee"])
            with running_fleet(config, url) as fleet:
                load = Load(fleet.ws, voices["children"].read_bytes(), pcm, rate, key)
                load.start(batch_clients=3, stream_clients=1)
                load.wait_for(lambda: len(load.batch_ids) >= 6)
                cluster.stop("fast")
                down = time.monotonic()
                load.wait_for(lambda: load.busy >= 3)
                health = [r.http for r in fleet.replicas]
                for address in health:
                    status, body = _get(address + "/health")
                    assert status == 503 and json.loads(body)["store"] == "unreachable", body
                answered_during = len(load.batch_ids)
                cluster.start()
                outage = time.monotonic() - down
                load.wait_for(lambda: len(load.batch_ids) >= answered_during + 6)
                load.finish()
                for address in health:
                    assert _get(address + "/health")[0] == 200  # recovered by itself
            billed_ids, _ = ledger(url)
    finally:
        cluster.close()
    assert not load.failures, load.failures
    missing = set(load.batch_ids) - billed_ids
    assert not missing, f"{len(missing)} replies have no ledger row (outage {outage:.1f} s)"


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
