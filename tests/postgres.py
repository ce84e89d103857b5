"""PostgreSQL for the tests: the machine's own server when one listens on 127.0.0.1:5432, else a
private cluster started from Debian's packages (``scripts/setup.sh --test`` installs them).

Each test gets a database of its own (:func:`fresh_database`), dropped afterwards. A test that
stops and restarts PostgreSQL uses a :class:`Cluster` of its own, never the machine's.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.serving import free_port

__all__ = ["Cluster", "fresh_database", "machine_or_private_postgres"]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: run scripts/setup.sh --test (package "
            "postgresql)"
        )
    return found[-1]


class Cluster:
    """A private PostgreSQL server on a free port, in a temporary directory; it can be
    stopped and started again on the same port and data (a restart under load)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="speechgw-pg-"))
        self.data = self.dir / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as_user, *command], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options + " -c fsync=off",
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The cluster stopped (SIGSTOP) as a whole: connections stay open, queries get no
        answer, as from a server that hangs or behind a network that drops packets."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        processes = [postmaster, *_children(postmaster)]
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (PostgreSQL's backends and workers)."""
    children = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(Path(stat).parent.name))
    return children


@contextlib.contextmanager
def machine_or_private_postgres() -> Iterator[str]:
    """A server URL (no database): the machine's, or a private cluster's while none listens."""
    if _listening(5432):
        url = "postgresql://postgres@127.0.0.1:5432"
        try:
            psycopg.connect(url + "/postgres", connect_timeout=5).close()
        except psycopg.Error:
            pass  # something else on 5432, or not ours to use: start our own
        else:
            yield url
            return
    cluster = Cluster()
    try:
        yield cluster.url
    finally:
        cluster.close()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty database on ``server_url``; its URL, and it is dropped afterwards."""
    name = "speechgw_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url + "/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url}/{name}"
    finally:
        with psycopg.connect(server_url + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
