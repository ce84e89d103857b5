"""FFmpeg decoding in worker processes, so that a decoder's crash or hang ends one request
and not the server.

Everything FFmpeg decodes for speechgw (compressed uploads on the OpenAI API, the WAV codecs
the batch protocol's reader does not know) is C code reading bytes a client chose. PyAV 19
crashed the whole process on a file whose decoder would not start; any such fault in the
server's own process would end every stream and request in flight. A worker process holds
one file at a time: if it dies, that file's request gets ``invalid_audio`` and the next file
gets a new process; if it runs past its deadline, it is killed the same way.

The cost, measured on 2 vCPUs (BENCHMARKS.md): a few milliseconds a file, and the samples
crossing a socket once (no pickling: the float32 buffer is received into its final array).
Workers are started with ``python -m`` rather than by :mod:`multiprocessing`: forking a
process that runs model threads is unsafe, and a spawned child of ``multiprocessing`` would
import the parent's ``__main__`` (pytest, hypercorn) and all of SciPy; this one imports NumPy
and PyAV only, and is ready in 0.2 s.

The wire between the two is private: a header (two lengths), a JSON object, then raw bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AudioTooLong, InvalidAudio, SpeechGWError

__all__ = ["DecoderFailed", "DecoderPool", "decode_deadline"]

_LOGGER = logging.getLogger(__name__)

_HEADER = struct.Struct("!IQ")
"""A message: the JSON part's length, the raw part's length."""

_MAX_JSON = 1 << 20
_REFUSALS: dict[str, type[SpeechGWError]] = {
    "invalid_audio": InvalidAudio,
    "audio_too_long": AudioTooLong,
}


def decode_deadline(max_seconds: float) -> float:
    """How long one file may take to decode before its process is killed: 30 s, plus a
    tenth of the longest audio taken. FFmpeg decodes and resamples mp3 at 300 to 400 times
    real time on one core of the machines in BENCHMARKS.md; this allows 10 times real time
    (210 s for the default 30-minute limit), so only a decoder that spins trips it."""
    return 30.0 + max_seconds / 10


class DecoderDied(Exception):
    """A worker process ended while it held a file."""


class DecoderNotStarted(RuntimeError):
    """A worker process ended before it said it was ready: nothing of a file reached it."""


class DecoderFailed(InvalidAudio):
    """The decoder crashed on the file, or hung on it: ``invalid_audio`` for the client (the
    file is what did it), told apart from FFmpeg's own refusals only inside the server."""


