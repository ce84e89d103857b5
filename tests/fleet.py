"""A fleet for the tests: gateways as real ``speechgw serve`` processes sharing one PostgreSQL
database, behind a real nginx running ``examples/deploy/nginx-fleet.conf``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.serving import REPO, ServeProcess, free_port

__all__ = ["Fleet", "fleet_config", "nginx_in_front", "running_fleet", "running_nginx"]

FLEET_CONF = REPO / "examples" / "deploy" / "nginx-fleet.conf"
SHIPPED_GATEWAYS = ("10.0.0.11:8765", "10.0.0.12:8765")


def fleet_config(
    path: Path, store_url: str, limits: Mapping[str, Any] | None = None, **extra: Any
) -> Path:
    """A replica's config: tiny.en, the shared store, INFO logging (readiness is read off it)."""
    document: dict[str, Any] = {
        "backends": {"whisper": {"type": "whisper", "model": "tiny.en", "cpu_threads": 1}},
        "routing": [{"backend": "whisper"}],
        "store": {"url": store_url, "timeout_seconds": 3},
        "limits": dict(limits or {}),
        "logging": {"level": "INFO"},
        **extra,
    }
    path.write_text(yaml.safe_dump(document))
    return path


@contextlib.contextmanager
def nginx_in_front(gateway_ports: list[int], access_log: Path) -> Iterator[int]:
    """nginx on a free port with the shipped fleet config, proxying to ``gateway_ports``,
    writing its access log to ``access_log``."""
    text = FLEET_CONF.read_text()
    text = text.replace("/var/log/nginx/speechgw-fleet.access.log", str(access_log))
    assert len(gateway_ports) == len(SHIPPED_GATEWAYS)
    for shipped, port in zip(SHIPPED_GATEWAYS, gateway_ports, strict=True):
        text = text.replace(shipped, f"127.0.0.1:{port}")
    port = free_port()
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
    with running_nginx(text, port):
        yield port


@contextlib.contextmanager
def running_nginx(http_block: str, port: int) -> Iterator[None]:
    """A real nginx serving ``http_block`` (the inside of ``http {}``, as the configs of
    ``examples/deploy`` are written) from a scratch prefix, until it listens on ``port``."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise RuntimeError("nginx is not installed: run scripts/setup.sh --test (package nginx)")
    prefix = Path(tempfile.mkdtemp(prefix="speechgw-nginx-"))
    temp = {n: prefix / n for n in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir()
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\nevents {{}}\nhttp {{\n"
        f"access_log off;\nclient_body_temp_path {temp['body']};\n"
        f"proxy_temp_path {temp['proxy']};\nfastcgi_temp_path {temp['fastcgi']};\n"
        f"uwsgi_temp_path {temp['uwsgi']};\nscgi_temp_path {temp['scgi']};\n{http_block}\n}}\n"
    )
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                assert process.stderr is not None
                raise RuntimeError("nginx did not start: " + process.stderr.read().decode())
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()
        shutil.rmtree(prefix, ignore_errors=True)


@dataclass
class Fleet:
    replicas: list[ServeProcess]
    proxy_port: int
    config: Path
    store_url: str
    access_log: Path
    """nginx's."""

    @property
    def ws(self) -> str:
        """Through nginx."""
        return f"ws://127.0.0.1:{self.proxy_port}"


@contextlib.contextmanager
def running_fleet(config: Path, store_url: str, replicas: int = 2) -> Iterator[Fleet]:
    """``replicas`` gateways on ``config`` (started together: they race for the migrations)
    and nginx in front of them."""
    processes = [ServeProcess("--config", str(config)) for _ in range(replicas)]
    try:
        for process in processes:
            process.__enter__()
        access_log = config.parent / "nginx-access.log"
        with nginx_in_front([p.port for p in processes], access_log) as port:
            yield Fleet(processes, port, config, store_url, access_log)
    finally:
        for process in processes:
            process.stop()
