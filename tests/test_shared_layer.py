"""The layer both protocols share: keys from the store, the usage ledger, metrics bounds and
LLM post-processing, each through a real server."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import io
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from speechgw.loading import load_app_config, open_store
from speechgw.store import USAGE_COLUMNS, SQLiteStore, UsageRecord
from tests import speech
from tests.client import transcribe
from tests.ledger import rows as ledger_rows
from tests.llm_server import base_url, llm_server
from tests.postgres import fresh_database
from tests.serving import ServeProcess, running_server
from tests.streaming_client import open_stream, read_pcm16, stream_pcm
from tests.test_config import run_cli

NULL = {"null": {"type": "scripted", "text": "hello from the null backend"}}


cli = run_cli


def store_config(tmp_path: Path) -> Path:
    path = tmp_path / "speechgw.yaml"
    path.write_text(f"store:\n  path: {tmp_path / 'ledger.db'}\n")
    return path


def test_keys_created_with_the_cli_work_at_once_and_revoking_stops_them(
    tmp_path: Path, voices
) -> None:
    config = store_config(tmp_path)
    created = cli("keys", "--config", str(config), "create", "alice")
    assert created.returncode == 0, created.stderr
    alice = created.stdout.strip()
    assert alice.startswith("sgw_") and len(alice) > 40
    wav = voices["children"].read_bytes()
    with running_server(
        {"store": {"path": str(tmp_path / "ledger.db")}},
        backends={"whisper": {"type": "whisper", "model": "tiny.en"}},
    ) as server:
        assert transcribe(server.ws, wav).reply["error"] == "unauthorized"
        assert transcribe(server.ws, wav, api_key=alice).close_code == 1000
        # --config after the key command works too, as people type it
        bob = cli("keys", "create", "bob", "--config", str(config)).stdout.strip()
        pcm, rate = read_pcm16(voices["coffee"])
        assert stream_pcm(server.ws, pcm, rate, api_key=bob).replies  # no restart needed
        listed = cli("keys", "list", "--config", str(config)).stdout
        assert "alice\tactive" in listed and "bob\tactive" in listed
        assert alice not in listed
        assert cli("keys", "--config", str(config), "revoke", "alice").returncode == 0
        assert transcribe(server.ws, wav, api_key=alice).reply["error"] == "unauthorized"
        # for scripts: names, states and dates as JSON (never the keys)
        listed = cli("keys", "list", "--json", "--config", str(config)).stdout
        entries = {entry["name"]: entry for entry in json.loads(listed)}
        assert entries["alice"]["active"] is False and entries["bob"]["active"] is True
        assert entries["bob"]["revoked"] is None and alice not in listed
        revoked = datetime.datetime.fromisoformat(entries["alice"]["revoked"])
        assert abs(datetime.datetime.now(datetime.UTC) - revoked).total_seconds() < 60
        assert entries["alice"]["created"] <= entries["alice"]["revoked"]
        assert cli("keys", "--config", str(config), "revoke", "bob").returncode == 0
        # every key revoked: the gateway stays closed, it does not fall open
        assert transcribe(server.ws, wav).reply["error"] == "unauthorized"
        with pytest.raises(InvalidStatus):
            open_stream(server.ws, api_key=bob)
    digests = ledger_rows(tmp_path / "ledger.db", "SELECT digest FROM api_keys")
    assert all(alice.encode() not in row[0] for row in digests)  # stored hashed


def test_usage_ledger_records_both_protocols_and_the_cli_totals_them(
    tmp_path: Path, voices
) -> None:
    config = store_config(tmp_path)
    key = cli("keys", "--config", str(config), "create", "carol").stdout.strip()
    store = {"store": {"path": str(tmp_path / "ledger.db")}}
    with running_server(
        store, backends={"whisper": {"type": "whisper", "model": "tiny.en"}}
    ) as server:
        batch_reply = transcribe(
            server.ws, voices["children"].read_bytes(), api_key=key, machine_id="m1"
        ).reply
        three = speech.concat(
            [voices[n] for n in ("market", "window", "coffee")],
            tmp_path / "three.wav",
            silence_seconds=1.0,
        )
        pcm, rate = read_pcm16(three)
        streamed = stream_pcm(server.ws, pcm, rate, api_key=key)
        assert len(streamed.replies) == 3
        failed = transcribe(server.ws, b"not a wav", api_key=key)
        assert failed.reply["error"] == "invalid_audio"
    rows = ledger_rows(
        tmp_path / "ledger.db",
        "SELECT request_id, key_name, protocol, backend, task, language, machine_id, "
        "audio_seconds FROM usage ORDER BY id",
    )
    assert len(rows) == 4  # the failed request is not billed
    batch_row = rows[0]
    assert batch_row[0] == batch_reply["request_id"]
    assert batch_row[1:7] == ("carol", "batch", "whisper", "transcribe", "en", "m1")
    assert batch_row[7] == pytest.approx(batch_reply["duration"], abs=0.01)
    assert [r[2] for r in rows[1:]] == ["streaming"] * 3
    assert all(1.5 < r[7] < 6 for r in rows[1:])
    report = json.loads(cli("usage", "--config", str(config), "--json").stdout)
    (carol,) = report
    assert carol["key"] == "carol" and carol["requests"] == 4
    assert {(p["protocol"], p["requests"]) for p in carol["by"]} == {("batch", 1), ("streaming", 3)}
    text = cli("usage", "--config", str(config), "--key", "carol").stdout
    assert "carol" in text and "streaming" in text
    assert (
        json.loads(cli("usage", "--config", str(config), "--json", "--since", "2999-01-01").stdout)
        == []
    )


@contextlib.contextmanager
def _ledger_store(kind: str, tmp_path: Path, postgres_server: str | None) -> Iterator[Path]:
    """A config naming a fresh store of ``kind`` (``sqlite`` or ``postgres``)."""
    config = tmp_path / "speechgw.yaml"
    if kind == "sqlite":
        config.write_text(f"store:\n  path: {tmp_path / 'ledger.db'}\n")
        yield config
        return
    assert postgres_server is not None
    with fresh_database(postgres_server) as url:
        config.write_text(f"store:\n  url: {url}\n")
        yield config


def _bill(config: Path, rows: list[UsageRecord]) -> None:
    """``rows`` into the config's ledger, through the store's own write path."""

    async def write() -> None:
        store = open_store(load_app_config(str(config)))
        assert store is not None
        store.prepare()
        await store.open()
        try:
            for row in rows:
                await store.record(row)
        finally:
            await store.aclose()

    asyncio.run(write())


def _utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_usage_bills_each_period_once_and_lists_its_requests(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An admin bills November, then December: each row in exactly one of them (a request at
    midnight is December's), and can list the requests behind a total."""
    postgres = request.getfixturevalue("postgres_server") if kind == "postgres" else None
    times = {
        "oct": "2026-10-31T23:59:59.999",
        "nov-first": "2026-11-01T00:00:00",
        "nov-last": "2026-11-30T23:59:59.999",
        "dec-midnight": "2026-12-01T00:00:00",
        "dec-morning": "2026-12-01T08:30:00",
    }
    rows = [
        UsageRecord(
            name,
            _utc(at),
            key,
            "batch" if key == "alice" else "streaming",
            "whisper",
            "transcribe",
            "en",
            "m,1",
            10.0,
            0.5,
        )
        for name, at in times.items()
        for key in ("alice", "a-key-name-longer-than-twenty-characters")
    ]
    with _ledger_store(kind, tmp_path, postgres) as config:
        _bill(config, rows)

        def usage(*args: str) -> str:
            done = cli("usage", "--config", str(config), *args)
            assert done.returncode == 0, done.stderr
            return done.stdout

        def requests(*args: str) -> int:
            (alice,) = json.loads(usage("--key", "alice", "--json", *args))
            return alice["requests"]

        assert requests("--since", "2026-11-01", "--until", "2026-12-01") == 2
        assert requests("--since", "2026-12-01") == 2
        assert requests("--until", "2026-11-01") == 1
        assert requests() == 5
        # a time with an offset: 09:00 in UTC+1 is 08:00 UTC, before the morning request
        assert requests("--since", "2026-12-01T09:00:00+01:00") == 1
        assert requests("--since", "2026-12-01T08:30:00") == 1  # no offset: UTC, inclusive
        # a key name longer than the column: every line of the table as wide as its header
        table = usage("--since", "2026-11-01", "--until", "2026-12-01").splitlines()
        assert len(table) == 5 and len({len(line) for line in table}) == 1, table
        # the requests behind November's total, oldest first, as CSV and as JSON lines
        listed = usage("--since", "2026-11-01", "--until", "2026-12-01", "--requests")
        parsed = list(csv.DictReader(io.StringIO(listed)))
        assert [(r["request_id"], r["key"]) for r in parsed] == [
            (name, key)
            for name in ("nov-first", "nov-last")
            for key in ("alice", "a-key-name-longer-than-twenty-characters")
        ]
        assert parsed[2]["time"] == "2026-11-30T23:59:59.999+00:00"
        assert parsed[0]["machine_id"] == "m,1" and parsed[0]["audio_seconds"] == "10.0"
        lines = usage("--key", "alice", "--requests", "--json").splitlines()
        assert [json.loads(line)["request_id"] for line in lines] == list(times)
        assert json.loads(lines[0])["protocol"] == "batch"
        # the rows kept, then pruned: November and before go, December stays
        pruned = cli("prune-usage", "--config", str(config), "--before", "2026-12-01")
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout == "deleted 6 usage rows from before 2026-12-01T00:00:00+00:00\n"
        assert requests() == 2 and len(usage("--requests").splitlines()) == 1 + 4
        refused = cli(
            "usage", "--config", str(config), "--since", "2026-12-01", "--until", "2026-11-01"
        )
        assert refused.returncode == 2
        assert "--until must come after --since" in refused.stderr
        bad = cli("usage", "--config", str(config), "--since", "November")
        assert bad.returncode == 2 and "not a date (YYYY-MM-DD)" in bad.stderr


