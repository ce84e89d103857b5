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
model error, said in that process's own line) or if they keep ending (six within a minute).
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
import shutil
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
    try:
        return _Supervisor(count, config_path, host, port, folder).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Supervisor:
    """The parent's loop: it waits on each process's pidfd and "ready" pipe, and on signals."""

    def __init__(
        self, count: int, config_path: str | None, host: str, port: int, folder: Path
    ) -> None:
        self.count = count
        self.command = [sys.executable, "-m", "speechgw", "serve", "--host", host]
        self.command += ["--port", str(port), "--processes", str(count)]  # as its config says
        if config_path is not None:
            self.command += ["--config", config_path]
        self.folder = folder
        self.running: dict[int, _Process] = {}
        self.selector = selectors.DefaultSelector()
        self.ended: deque[float] = deque(maxlen=_RESTARTS + 1)
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        handlers = {signal.SIGINT: self._on_stop, signal.SIGTERM: self._on_stop}
        handlers[signal.SIGHUP] = self._on_reload
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            for index in range(self.count):
                self._start(index)
            pids = ", ".join(str(p.popen.pid) for p in self.running.values())
            _LOGGER.info("%d server processes share the port (pids %s)", self.count, pids)
            while self.running:
                for key, _ in self.selector.select(timeout=1.0):
                    what, process = key.data
                    if self.running.get(process.index) is not process:
                        continue  # ended in this same round: its pipe is closed
                    if what == "ready":
                        self.selector.unregister(process.ready_pipe)
                        process.ready = os.read(process.ready_pipe, 1) == b"1"
                    else:
                        self._ended(process)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for process in self.running.values():  # only if the parent itself failed
                process.popen.kill()
                process.popen.wait()
                process.close()
            self.selector.close()
        return 1 if self.failed else 0

    def _start(self, index: int) -> None:
        read, write = os.pipe()
        child = f"{index}:{self.count}:{write}:{os.getpid()}:{self.folder}"
        command = [*self.command, "--child", child]
        popen = subprocess.Popen(command, pass_fds=[write], stdin=subprocess.DEVNULL)
        os.close(write)
        process = _Process(index, popen, read)
        self.running[index] = process
        self.selector.register(process.pidfd, selectors.EVENT_READ, ("ended", process))
        self.selector.register(process.ready_pipe, selectors.EVENT_READ, ("ready", process))
        if self.stopping:  # a stop signal came while it was being started
            popen.send_signal(signal.SIGTERM)

    def _ended(self, process: _Process) -> None:
        self.selector.unregister(process.pidfd)
        with contextlib.suppress(KeyError):  # still registered unless it said ready (or EOF)
            self.selector.unregister(process.ready_pipe)
        code = process.popen.wait()
        process.close()
        del self.running[process.index]
        if self.stopping:
            # one told to stop before it served (a stop while the processes load their
            # models: ``systemctl stop`` just after a start) ends by the signal, as a single
            # server does: the stop asked for, not a failure (it made the parent exit 1)
            stopped_early = not process.ready and code == -signal.SIGTERM
            if code != 0 and not stopped_early:
                _LOGGER.error("process %d ended with exit code %s", process.index, code)
                self.failed = True
            return
        if not process.ready:
            # it said why on its own stderr (a config or model error, a store down)
            _LOGGER.error("process %d could not start (exit code %s)", process.index, code)
            self._fail()
            return
        self.ended.append(time.monotonic())
        if len(self.ended) > _RESTARTS and self.ended[-1] - self.ended[0] < _RESTART_WINDOW:
            _LOGGER.error(
                "%d processes ended within %g s: stopping", len(self.ended), _RESTART_WINDOW
            )
            self._fail()
            return
        _LOGGER.warning(
            "process %d (pid %d) ended with exit code %s; starting another",
            process.index,
            process.popen.pid,
            code,
        )
        self._start(process.index)

    def _fail(self) -> None:
        self.failed = True
        self._on_stop(signal.SIGTERM, None)

    def _signal_all(self, sig: int) -> None:
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(sig)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _on_reload(self, signum: int, frame: object) -> None:
        self._signal_all(signal.SIGHUP)


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

    return ProcessPlace(int(index), int(count), Path(folder), int(parent), ready)
