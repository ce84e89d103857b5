"""A real speechgw server on an ephemeral port, in a thread of the test process.

The socket is bound to port 0 before the server starts, so the port is known without races;
readiness is the server's own ``/health`` answering 200 (the lifespan has loaded the models).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from speechgw.app import build_app
from speechgw.config import load_config
from speechgw.gateway import Gateway
from speechgw.loading import backend_options
from speechgw.server import event_loop_factory, serve_app

TINY = {"whisper": {"type": "whisper", "model": "tiny.en", "cpu_threads": 1}}


class Endpoints:
    """``GET`` of a running server's HTTP endpoints, for an in-process :class:`Server` and a
    :class:`ServeProcess` alike (each has ``http``, its base URL)."""

    http: str

    def get(self, path: str) -> tuple[int, str]:
        """One request on a connection of its own: its status and body, error or not."""
        try:
            with urllib.request.urlopen(self.http + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in ``/metrics`` (0.0 when absent)."""
        return metric_in(self.get("/metrics")[1], name, **labels)


def metric_in(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric == name and got == want:
            return float(value)
    return 0.0


@dataclass
class Server(Endpoints):
    port: int
    app: Starlette
    loop: asyncio.AbstractEventLoop

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> Gateway:
        return self.app.state.gateway

    def tasks(self) -> int:
        """Tasks alive on the server's event loop (a leak shows up as more after a test)."""
        return len(asyncio.all_tasks(self.loop))


def config_for(overrides: Mapping[str, Any] | None = None, backends: Mapping[str, Any] = TINY):
    # the store is off unless a test names one: tests must not share a ledger
    document: dict[str, Any] = {
        "backends": dict(backends),
        "routing": [{"backend": "whisper"}],
        "store": {"path": None},
    }
    if "null" in backends and "whisper" not in backends:
        document["routing"] = [{"backend": "null"}]
    document.update(overrides or {})
    return load_config(document, env={}, backend_options=backend_options)


def free_port() -> int:
    """A port nothing listens on now (for servers that bind it themselves: nginx, PostgreSQL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(
    overrides: Mapping[str, Any] | None = None,
    backends: Mapping[str, Any] = TINY,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    config = config_for(overrides, backends)
    app = build_app(config, env=env or {})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    loop = event_loop_factory(config.server.event_loop)()  # the loop `speechgw serve` runs
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(serve_app(app, config, stop.wait, sock=sock))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=main, name=f"speechgw-{port}", daemon=True)
    thread.start()
    server = Server(port=port, app=app, loop=loop)
    deadline = time.monotonic() + 120
    while True:
        if failure:
            raise RuntimeError("the server failed to start") from failure[0]
        with contextlib.suppress(OSError):
            if server.get("/health")[0] == 200:
                break
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not become ready in 120 s")
        time.sleep(0.05)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
        assert not thread.is_alive(), "the server did not shut down"
        loop.close()
        sock.detach()  # hypercorn owned the descriptor and closed it with its listener


REPO = Path(__file__).resolve().parents[1]


class ServeProcess(Endpoints):
    """``python -m speechgw serve`` as a real process on a free port, its log collected."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """``cwd``: where relative paths of the config (the ledger) land; the checkout by
        default, so a test of the shipped config should pass a temporary directory.
        ``open_files``: the (soft, hard) limit on open files it starts with (``ulimit -n``),
        set by util-linux's ``prlimit`` (a ``preexec_fn`` may deadlock in a threaded parent)."""
        limit = [] if open_files is None else ["prlimit", "--nofile={}:{}".format(*open_files)]
        self.process = subprocess.Popen(
            [
                *limit,
                sys.executable,
                "-m",
                "speechgw",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *args,
            ],
            cwd=cwd or REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "SERVER_API_KEY": "", **(env or {})},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.port = 0
        self.tls = False  # the server said https: server.certfile is set
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"Running on (https?)://[\d.]+:(\d+)", line)
            if found:
                self.tls = found.group(1) == "https"
                self.port = int(found.group(2))
                self.ready.set()
        self.ready.set()  # the process ended (its stderr closed): no need to wait longer

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> ServeProcess:
        if not self.ready.wait(180) or not self.port:
            self.stop()
            raise RuntimeError("the server did not start:\n" + self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()
