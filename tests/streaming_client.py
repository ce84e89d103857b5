"""A client of the streaming protocol for the tests and benchmarks: WAV in, replies out."""

from __future__ import annotations

import base64
import json
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests import speech


def read_pcm16(path: Path) -> tuple[bytes, int]:
    """The frames and rate of a mono 16-bit WAV (as espeak-ng and sox write them)."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return w.readframes(w.getnframes()), w.getframerate()


@dataclass
class StreamResult:
    connection: dict[str, Any]
    replies: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reply_times: list[float] = field(default_factory=list)
    close_code: int | None = None
    interims: list[str] = field(default_factory=list)
    events: list[tuple[str, str, float]] = field(default_factory=list)
    """Every reply and interim in arrival order: (``reply`` or ``interim``, text, time)."""
    others: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    """When the first chunk was sent (``time.monotonic()``)."""


def open_stream(url: str, api_key: str | None = None) -> ClientConnection:
    """A streaming connection that sends no keepalive pings.

    A client that sends faster than real time is paced by TCP, and its pings wait behind the
    audio in the sockets' buffers for as long as the server takes to recognise that audio.
    Once one pong has come back later than ``ping_interval``, the sync client of websockets
    (17.4) waits ``ping_interval - latency`` before the next ping: no time at all, so without
    a ``ping_timeout`` its keepalive thread sends pings back to back (226,249 in one 873 s
    stream: bench/keepalive_backlog.py), holding the connection's lock while each waits to be
    sent; the thread that reads starves, the server's last replies and its Close go unread
    for longer than the server waits for the client's Close, and they were lost with the
    connection (the 240 s stream test, on a slow day). Every read here has its own timeout instead
    (examples/stream_client.py does the same)."""
    query = f"?api_key={api_key}" if api_key is not None else ""
    return connect(
        f"{url}/api/core/google/asr{query}", max_size=None, open_timeout=30, ping_interval=None
    )


def collect(ws: ClientConnection, result: StreamResult, timeout: float = 300) -> None:
    """Read replies and errors until the server closes."""
    try:
        while True:
            message = json.loads(ws.recv(timeout=timeout))
            if "asr_reply" in message:
                result.replies.append(message["asr_reply"])
                result.reply_times.append(time.monotonic())
                result.events.append(("reply", message["asr_reply"], time.monotonic()))
            elif "asr_interim" in message:
                result.interims.append(message["asr_interim"])
                result.events.append(("interim", message["asr_interim"], time.monotonic()))
            elif message.get("type") == "error":
                result.errors.append(message)
            else:
                result.others.append(message)
    except ConnectionClosed as closed:
        result.close_code = closed.rcvd.code if closed.rcvd else None


def stream_pcm(
    url: str,
    pcm: bytes,
    rate: int,
    *,
    chunk_ms: int = 100,
    realtime: float = 0.0,
    language_code: str | None = None,
    api_key: str | None = None,
    end: bool = True,
    interim_results: bool | None = None,
) -> StreamResult:
    """Send ``pcm`` in ``chunk_ms`` chunks (paced at ``realtime`` x real time; 0 = at once),
    then ``{"type": "end"}``, and collect every reply until the server closes."""
    ws = open_stream(url, api_key)
    with ws:
        result = StreamResult(connection=json.loads(ws.recv(timeout=30)))
        reader = threading.Thread(target=collect, args=(ws, result), daemon=True)
        reader.start()
        step = rate * chunk_ms // 1000 * 2  # whole 16-bit samples
        started = result.started = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), step)):
            message: dict[str, Any] = {
                "audio": base64.b64encode(pcm[offset : offset + step]).decode()
            }
            if i == 0:
                message["rate"] = rate
                if language_code:
                    message["language_code"] = language_code
                if interim_results is not None:
                    message["interim_results"] = interim_results
            if realtime:
                delay = started + i * chunk_ms / 1000 / realtime - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            ws.send(json.dumps(message))
        if end:
            ws.send(json.dumps({"type": "end"}))
        reader.join(timeout=600)
    return result


def assert_sentences(
    result: StreamResult, names: list[str], floor: float = 0.6, mean: float = 0.75
) -> None:
    """One reply per sentence, in order; each reply has most of its sentence's words.

    tiny.en on espeak-ng speech mishears a word or two of some utterances depending on where
    the cut falls (as it does in batch mode), so each reply must reach ``floor`` and the
    replies together ``mean``. Losing or repeating audio shows up as a wrong count or order.
    """
    assert len(result.replies) == len(names), result.replies
    recalls = []
    for name, reply in zip(names, result.replies, strict=True):
        recalls.append(speech.word_recall(speech.SENTENCES[name], reply))
        assert recalls[-1] >= floor, (name, reply)
    assert sum(recalls) / len(recalls) >= mean, list(zip(names, result.replies, strict=True))


def replies_until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every message the server sends until it closes, which must be with 1001 (going away:
    a server shutting down)."""
    replies = []
    try:
        while True:
            replies.append(json.loads(ws.recv(timeout=30)))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1001, closed
    return replies