def test_pruning_a_large_ledger_keeps_a_serving_gateway_answering(tmp_path: Path, voices) -> None:
    """A million old rows deleted while requests come: the ledger's writes, which every reply
    waits for, never wait long behind the deletion (one DELETE of them all held the file's
    lock for over a second here, and past 5 s on a larger ledger the gateway answers
    ``server_busy``)."""
    ledger = tmp_path / "ledger.db"
    SQLiteStore(ledger).close()  # the schema
    old = _utc("2026-01-01T00:00:00")
    with contextlib.closing(sqlite3.connect(ledger)) as db, db:
        db.executemany(
            f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (f"old-{i}", old + i, "k", "batch", "null", "transcribe", "en", "m", 3.0, 0.2)
                for i in range(1_000_000)
            ),
        )
    config = store_config(tmp_path)
    wav = voices["children"].read_bytes()
    with running_server({"store": {"path": str(ledger)}}, backends=NULL) as server:
        replies: list[tuple[float, str]] = []
        done = threading.Event()

        def client() -> None:
            while not done.is_set():
                started = time.monotonic()
                reply = transcribe(server.ws, wav).reply
                replies.append((time.monotonic() - started, reply.get("text", str(reply))))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            pruned = cli("prune-usage", "--config", str(config), "--before", "2027-01-01")
        finally:
            done.set()
            thread.join(timeout=30)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("deleted ") and " usage rows from before 2027-01-01" in (
        pruned.stdout
    )
    deleted = int(pruned.stdout.split()[1])
    assert 1_000_000 <= deleted <= 1_000_000 + len(replies) + 1  # and what came meanwhile
    assert replies and all(text == "hello from the null backend" for _, text in replies)
    slowest = max(seconds for seconds, _ in replies)
    # the prune, the server and this client share the machine's cores: on a 2-vCPU machine
    # three to four times slower than the one above at decoding, a reply took 0.80 s
    assert slowest < 1.0, f"a reply waited {slowest:.2f} s behind the pruning"


