"""``speechgw serve --processes N``: N server processes on one port, under one parent.

One interpreter's GIL caps what one process serves, whatever the model could do: on the H200,
one process held the GIL half the time at 1,096 audio s/s, and 200 live streams cost 0.64 s of
it per second (BENCHMARKS.md, "Batched Whisper on the GPU"). Each process here is a whole
gateway with its own models and batcher, as the replicas of a fleet are, on one machine and
one port: the parent binds the port (and holds it), starts the processes (``python -m
speechgw serve --child ...``, each a process of its own, not a fork of one that may run
threads), each binds it too with ``SO_REUSEPORT``, and the kernel deals the connections out
among them by their addresses. (One socket shared by all was tried first: each process's loop
takes every connection waiting when it wakes, and a burst of 8 streams went to one process.)

The parent serves nothing. It passes SIGINT, SIGTERM (each process then drains as a single
server does) and SIGHUP (each reloads) on, starts a new process in place of one that ends
while serving (a crash), and stops them all, exiting 1, if one cannot start (a config or
model error, said in that process's own line) or if they keep ending (5 within a minute).
A process ends with its parent: Linux signals it (``PR_SET_PDEATHSIG``) when the parent dies.
``/metrics`` answers for them all (:mod:`speechgw.siblings`); limits and the ledger are each
process's, as each replica's in a fleet (README, "Several processes").
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from .errors import ConfigError
from .siblings import ProcessPlace

__all__ = ["child_place", "serve_processes"]

_LOGGER = logging.getLogger("speechgw")

_RESTARTS = 5
_RESTART_WINDOW = 60.0
"""More than ``_RESTARTS`` processes ending within this many seconds: something is wrong with
every one of them (the GPU, the store), and starting more would only hide it."""
_PR_SET_PDEATHSIG = 1


class _Process:
    """One server process: its pid, and the pipe it says "ready" on."""

    def __init__(self, index: int, popen: subprocess.Popen[bytes], ready: int) -> None:
        self.index = index
        self.popen = popen
        self.ready_pipe = ready
        self.ready = False
        self.pidfd = os.pidfd_open(popen.pid)

    def close(self) -> None:
        for fd in (self.pidfd, self.ready_pipe):
            with contextlib.suppress(OSError):
                os.close(fd)


def serve_processes(
    count: int, sockets: list[socket.socket], config_path: str | None, host: str, port: int
) -> int:
    """Run ``count`` server processes on ``host``:``port`` until SIGINT or SIGTERM; 0 when
    they all stopped cleanly, 1 when one could not start or they kept ending. ``sockets``: the
    ports, bound (:func:`~speechgw.server.bind_shared`) and held here while the processes
    serve them."""
    if not hasattr(os, "pidfd_open"):
        raise ConfigError("server.processes: more than one process needs Linux (5.3 or later)")
    folder = Path(tempfile.mkdtemp(prefix="speechgw-processes-"))
    running: dict[int, _Process] = {}
    selector = selectors.DefaultSelector()
    ended: deque[float] = deque(maxlen=_RESTARTS + 1)
    state = {"stopping": False, "failed": False}

    def start(index: int) -> None:
        read, write = os.pipe()
        command = [sys.executable, "-m", "speechgw", "serve", "--host", host, "--port", str(port)]
        command += ["--processes", str(count)]  # as its config says, though it starts none
        if config_path is not None:
            command += ["--config", config_path]
        command += ["--child", f"{index}:{count}:{write}:{os.getpid()}:{folder}"]
        popen = subprocess.Popen(command, pass_fds=[write], stdin=subprocess.DEVNULL)
        os.close(write)
        process = _Process(index, popen, read)
        running[index] = process
        selector.register(process.pidfd, selectors.EVENT_READ, ("ended", process))
        selector.register(process.ready_pipe, selectors.EVENT_READ, ("ready", process))

    def stop_all(sig: int = signal.SIGTERM) -> None:
        for process in running.values():
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(sig)

    def on_stop(signum: int, frame: object) -> None:
        state["stopping"] = True
        stop_all()

    def on_reload(signum: int, frame: object) -> None:
        stop_all(signal.SIGHUP)

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGINT, on_stop),
            (signal.SIGTERM, on_stop),
            (signal.SIGHUP, on_reload),
        )
    }
    try:
        for index in range(count):
            start(index)
        _LOGGER.info("%d server processes share the port (pids %s)", count, _pids(running))
        while running:
            for key, _ in selector.select(timeout=1.0):
                what, process = key.data
                if what == "ready":
                    selector.unregister(process.ready_pipe)
                    process.ready = os.read(process.ready_pipe, 1) == b"1"
                    continue
                selector.unregister(process.pidfd)
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(process.ready_pipe)
                code = process.popen.wait()
                process.close()
                del running[process.index]
                if state["stopping"]:
                    state["failed"] |= code != 0
                    continue
                if not process.ready:
                    # it said why on its own stderr (a config or model error, a store down)
                    _LOGGER.error("process %d could not start (exit code %s)", process.index, code)
                    _fail(state, stop_all)
                    continue
                ended.append(time.monotonic())
                if len(ended) > _RESTARTS and ended[-1] - ended[0] < _RESTART_WINDOW:
                    _LOGGER.error(
                        "%d processes ended within %g s: stopping", len(ended), _RESTART_WINDOW
                    )
                    _fail(state, stop_all)
                    continue
                _LOGGER.warning(
                    "process %d (pid %d) ended with exit code %s; starting another",
                    process.index,
                    process.popen.pid,
                    code,
                )
                start(process.index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in running.values():  # only if the parent itself failed
            process.popen.kill()
            process.popen.wait()
            process.close()
        selector.close()
        for leftover in folder.glob("*"):
            leftover.unlink(missing_ok=True)
        folder.rmdir()
    return 1 if state["failed"] else 0


def _fail(state: dict[str, bool], stop_all: object) -> None:
    state["stopping"] = True
    state["failed"] = True
    stop_all()  # type: ignore[operator]


def _pids(running: dict[int, _Process]) -> str:
    return ", ".join(str(p.popen.pid) for p in running.values())


def child_place(spec: str) -> ProcessPlace:
    """What ``--child INDEX:COUNT:READY_FD:PARENT_PID:FOLDER`` tells a server process: its
    place among its siblings. From here on the process ends when its parent does."""
    index, count, ready_fd, parent, folder = spec.split(":", 4)
    with contextlib.suppress(OSError, AttributeError):  # Linux: SIGTERM when the parent dies
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the parent died before that took effect
        os.kill(os.getpid(), signal.SIGTERM)
    pipe = int(ready_fd)

    def ready() -> None:
        with contextlib.suppress(OSError):
            os.write(pipe, b"1")
            os.close(pipe)

    return ProcessPlace(int(index), int(count), Path(folder), ready)