class _Worker:
    """One decoder process and the parent's end of its socket."""

    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # the package this server runs from, whatever the child's working directory
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # NumPy only concatenates here
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "speechgw.decoder_pool", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            child_end.close()
        self.socket = parent_end
        self.ready = False
        self.clean = True
        """Whether the last exchange ended where a message ends: only then can the process
        take another file."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def decode(self, data: bytes, max_seconds: float, deadline: float) -> np.ndarray:
        """Decode ``data`` in this process; ``deadline`` is a :func:`time.monotonic` time.

        Raises:
            InvalidAudio, AudioTooLong: the decoder's refusal.
            DecoderDied: the process ended (or closed its socket) before answering.
            TimeoutError: no answer by ``deadline``.
            RuntimeError: the decoder failed in a way that is not the file's fault.
        """
        self.clean = False
        try:
            if not self.ready:
                self._receive_ready(deadline)
            _send(self.socket, {"max_seconds": max_seconds}, memoryview(data), deadline)
            answer, size = _receive_header(self.socket, deadline)
            if "samples" in answer:
                samples = np.empty(int(answer["samples"]), dtype=np.float32)
                if size != samples.nbytes:
                    raise DecoderDied("the decoder's answer does not match its header")
                _receive_into(self.socket, memoryview(samples).cast("B"), deadline)
                self.clean = True
                return samples
            _discard(self.socket, size, deadline)
        except (ConnectionError, EOFError) as exc:
            raise DecoderDied(str(exc)) from None
        self.clean = True
        if "refused" in answer:
            raise _REFUSALS[answer["refused"]](answer["message"])
        raise RuntimeError(f"the decoder failed: {answer.get('failed', answer)}")

    def _receive_ready(self, deadline: float) -> None:
        try:
            answer, _ = _receive_header(self.socket, deadline)
        except (ConnectionError, EOFError):
            self.process.wait(timeout=10)
            raise DecoderNotStarted(
                f"the decoder process could not start ({_exit_reason(self.process.returncode)}; "
                "its error is in the server's log)"
            ) from None
        if not answer.get("ready"):
            raise RuntimeError(f"the decoder process said {answer!r} instead of ready")
        self.ready = True

    def stop(self) -> None:
        """End the process: closing its socket ends it when idle; a kill when it is not."""
        self.socket.close()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


class DecoderPool:
    """Up to ``size`` decoder processes, each decoding one file at a time.

    Thread-safe: :meth:`decode` is called from worker threads (the gateway decodes off the
    event loop) and blocks while all ``size`` processes are busy. Processes start when
    first needed (or by :meth:`start`) and stay for the next file.
    """

    def __init__(self, size: int, deadline: Callable[[float], float] = decode_deadline) -> None:
        """``deadline``: the seconds a file may take, given the longest audio taken."""
        self.size = size
        self._deadline = deadline
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False

    def start(self) -> None:
        """Start one process now (without waiting for it to be ready), so that the first
        file does not wait for it."""
        with self._lock:
            if not self._idle and not self._busy:
                self._idle.append(_Worker())

    def pids(self) -> tuple[list[int], list[int]]:
        """The process ids of the idle and the busy decoders (for operators and tests)."""
        with self._lock:
            return [w.pid for w in self._idle], [w.pid for w in self._busy]

    def decode(self, data: bytes, max_seconds: float) -> np.ndarray:
        """The first audio stream of ``data`` as 16 kHz mono float32 (see
        :func:`speechgw.ffmpeg.decode`), decoded in a worker process.

        Raises:
            InvalidAudio: as the decoder says; also when its process died holding the file,
                or ran past :func:`decode_deadline` (the process is replaced).
            AudioTooLong: the audio lasts more than ``max_seconds``.
            RuntimeError: a decoder process could not start (twice), or failed in a way that
                is not the file's fault.
        """
        with self._slots:
            try:
                return self._decode_in_a_worker(data, max_seconds)
            except DecoderNotStarted as exc:
                # killed before it was ready (by the out-of-memory killer, or by hand):
                # not the file's doing; a second that cannot start either is the server's
                _LOGGER.warning("%s; starting another", exc)
                return self._decode_in_a_worker(data, max_seconds)

    def _decode_in_a_worker(self, data: bytes, max_seconds: float) -> np.ndarray:
        with self._worker() as worker:
            deadline = time.monotonic() + self._deadline(max_seconds)
            try:
                return worker.decode(data, max_seconds, deadline)
            except DecoderDied:
                worker.stop()
                code = worker.process.returncode
                _LOGGER.warning(
                    "decoder process %d ended (%s) on a %d-byte file; it is replaced",
                    worker.pid,
                    _exit_reason(code),
                    len(data),
                )
                raise DecoderFailed(
                    "the file could not be decoded as audio (the decoder crashed on it)"
                ) from None
            except TimeoutError:
                worker.stop()
                seconds = self._deadline(max_seconds)
                _LOGGER.warning(
                    "decoder process %d took more than %g s on a %d-byte file; it was killed",
                    worker.pid,
                    seconds,
                    len(data),
                )
                raise DecoderFailed(
                    f"the file could not be decoded as audio (decoding took more than "
                    f"{seconds:g} s)"
                ) from None

    @contextlib.contextmanager
    def _worker(self) -> Iterator[_Worker]:
        """An idle, live process (or a new one), back to the idle list after a clean
        answer; one left in an unknown state (an exception inside the exchange) is ended."""
        with self._lock:
            worker = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.alive():
                    worker = candidate
                    break
                candidate.stop()  # died while idle (killed from outside): not this file's doing
            if worker is None:
                worker = _Worker()
            self._busy.add(worker)
        try:
            yield worker
        finally:
            with self._lock:
                self._busy.discard(worker)
                kept = worker.clean and worker.alive() and not self._closed
                if kept:
                    self._idle.append(worker)
            if not kept:
                worker.stop()

    def close(self) -> None:
        """End every idle process; a busy one ends when its file is done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit status {code}"


