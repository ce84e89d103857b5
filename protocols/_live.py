"""A live stream's WebSocket connection, the same for every protocol that has one: its
reading loop with an idle timeout, a shutdown that stops the reading and not the handler,
the stream answered to its end, then the close (:mod:`._closing`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.websockets import WebSocket

from speechgw.gateway import Gateway

from ._closing import close, drop_until_closed

__all__ = ["LiveConnection", "Take", "serve_live"]

Take = Callable[[dict[str, Any], asyncio.Timeout], Awaitable[str | None]]
"""Acts on one client message: returns the stream's ending, or None to read on."""


class LiveConnection(Protocol):
    """What :func:`serve_live` needs of an adapter's connection."""

    open: bool
    """The client is still there to be answered."""

    def gone(self) -> None:
        """The client left (its disconnect was read)."""


async def _read_messages(
    websocket: WebSocket, idle_seconds: float, take: Take, gone: Callable[[], None]
) -> str:
    """Hand each of the client's messages to ``take`` until it ends the stream (``take``'s
    ending), leaves (``"disconnect"``; ``gone`` is told), or sends nothing for
    ``idle_seconds`` (``"idle"``). ``take`` gets the idle deadline, to put it off while it
    waits on back-pressure (waiting is not idling)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as deadline:
            while True:
                deadline.reschedule(loop.time() + idle_seconds)  # one timer per connection
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    gone()
                    return "disconnect"
                ending = await take(message, deadline)
                if ending is not None:
                    return ending
    except TimeoutError:
        return "idle"


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def serve_live(
    websocket: WebSocket,
    gateway: Gateway,
    conn: LiveConnection,
    take: Take,
    flush: Callable[[str], Awaitable[None]],
    closes: dict[str, tuple[int, str]],
    worker: list[asyncio.Task[None]],
) -> str:
    """A live stream's connection from its first message to its close. The reading loop
    hands each message to ``take`` until the stream ends (``take``'s ending, ``"disconnect"``,
    or ``"idle"`` after the gateway's ``stream_idle_seconds`` without a message); it runs as
    a task of its own, which the gateway cancels at a shutdown (then the ending is
    ``"shutdown"``), so that a shutdown stops the reading without stopping this handler. Once
    it ends, what the client still sends (audio in flight, pings, its Close) is read and
    dropped, or hypercorn's full queue would hold back the close; ``flush(ending)`` ends the
    stream, and its recogniser (``worker``, once started) answers what it holds; then the
    socket closes with ``closes[ending]`` (none for an ending without one, such as a
    disconnect) while the client is there to hear it. Returns the ending. The recogniser is
    stopped if the handler is."""
    idle = gateway.config.limits.stream_idle_seconds
    reading = _read_messages(websocket, idle, take, conn.gone)
    reader = asyncio.create_task(reading)
    gateway.track_reader(reader)
    discard: asyncio.Task[None] | None = None
    try:
        try:
            ending = await reader
        except asyncio.CancelledError:
            if _being_cancelled():
                raise
            ending = "shutdown"
        if conn.open:
            discard = asyncio.create_task(drop_until_closed(websocket))
        await flush(ending)
        if worker:
            await worker[0]
        close_with = closes.get(ending)
        if close_with is not None and conn.open:
            await close(websocket, *close_with, reading=discard)
        return ending
    finally:
        if not reader.done():
            reader.cancel()
        if worker and not worker[0].done():
            worker[0].cancel()
        if discard is not None:
            discard.cancel()