def test_machine_id_label_values_are_bounded(voices) -> None:
    wav = voices["children"].read_bytes()
    with running_server({"metrics": {"max_machine_ids": 2}}, backends=NULL) as server:
        for machine in ("aa11", "bb22", "cc33", "dd44", 'bad"id\n'):
            assert transcribe(server.ws, wav, machine_id=machine).close_code == 1000

        def count(machine: str) -> float:
            return server.metric(
                "asr_requests_total", machine_id=machine, task="transcribe", status="ok"
            )

        assert (count("aa11"), count("bb22"), count("other"), count("invalid")) == (1, 1, 2, 1)
        assert count("cc33") == 0


def test_llm_postprocessing_and_its_failures(voices) -> None:
    wav = voices["children"].read_bytes()
    with llm_server() as llm:
        settings = {
            "enabled": True,
            "base_url": base_url(llm),
            "model": "upper",
            "api_key": "llm-secret",
            "timeout_seconds": 1.0,
            "prompts": {"de": "Korrigiere den Text."},
        }
        with running_server({"postprocess": settings}, backends=NULL) as server:
            assert server.get_json("/health")["postprocess_enabled"] is True
            ok = transcribe(server.ws, wav).reply
            assert ok["text"] == "hello from the null backend"
            assert ok["postprocessed_text"] == "HELLO FROM THE NULL BACKEND"
            assert ok["postprocess_error"] is None and ok["postprocess_ms"] >= 0
            sent = llm.requests[-1]
            assert sent["path"] == "/v1/chat/completions"
            assert sent["auth"] == "Bearer llm-secret"
            assert sent["body"]["messages"][-1] == {
                "role": "user",
                "content": "hello from the null backend",
            }
            transcribe(server.ws, wav, language="de")
            assert llm.requests[-1]["body"]["messages"][0]["content"] == "Korrigiere den Text."
            calls = len(llm.requests)
            off = transcribe(server.ws, wav, postprocess=False).reply
            assert (off["postprocessed_text"], off["postprocess_ms"], off["postprocess_error"]) == (
                None,
                0,
                None,
            )
            assert len(llm.requests) == calls
            assert (
                server.metric(
                    "asr_postprocess_seconds_count", machine_id="unknown", task="transcribe"
                )
                == 2
            )
            # the names a client says the speaker uses (OpenAI's keywords[]) reach the LLM
            # as spelled, so that it keeps what they made the recogniser get right
            from openai import OpenAI

            with OpenAI(base_url=server.http + "/v1", api_key="-", max_retries=0) as sdk:
                answer = sdk.audio.transcriptions.create(
                    model="gpt-transcribe",
                    file=("a.wav", wav),
                    keywords=["Siobhan", "Dun Laoghaire"],
                )
            assert answer.text == "HELLO FROM THE NULL BACKEND"
            system = llm.requests[-1]["body"]["messages"][0]["content"]
            assert system.startswith("You correct speech recognition output.")
            assert system.endswith(
                "The speaker uses these names and terms; spell them exactly so: Siobhan, "
                "Dun Laoghaire."
            )
        for model, error in [
            ("http500", "HTTP 500"),
            ("garbage", "malformed response"),
            ("deep", "malformed response"),
            ("empty", "malformed response"),
            ("slow", "timeout after 1 s"),
            ("cut", "broke HTTP: IncompleteRead"),
            ("not-http", "broke HTTP: BadStatusLine"),
            ("unfinished-thinking", "only reasoning"),
        ]:
            broken = {**settings, "model": model}
            with running_server({"postprocess": broken}, backends=NULL) as server:
                started = time.monotonic()
                reply = transcribe(server.ws, wav).reply
                assert time.monotonic() - started < 2.5
                assert reply["text"] == "hello from the null backend"  # the raw text survives
                assert reply["postprocessed_text"] is None
                assert error in reply["postprocess_error"], reply
        # a reasoning model's answer without its reasoning; content parts joined
        for model in ("thinking", "template-thinking", "parts"):
            speaking = {**settings, "model": model}
            with running_server({"postprocess": speaking}, backends=NULL) as server:
                reply = transcribe(server.ws, wav).reply
                assert reply["postprocessed_text"] == "HELLO FROM THE NULL BACKEND", reply
                assert reply["postprocess_error"] is None
        # an endpoint that sends on is hung up on, not read from for as long as it sends (the
        # request has long been answered; its worker thread went on reading, a byte at a time
        # or into memory without bound)
        for model, error in [("drip", "timeout after 1 s"), ("endless", "more than 4 MiB")]:
            broken = {**settings, "model": model}
            llm.hung_up.clear()
            with running_server({"postprocess": broken}, backends=NULL) as server:
                started = time.monotonic()
                reply = transcribe(server.ws, wav).reply
                assert time.monotonic() - started < 2.5
                assert reply["text"] == "hello from the null backend", reply
                assert error in reply["postprocess_error"], reply
                assert llm.hung_up.wait(timeout=5)
    with running_server({"postprocess": {"enabled": False}}, backends=NULL) as server:
        assert server.get_json("/health")["postprocess_enabled"] is False
        asked = transcribe(server.ws, wav, postprocess=True).reply
        assert asked["postprocessed_text"] is None
        assert "not configured" in asked["postprocess_error"]


