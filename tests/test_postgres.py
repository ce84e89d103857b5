"""The PostgreSQL store through real servers: schema migrations raced by replicas, a key's
connection places held across replicas (and freed by one killed), and what a replica does
while its database is down: ``/health`` 503, requests refused with ``server_busy`` (keys and
the ledger fail closed, per-key limits fall back to the replica's own count), recovery by
itself."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import psycopg
import pytest
from websockets.exceptions import InvalidStatus

import speechgw
from speechgw.postgres import MIGRATIONS, PostgresStore, migrate
from speechgw.store import StoreUnavailable, UsageRecord
from tests.client import transcribe
from tests.postgres import Cluster, fresh_database
from tests.serving import ServeProcess, running_server
from tests.streaming_client import open_stream
from tests.test_config import run_cli

NULL = {"null": {"type": "scripted", "text": "counted"}}


def test_migrations_apply_once_when_replicas_start_together(postgres_server: str) -> None:
    with fresh_database(postgres_server) as url:
        start = threading.Barrier(4)
        versions: list[int] = []
        errors: list[BaseException] = []

        def replica() -> None:
            try:
                with psycopg.connect(url) as db:
                    start.wait()
                    versions.append(migrate(db))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=replica) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert versions == [len(MIGRATIONS)] * 4
        with psycopg.connect(url) as db:
            applied = [v for (v,) in db.execute("SELECT version FROM speechgw_schema ORDER BY 1")]
            assert applied == list(range(1, len(MIGRATIONS) + 1))
            assert migrate(db) == len(MIGRATIONS)  # again: nothing to do


def _refused(url: str, key: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_stream(url, api_key=key)
    return refused.value.response.status_code


def _admitted_soon(url: str, key: str, within: float = 10.0) -> None:
    """The stream opens within ``within`` s (a place is given back asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with open_stream(url, api_key=key):
                return
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_keys_connection_places_hold_across_replicas(postgres_server: str, tmp_path) -> None:
    with fresh_database(postgres_server) as url:
        key = PostgresStore(url).create_key("one-at-a-time")
        overrides = {"store": {"url": url}, "limits": {"max_connections_per_key": 1}}
        config = tmp_path / "replica.yaml"
        config.write_text(
            f"store: {{url: '{url}'}}\nlimits: {{max_connections_per_key: 1}}\n"
            "backends:\n  'null': {type: scripted, text: counted}\n"
            "routing:\n  - backend: 'null'\nlogging: {level: INFO}\n"
        )
        listed = run_cli("keys", "--config", str(config), "list")
        assert listed.stdout.startswith("one-at-a-time\tactive"), listed.stderr
        with (
            running_server(overrides, backends=NULL) as a,
            running_server(overrides, backends=NULL) as b,
        ):
            with open_stream(a.ws, api_key=key):
                assert _refused(b.ws, key) == 503  # the key's one place is taken on replica a
                assert _refused(a.ws, key) == 503
            _admitted_soon(b.ws, key)

            # a replica killed while it holds the place: PostgreSQL ends its session, and
            # with it the place; nothing has to expire
            with (
                ServeProcess("--config", str(config)) as doomed,
                open_stream(doomed.url, api_key=key),
            ):
                assert _refused(b.ws, key) == 503
                doomed.process.send_signal(signal.SIGKILL)
                doomed.process.wait(timeout=30)
                _admitted_soon(b.ws, key)


def test_a_replica_whose_store_is_down_says_so_and_recovers(voices) -> None:
    cluster = Cluster()  # ours to stop: never the machine's PostgreSQL
    try:
        with fresh_database(cluster.url) as url:
            stored = PostgresStore(url).create_key("stored")
            overrides = {
                "store": {"url": url, "timeout_seconds": 1},
                "auth": {"keys": [{"name": "configured", "key": "from-the-yaml"}]},
                "limits": {"rate_limit_per_key": 600},
            }
            wav = voices["children"].read_bytes()
            with running_server(overrides, backends=NULL) as server:
                assert transcribe(server.ws, wav, api_key=stored).reply["text"] == "counted"
                assert server.get_json("/health")["store"] == "ok"
                cluster.stop("fast")

                status, body = server.get("/health")
                assert status == 503
                assert json.loads(body) == {
                    "status": "store_unreachable",
                    "postprocess_enabled": False,
                    "version": speechgw.__version__,
                    "store": "unreachable",
                    "backends": {"null": {"ready": True}},
                }
                assert server.metric("speechgw_store_up") == 0
                # a key from the store cannot be checked: refused, not let through
                reply = transcribe(server.ws, wav, api_key=stored).reply
                assert reply["error"] == "server_busy", reply
                assert server.metric("speechgw_store_errors_total", operation="keys") == 1
                # a key from the config passes, its rate is counted here alone, and its answer
                # is not sent: it could not be billed
                reply = transcribe(server.ws, wav, api_key="from-the-yaml").reply
                assert reply == {
                    "error": "server_busy",
                    "message": "the usage ledger is unreachable; retry in 5 s",
                    "retry_after": 5,
                }
                assert server.metric("speechgw_store_errors_total", operation="ledger") == 1
                assert server.metric("speechgw_limit_fallbacks_total", limit="rate") == 1

                cluster.start()
                deadline = time.monotonic() + 10  # by itself, no restart: a load balancer
                while server.get("/health")[0] != 200:  # polls /health the same way
                    assert time.monotonic() < deadline, "the replica did not recover"
                    time.sleep(0.2)
                assert server.metric("speechgw_store_up") == 1
                for key in (stored, "from-the-yaml"):
                    assert transcribe(server.ws, wav, api_key=key).reply["text"] == "counted"
            with psycopg.connect(url) as db:
                rows = db.execute("SELECT key_name FROM usage ORDER BY id").fetchall()
            assert [r for (r,) in rows] == ["stored", "stored", "configured"]
    finally:
        cluster.close()


def test_a_database_that_stops_answering_is_given_up_on_in_timeout_seconds(voices) -> None:
    """A server that keeps its connections but answers nothing (stopped, or behind a network
    that drops packets) enforces no statement_timeout, and psycopg waits on it for ever: a
    request hung until the database came back (minutes here). Each store operation now gives
    up after ``store.timeout_seconds`` and the request is refused with ``server_busy``; the
    replica recovers by itself when the server answers again."""
    cluster = Cluster()  # ours to stop: never the machine's PostgreSQL
    timeout = 1.0
    try:
        with fresh_database(cluster.url) as url:
            key = PostgresStore(url).create_key("stored")

            async def each_operation_frozen() -> dict[str, float]:
                """How long each store operation takes to give up while the server is
                stopped: a key lookup, a ledger row, a rate token, a connection place."""
                took = {}
                operations = {
                    "key": lambda store: store.find_key(b"x" * 32),
                    "ledger": lambda store: store.record(_usage_row()),
                    "rate": lambda store: store.limits.take("k", 60, 10),
                    "place": lambda store: store.limits.hold("k", 4),
                }
                for name, operation in operations.items():
                    store = PostgresStore(url, timeout=timeout)
                    await store.open()
                    await store.limits.hold("warm", 4)  # the limits' session is open
                    await store.find_key(b"y" * 32)  # a pooled connection is open
                    with cluster.frozen():
                        started = time.monotonic()
                        with pytest.raises(StoreUnavailable):  # not TimeoutError: a hang
                            await asyncio.wait_for(operation(store), timeout + 10)
                        took[name] = time.monotonic() - started
                    await store.aclose()
                # places are asked for one at a time: five asked at once must not wait in turn
                store = PostgresStore(url, timeout=timeout)
                await store.open()
                await store.limits.hold("warm", 4)
                with cluster.frozen():
                    started = time.monotonic()
                    asked = [store.limits.hold(f"k{n}", 4) for n in range(5)]
                    refused = await asyncio.gather(
                        *(asyncio.wait_for(each, timeout + 10) for each in asked),
                        return_exceptions=True,
                    )
                    took["five places at once"] = time.monotonic() - started
                    assert all(isinstance(r, StoreUnavailable) for r in refused), refused
                await store.aclose()
                return took

            took = asyncio.run(each_operation_frozen())
            assert all(seconds < timeout + 2 for seconds in took.values()), took

            overrides = {"store": {"url": url, "timeout_seconds": timeout}}
            wav = voices["children"].read_bytes()
            with running_server(overrides, backends=NULL) as server:
                assert transcribe(server.ws, wav, api_key=key).reply["text"] == "counted"
                with cluster.frozen():
                    started = time.monotonic()
                    reply = transcribe(server.ws, wav, api_key=key).reply
                    assert reply["error"] == "server_busy", reply
                    assert time.monotonic() - started < timeout + 2
                    assert server.get("/health")[0] == 503
                deadline = time.monotonic() + 10
                while server.get("/health")[0] != 200:
                    assert time.monotonic() < deadline, "the replica did not recover"
                    time.sleep(0.2)
                assert transcribe(server.ws, wav, api_key=key).reply["text"] == "counted"
    finally:
        cluster.close()


def _usage_row() -> UsageRecord:
    return UsageRecord(
        request_id="r",
        at=time.time(),
        key_name="k",
        protocol="batch",
        backend="null",
        task="transcribe",
        language="en",
        machine_id="m",
        audio_seconds=1.0,
        processing_seconds=0.1,
    )


def test_the_shared_token_bucket_under_concurrent_requests(postgres_server: str) -> None:
    """Many requests of one key at once, from two replicas' pools: a slow rate admits exactly
    its burst, and a fast one refuses none (a request that waited for the bucket's row behind
    a later one must not count time backwards)."""

    async def run(url: str) -> tuple[list[float | None], list[float | None]]:
        replicas = [PostgresStore(url, pool_size=8), PostgresStore(url, pool_size=8)]
        for store in replicas:
            await store.open()
        try:

            async def burst(key: str, per_minute: float, n: int) -> list[float | None]:
                return await asyncio.gather(
                    *(replicas[i % 2].limits.take(key, per_minute, 5) for i in range(n))
                )

            return await burst("slow", 1.0, 40), await burst("fast", 6e6, 400)
        finally:
            for store in replicas:
                await store.aclose()

    with fresh_database(postgres_server) as url:
        slow, fast = asyncio.run(run(url))
    assert sum(wait is None for wait in slow) == 5
    assert all(50 < wait <= 60 for wait in slow if wait is not None)  # 1 a minute: ~a minute
    assert fast.count(None) == len(fast)