def _send(
    sock: socket.socket, header: dict[str, Any], payload: memoryview, deadline: float
) -> None:
    head = json.dumps(header).encode()
    sock.settimeout(_remaining(deadline))
    sock.sendall(_HEADER.pack(len(head), payload.nbytes) + head)
    if payload.nbytes:
        sock.settimeout(_remaining(deadline))
        sock.sendall(payload)


def _receive_header(sock: socket.socket, deadline: float | None) -> tuple[dict[str, Any], int]:
    """The JSON part of the next message, and the length of its raw part (still unread)."""
    fixed = bytearray(_HEADER.size)
    _receive_into(sock, memoryview(fixed), deadline)
    head_size, payload_size = _HEADER.unpack(fixed)
    if head_size > _MAX_JSON:
        raise ConnectionError(f"a message header of {head_size} bytes")
    head = bytearray(head_size)
    _receive_into(sock, memoryview(head), deadline)
    return json.loads(head), payload_size


def _receive_into(sock: socket.socket, into: memoryview, deadline: float | None) -> None:
    """Fill ``into`` from ``sock``. Raises EOFError when the other end closes first."""
    done = 0
    while done < into.nbytes:
        sock.settimeout(None if deadline is None else _remaining(deadline))
        got = sock.recv_into(into[done:])
        if got == 0:
            raise EOFError("the other end closed")
        done += got


def _discard(sock: socket.socket, size: int, deadline: float | None) -> None:
    scratch = memoryview(bytearray(min(size, 1 << 16)))
    while size:
        chunk = scratch[: min(size, scratch.nbytes)]
        _receive_into(sock, chunk, deadline)
        size -= chunk.nbytes


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("past the decoder's deadline")
    return left


def _serve(sock: socket.socket) -> None:
    """The decoder process: answer each file the server sends until it closes the socket."""
    import av  # noqa: F401  (FFmpeg's libraries load before "ready", not on the first file)

    from . import ffmpeg

    _send(sock, {"ready": True}, memoryview(b""), time.monotonic() + 60)
    while True:
        try:
            job, size = _receive_header(sock, None)
        except (EOFError, ConnectionError):
            return  # the server closed the socket, or ended
        data = bytearray(size)
        try:
            _receive_into(sock, memoryview(data), None)
        except (EOFError, ConnectionError):
            return
        answer: dict[str, Any]
        samples = np.empty(0, dtype=np.float32)
        upload, data = bytes(data), bytearray()  # PyAV reads bytes without copying them
        try:
            samples = ffmpeg.decode(upload, float(job["max_seconds"]))
            answer = {"samples": int(samples.size)}
        except (InvalidAudio, AudioTooLong) as refused:
            answer = {"refused": refused.error, "message": refused.message}
        except Exception as exc:  # not the file's fault: the server logs it as internal
            answer = {"failed": f"{type(exc).__name__}: {exc}"}
        del upload
        try:
            _send(sock, answer, memoryview(samples).cast("B"), time.monotonic() + 3600)
        except (ConnectionError, TimeoutError):
            return
        del samples
        _release_freed_memory()


def _release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``). A file's
    decoded frames are thousands of small arrays; freed, they stay in the heap: an idle
    process held 172 MiB after a 30-minute mp3 and 193 MiB after a second (47 MiB fresh)
    without this, 54 MiB with it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def main() -> None:
    """``python -m speechgw.decoder_pool FD``: serve the socket inherited as FD."""
    # The server's own stop and reload signals reach this process too: Ctrl-C signals the
    # terminal's whole process group, systemd's stop sends SIGTERM to every process of the
    # service, and `pkill -HUP speechgw` (a reload) matches this command line. The server
    # drains on them, or reloads, and a file held here must still be answered: this process
    # ends when the server closes its socket (or ends), not on the signal.
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)
    with socket.socket(fileno=int(sys.argv[1])) as sock:
        _serve(sock)


if __name__ == "__main__":
    main()