def test_every_reply_survives_kill_9_in_the_ledger(tmp_path: Path, voices) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"store:\n  path: {tmp_path / 'ledger.db'}\n"
        "backends:\n  'null': {type: scripted, text: counted}\nrouting:\n  - backend: 'null'\n"
    )
    server = ServeProcess("--config", str(config)).__enter__()
    port = server.port
    wav = voices["children"].read_bytes()
    received: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                reply = transcribe(f"ws://127.0.0.1:{port}", wav).messages
            except Exception:  # refused, reset mid-handshake: the server is gone
                return
            if reply and "request_id" in reply[0]:
                received.append(reply[0]["request_id"])

    workers = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(received) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.process.send_signal(signal.SIGKILL)  # in the middle of the load, no shutdown at all
    server.process.wait(timeout=30)
    server.stop()
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert len(received) >= 200
    rows = {r for (r,) in ledger_rows(tmp_path / "ledger.db", "SELECT request_id FROM usage")}
    missing = set(received) - rows
    assert not missing, f"{len(missing)} replies have no ledger row"


def test_a_ledger_locked_by_another_process_refuses_with_server_busy(
    tmp_path: Path, voices
) -> None:
    """An admin's sqlite3 shell left in a write transaction on the ledger: each request waited
    30 s for the lock, then got ``internal_error`` (and the log a traceback per request). A
    locked file is the file's state, not a fault: ``server_busy`` with Retry-After, after a
    few seconds; once the lock is gone the next request is answered and billed."""
    ledger = tmp_path / "ledger.db"
    wav = voices["children"].read_bytes()
    with running_server({"store": {"path": str(ledger)}}, backends=NULL) as server:
        assert transcribe(server.ws, wav).close_code == 1000  # the ledger exists
        admin = sqlite3.connect(ledger, isolation_level=None)
        admin.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        refused = transcribe(server.ws, wav)
        waited = time.monotonic() - started
        assert refused.reply["error"] == "server_busy", refused.reply
        assert refused.reply["retry_after"] >= 1 and refused.close_code == 1013
        assert waited < 15
        # and the CLI says so in one line (it was a traceback)
        config = tmp_path / "store.yaml"
        config.write_text(f"store:\n  path: {ledger}\n")
        created = cli("keys", "create", "zed", "--config", str(config))
        assert created.returncode == 1 and "Traceback" not in created.stderr
        assert "the SQLite store could not be used: database is locked" in created.stderr
        admin.execute("COMMIT")
        admin.close()
        answered = transcribe(server.ws, wav)
        assert answered.close_code == 1000
        assert server.metric("speechgw_store_errors_total", operation="ledger") == 1
    billed = {r for (r,) in ledger_rows(ledger, "SELECT request_id FROM usage")}
    assert answered.reply["request_id"] in billed and len(billed) == 2


