"""Closing a WebSocket as RFC 6455 7.1.1 asks: send Close, then wait for the client's.

hypercorn closes the TCP connection as soon as the application's handler returns. Whatever the
client sends after that (a keepalive ping, audio still in flight) hits a closed socket, the
kernel answers with a reset, and a reset makes the client's kernel drop what it has received
but not read yet: a stream's last replies, a batch result, the Close frame itself. (A client
reading one message at a time while it pings lost the last of three replies every time:
``tests/test_closing.py``.) So every WebSocket protocol closes through :func:`close`: the Close
frame goes out, and the handler reads on, dropping what comes, until the client's Close has
arrived (then hypercorn closes the connection) or :data:`CLOSE_TIMEOUT` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["CLOSE_TIMEOUT", "close", "drop_until_closed"]

CLOSE_TIMEOUT = 5.0
"""How long the server waits for the client's Close: a client answers at once once it has
read up to it. Also how much longer a connection lasts whose client never answers."""


async def drop_until_closed(websocket: WebSocket) -> None:
    """Read and drop what the client sends until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


async def close(
    websocket: WebSocket,
    code: int = 1000,
    reason: str = "",
    reading: asyncio.Task[None] | None = None,
) -> None:
    """Send Close with ``code`` and ``reason``, then wait (at most :data:`CLOSE_TIMEOUT`) for
    the client's: by reading and dropping, or, when a task of the caller's is already doing
    that (``reading``, a :func:`drop_until_closed`), by waiting for it. A client already gone
    is not an error."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close(code, reason)
    with anyio.move_on_after(CLOSE_TIMEOUT):
        if reading is not None:
            await asyncio.shield(reading)
        else:
            await drop_until_closed(websocket)
