"""Thin real-WebSocket client helpers (the ``websockets`` library), used by the tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


@dataclass
class Exchange:
    """Everything the server sent, and how it closed the connection."""

    messages: list[Any]
    close_code: int | None
    close_reason: str

    @property
    def reply(self) -> Any:
        assert len(self.messages) == 1, self.messages
        return self.messages[0]


def drain(ws: ClientConnection, timeout: float = 120) -> Exchange:
    """Read until the server closes; JSON text frames are decoded."""
    messages: list[Any] = []
    try:
        while True:
            frame = ws.recv(timeout=timeout)
            messages.append(json.loads(frame) if isinstance(frame, str) else frame)
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return Exchange(messages, rcvd.code if rcvd else None, rcvd.reason if rcvd else "")


def batch(url: str, *frames: str | bytes | dict, timeout: float = 120) -> Exchange:
    """Open ``/ws/transcribe``, send ``frames`` (dicts as JSON) and read until closed."""
    with connect(url + "/ws/transcribe", max_size=None, open_timeout=30) as ws:
        for frame in frames:
            ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)
        return drain(ws, timeout)


def transcribe(url: str, wav: bytes, **fields: Any) -> Exchange:
    metadata = {"type": "transcribe", "language": "en", **fields}
    return batch(url, metadata, wav)


def multipart_upload(
    audio: bytes, model: str = "whisper-1", filename: str | None = "a.wav", **fields: str
) -> tuple[bytes, str]:
    """An OpenAI transcription request's form (``model``, any other ``fields`` and ``file``) as
    a raw multipart/form-data body, for clients other than the SDK: the body and its
    Content-Type. ``filename`` None sends ``file`` as a text field (a part with no filename)."""
    boundary = "b0undary"
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in {"model": model, **fields}.items()
    )
    named = "" if filename is None else f'; filename="{filename}"'
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"{named}\r\n\r\n'
    body = head.encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, content_type: str, api_key: str | None = None) -> tuple[int, Any]:
    """POST ``body`` as ``content_type``; the status and the JSON answer, error or not."""
    headers = {"Content-Type": content_type}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, json.loads(refused.read())


class UploadInBackground:
    """A recording sent through the OpenAI API (``stream=true``) from a thread of its own, for
    tests of what happens while it is decoded: entering waits for its first words (the first
    30 s window is done, the rest is under way); ``done`` is set once its answer is in, and
    ``text`` is then that answer, ``finished`` its time (``time.monotonic()``); leaving waits
    for it."""

    def __init__(self, http_url: str, path: Path) -> None:
        self.done = threading.Event()
        self.text: str | None = None
        self.finished = float("inf")
        self._decoding = threading.Event()
        self._thread = threading.Thread(target=self._upload, args=(http_url, path))

    def _upload(self, http_url: str, path: Path) -> None:
        from openai import OpenAI

        sdk = OpenAI(base_url=http_url + "/v1", api_key="none", max_retries=0)
        try:
            with sdk, path.open("rb") as audio:
                events = sdk.audio.transcriptions.create(model="whisper-1", file=audio, stream=True)
                for event in events:
                    self._decoding.set()
                    if event.type == "transcript.text.done":
                        self.text = event.text
        finally:
            self.finished = time.monotonic()
            self._decoding.set()
            self.done.set()

    def __enter__(self) -> UploadInBackground:
        self._thread.start()
        assert self._decoding.wait(120), "the upload's first words did not come"
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(300)


def _poll_health(http_url: str, stop: Any, polling: Any, asked: Any) -> None:
    parts = urllib.parse.urlsplit(http_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    waits = []
    with contextlib.closing(connection):
        while not stop.is_set():
            at = time.monotonic()
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                break
            waits.append((at, time.monotonic() - at))
            polling.set()
            stop.wait(0.002)
    asked.put(waits)


class HealthPoller:
    """Another client of the server: asks ``GET /health`` back to back on one kept-alive
    connection, from a process of its own (a thread would wait for the test's own hold of its
    GIL, which is not the server's), and keeps how long each answer took. What it waits is what
    any client of the server waits while the event loop is busy elsewhere."""

    def __init__(self, http_url: str) -> None:
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._stop, self._polling = spawn.Event(), spawn.Event()
        self._asked = spawn.Queue()
        self._process = spawn.Process(
            target=_poll_health,
            args=(http_url, self._stop, self._polling, self._asked),
            daemon=True,
        )
        self._waits: list[tuple[float, float]] = []  # (asked at, answered after)

    def waits_between(self, start: float, end: float) -> list[float]:
        """How long each question asked between ``start`` and ``end`` (monotonic: one clock
        for every process) waited; once the poller has stopped."""
        return [wait for at, wait in self._waits if start <= at <= end]

    def __enter__(self) -> HealthPoller:
        self._process.start()
        assert self._polling.wait(60), "the poller got no answer from /health"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._waits = self._asked.get(timeout=60)
        self._process.join(60)