def test_metrics_on_a_separate_port(voices) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:  # a free port for the metrics listener
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    overrides = {"metrics": {"port": metrics_port}, "server": {"host": "127.0.0.1"}}
    with running_server(overrides, backends=NULL) as server:
        transcribe(server.ws, voices["children"].read_bytes(), machine_id="sep01")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 30
        while True:  # the second listener may come up a moment after the first
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    body = response.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the metrics port never answered"
                time.sleep(0.05)
        assert 'asr_requests_total{machine_id="sep01",status="ok",task="transcribe"} 1.0' in body
        assert server.get("/metrics")[0] == 200  # still on the main port


def _open_ledger(path: Path, ready: Any, results: Any) -> None:
    """One process's start (``ready``, ``results``: a multiprocessing barrier and queue): the
    ledger opened, or why not, for the test below."""
    ready.wait()
    try:
        SQLiteStore(path).close()
        results.put("opened")
    except Exception as exc:
        results.put(str(exc))


def test_processes_starting_together_on_a_new_ledger_all_open_it(tmp_path: Path) -> None:
    """Two processes (``--processes 2``) opening a new SQLite ledger at the same moment both
    open it. Each puts the file in WAL mode, which SQLite refuses to one while the other does
    it ("database is locked", without waiting): before it waited its turn, one process of a
    pair exited, in most runs of this test within its 20 pairs."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    outcomes = []
    for attempt in range(20):
        ready, results = context.Barrier(2), context.Queue()
        path = tmp_path / f"ledger-{attempt}.db"
        pair = [context.Process(target=_open_ledger, args=(path, ready, results)) for _ in range(2)]
        for process in pair:
            process.start()
        outcomes += [results.get(timeout=30) for _ in pair]
        for process in pair:
            process.join(timeout=30)
    assert outcomes == ["opened"] * 40, [o for o in outcomes if o != "opened"]
