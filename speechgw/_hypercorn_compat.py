"""Eight fixes to hypercorn, applied where the server starts.

**Refuse permessage-deflate.** hypercorn 0.18 accepts permessage-deflate whenever a client
offers it, with no option to refuse (upstream hypercorn issue #307). Browsers and the
``websockets`` client always offer it, and deflating already-dense audio cut a null server's
throughput about tenfold here (62 against 761 requests/s of 274 KB WAV frames). Until hypercorn
grows an option, the handshake is made to ignore the client's extension offer, which RFC 6455
allows: a server may decline any extension.

**Bounded, and never waiting on a queue nobody will read.** hypercorn passes each
connection's events to the application through a queue of ten, and whoever puts an event waits
while it is full. A WebSocket message can be ``max_frame_bytes`` (64 MiB), so a client that sent
on while its request ran could park ten of them in memory; WebSocket queues now hold two
(hypercorn queues no event from inside a WebSocket application's own send but the disconnect
below; HTTP keeps ten, as its body comes in pieces of at most 64 KB). Two waits could
last forever: the reader's, once the application had returned (nobody empties the queue), and
the application's own, when a write of its found the client gone and hypercorn queued the
disconnect from inside that write. Either way the connection, its task and the queued messages
stayed until the server stopped, and shutdown waited out its grace period. Now the queue is
emptied when the application returns and later events are dropped, and a disconnect that finds
the queue full is queued in the background.

**HTTP/2 requests answered before their end.** A request refused before its body is read (a
wrong key, an upload over the limit, a wrong URL) is answered at once; an HTTP/2 client (curl
over https negotiates it) may still be sending that body. hypercorn 0.18 then lost the whole
connection, with any other request multiplexed on it: data for the finished stream failed
with a KeyError (and a logged traceback), and curl, told to stop, ends the stream short of its
Content-Length, which the h2 library takes for a connection error (GOAWAY). Now, once a
response has ended while its request is still coming, the stream is reset with NO_ERROR, as
RFC 9113 (8.1) provides: the client stops sending and the late frames are ignored; data that
was already on its way is acknowledged (so the connection's flow control window stays open
for the other streams) and dropped.

**A write the client never reads is given up on.** hypercorn writes to a connection and waits
until the client has read enough, with no time limit, and holds the connection's send lock
meanwhile. A client that stops reading, once the sockets' buffers are full, so held every
later write forever: its pings' pongs (hypercorn answers those from its reading task, which
then stopped reading too), and the application's replies. A stream whose client flooded pings
and read nothing kept its place in ``max_streams`` until the client went away (it never
reached its idle timeout's end: its last replies could not be sent). Now a write during which
the client reads nothing for ``limits.send_timeout_seconds`` aborts the connection, which the
application sees as the client's disconnect; a client that reads slowly, but reads, is waited
for (a big result over a slow link).

**Frames sent before the 101.** A client that writes its upgrade request and its first frames
at once (RFC 6455 4.1 says to wait; scripted clients often do not) got HTTP 400: hypercorn
took data before its handshake's answer for a broken request. Those bytes are now held (at
most 64 KiB, then reading waits: TCP pushes back) until the application answers the upgrade,
read in order as the first frames if it accepted, dropped if it refused.

**Nothing buffered after an oversized message.** hypercorn answers a message over
``max_frame_bytes`` with Close 1009, but went on putting every later frame of the connection
into the same buffer, which it never emptied: a client that kept sending (a hostile one, or a
recorder that does not read) grew the server by about what it sent, or more, until the
application's receive timeout (``tests/test_hostile.py``: 280 MB for 300 MB sent). Now the
buffer is emptied at the 1009 and later messages are read and dropped (reading on lets the
client finish its write and read the Close, rather than be reset), and a client that keeps
sending for ``_OVERSIZED_DRAIN_SECONDS`` without closing is let go: the application is told
it disconnected, and the connection ends with it.

**An HTTP/2 stream the client never lets through is given up on.** Over HTTP/2 a response
goes out only as far as the client's flow control windows allow; a client that never opens
them (or stops acknowledging) held the response's writer forever: hypercorn waits for the
window with no time limit, and the TCP-level limit above never fires (nothing is written).
Worse, a WebSocket carried in the connection (RFC 8441) deadlocked it: its application waited
to send, hypercorn's single reader waited for that application to take the next message, so
the window updates, resets, and even the client's going away were never read. The stream
held its place in ``max_streams`` (and its task, and its connection in CLOSE-WAIT) until the
server stopped. Now a stream whose response moves not at all for ``send_timeout`` seconds is
reset (CANCEL), as if the client had reset it: the application is told of the disconnect,
and the rest of the connection goes on. And when the connection itself ends, a stream still
waiting for its window is let go at once (hypercorn left it waiting, for ever, though no
window could open any more).

**An HTTP/2 connection that floods streams is closed, not crashed.** hypercorn keeps each
stream in a priority tree (the ``priority`` library, which holds 1,000 at most) until its
sending task has cleared it. A client that opens and at once resets streams (the "rapid
reset" of CVE-2023-44487), or sends PRIORITY frames for streams it never opens, filled the
tree within one read; the next insert raised, and the connection died with an ERROR
traceback in the log for each such client (and asyncio's "Task exception was never retrieved"
for a request cut off in passing). Such a connection is now closed with GOAWAY
(ENHANCE_YOUR_CALM) and a one-line warning; the streams it had are told of the disconnect.
hypercorn's own ``keep_alive_max_requests`` (1,000 streams a connection) bounds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from h2.stream import StreamState
from hypercorn.asyncio import task_group, tcp_server
from hypercorn.events import Closed
from hypercorn.protocol import h2 as hypercorn_h2
from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import Body, Data, EndBody, EndData, Trailers
from priority import TooManyStreamsError

__all__ = [
    "abort_stalled_writes",
    "close_http2_connections_that_flood_streams",
    "decline_websocket_compression",
    "drop_what_follows_an_oversized_message",
    "end_http2_requests_answered_early",
    "keep_frames_sent_before_accept",
    "mend_application_queues",
    "reset_stalled_http2_streams",
]

_SENT = "_speechgw_sent"
_HELD = "_speechgw_held_bytes"
_OVERSIZED_AT = "_speechgw_oversized_at"
_OVERSIZED_DRAIN_SECONDS = 5.0
"""How long frames sent after an oversized message are read and dropped before the client
is let go (the wait of ``speechgw.protocols._closing`` for a Close, for the same reason)."""
_HELD_BEFORE_PUSHING_BACK = 65536
"""Bytes held for a connection before its upgrade is answered (hypercorn reads 64 KiB at a
time); past them reading it waits for the answer."""
_LOGGER = logging.getLogger(__name__)
_WEBSOCKET_QUEUE = 2
"""WebSocket messages queued per connection ahead of the application (hypercorn: ten)."""


@functools.cache  # once a process: a second call would wrap its own wrapper
def decline_websocket_compression() -> None:
    """Make every hypercorn WebSocket handshake in this process decline all extensions."""
    handshake = ws_stream.Handshake
    original_init = handshake.__init__

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.extensions = None  # as if the client had offered none

    handshake.__init__ = __init__  # type: ignore[method-assign]


@functools.cache  # once a process: a second call would wrap its own wrapper
def mend_application_queues() -> None:
    """Make hypercorn's asyncio connections queue at most ``_WEBSOCKET_QUEUE`` WebSocket
    messages, never wait on a queue nobody will read, and drop events for an application that
    has returned (see the module's docstring)."""
    group = task_group.TaskGroup
    original_spawn_app = group.spawn_app

    @functools.wraps(original_spawn_app)
    async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
        returned = False
        queue: asyncio.Queue[Any] | None = None
        pending: set[asyncio.Future[None]] = set()
        if scope.get("type") == "websocket":
            config = _websocket_config(config)

        async def application(*args: Any) -> None:
            nonlocal returned
            try:
                await app(*args)
            finally:
                returned = True
                while queue is not None and not queue.empty():  # frees a put waiting for room
                    queue.get_nowait()

        put = await original_spawn_app(self, application, config, scope, send)
        queue = getattr(put, "__self__", None)
        if not isinstance(queue, asyncio.Queue):  # a hypercorn that does it otherwise
            return put

        async def put_while_running(event: Any) -> None:
            if returned:
                return
            if queue.full() and event.get("type", "").endswith(".disconnect"):
                # hypercorn sends it from inside the application's own send when a write
                # finds the client gone: waiting there for room that only the application
                # can make would hang it. The last event of all, it may land later.
                task = asyncio.ensure_future(put(event))
                pending.add(task)
                task.add_done_callback(pending.discard)
                return
            await put(event)

        return put_while_running

    group.spawn_app = spawn_app  # type: ignore[method-assign]


@functools.lru_cache(maxsize=4)
def _websocket_config(config: Any) -> Any:
    """``config`` with at most ``_WEBSOCKET_QUEUE`` queued messages (one copy per config)."""
    if config.max_app_queue_size <= _WEBSOCKET_QUEUE:
        return config
    smaller = copy.copy(config)
    smaller.max_app_queue_size = _WEBSOCKET_QUEUE
    return smaller


@functools.cache  # once a process: a second call would wrap its own wrapper
def end_http2_requests_answered_early() -> None:
    """Make hypercorn's HTTP/2 connections reset a request stream whose response has ended
    before the request did, and drop data that still arrives for it (see the module's
    docstring)."""
    protocol = hypercorn_h2.H2Protocol
    handle_events = protocol._handle_events
    send_data = protocol._send_data

    @functools.wraps(handle_events)
    async def _handle_events(self: Any, events: list[Any]) -> None:
        # one event at a time: handling one may end a stream the next one is for
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
                continue
            await handle_events(self, [event])
        await self._flush()  # the acknowledgements of dropped data

    @functools.wraps(send_data)
    async def _send_data(self: Any, stream_id: int) -> None:
        await send_data(self, stream_id)
        if stream_id in self.stream_buffers:
            return  # the response goes on
        stream = self.connection.streams.get(stream_id)
        if stream is not None and stream.state_machine.state is StreamState.HALF_CLOSED_LOCAL:
            # the response is complete and the request is not: ask the client to stop
            with contextlib.suppress(h2.exceptions.ProtocolError):  # the connection is ending
                self.connection.reset_stream(stream_id, ErrorCodes.NO_ERROR)
            await self._flush()

    protocol._handle_events = _handle_events  # type: ignore[method-assign]
    protocol._send_data = _send_data  # type: ignore[method-assign]


@functools.cache  # once a process: a second call would wrap its own wrapper
def abort_stalled_writes() -> None:
    """Make hypercorn's asyncio connections abort when a write (waiting for its turn and for
    the client to read) sees nothing move for their config's ``send_timeout`` seconds
    (``None``: no limit), see the module's docstring. A client that reads slowly but reads
    (a big response over a slow link) is waited for."""
    server = tcp_server.TCPServer
    protocol_send = server.protocol_send

    @functools.wraps(protocol_send)
    async def bounded_protocol_send(self: Any, event: Any) -> None:
        timeout = getattr(self.config, "send_timeout", None)
        if timeout is None:
            await protocol_send(self, event)
            return
        transport = self.writer.transport
        # the buffer changes only as the client reads (directly, or by letting an earlier
        # write finish so that the next one is written): that is progress
        unsent = transport.get_write_buffer_size
        if not await _while_moving(protocol_send(self, event), unsent, timeout):
            if not transport.is_closing():  # once: other writes may be giving up on it too
                _LOGGER.warning(
                    "dropped the connection of %s: it read nothing for %g s",
                    self.writer.get_extra_info("peername"),
                    timeout,
                )
            # the reading task then finds the connection closed and tells the application
            transport.abort()

    server.protocol_send = bounded_protocol_send  # type: ignore[method-assign]


@functools.cache  # once a process: a second call would wrap its own wrapper
def reset_stalled_http2_streams() -> None:
    """Make hypercorn's HTTP/2 connections reset a stream whose response the client lets
    nothing of through for their config's ``send_timeout`` seconds (``None``: no limit), see
    the module's docstring. A stream that moves, however slowly, is waited for."""
    protocol = hypercorn_h2.H2Protocol
    stream_send = protocol.stream_send
    waits_for_the_window = (Body, Data, EndBody, EndData, Trailers)
    pop = hypercorn_h2.StreamBuffer.pop

    @functools.wraps(pop)
    async def counting_pop(self: Any, max_length: int) -> bytes:
        data = await pop(self, max_length)
        setattr(self, _SENT, getattr(self, _SENT, 0) + len(data))
        return data

    @functools.wraps(stream_send)
    async def bounded_stream_send(self: Any, event: Any) -> None:
        timeout = getattr(self.config, "send_timeout", None)
        buffer = self.stream_buffers.get(getattr(event, "stream_id", None))
        if timeout is None or buffer is None or not isinstance(event, waits_for_the_window):
            await stream_send(self, event)
            return
        # the bytes taken from the stream's buffer to be sent: they move only as the client's
        # window lets them out (what is left to send may also grow: pongs, a Close)
        sent = functools.partial(getattr, buffer, _SENT, 0)
        if await _while_moving(stream_send(self, event), sent, timeout):
            return
        stream_id = event.stream_id
        _LOGGER.warning(
            "reset HTTP/2 stream %d of %s: it let nothing through for %g s",
            stream_id,
            self.client,
            timeout,
        )
        with contextlib.suppress(h2.exceptions.ProtocolError):  # the stream or connection ended
            self.connection.reset_stream(stream_id, ErrorCodes.CANCEL)
        await self._flush()
        await buffer.close()  # frees anyone else waiting to add to it
        await self._close_stream(stream_id)  # the application hears of the disconnect
        await self._window_updated(stream_id)  # the sending task then drops the buffer

    handle = protocol.handle

    @functools.wraps(handle)
    async def releasing_handle(self: Any, event: Any) -> None:
        await handle(self, event)
        if isinstance(event, Closed):
            # the connection is gone: no window will open, and hypercorn left every stream
            # still waiting to send waiting (its sending task has ended)
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()

    hypercorn_h2.StreamBuffer.pop = counting_pop  # type: ignore[method-assign]
    protocol.stream_send = bounded_stream_send  # type: ignore[method-assign]
    protocol.handle = releasing_handle  # type: ignore[method-assign]


@functools.cache  # once a process: a second call would wrap its own wrapper
def close_http2_connections_that_flood_streams() -> None:
    """Make hypercorn's HTTP/2 connections end with GOAWAY (ENHANCE_YOUR_CALM) when a client
    leaves more streams in their priority tree than it holds, instead of failing with a
    traceback (see the module's docstring)."""
    protocol = hypercorn_h2.H2Protocol
    handle_events = protocol._handle_events
    create_stream = protocol._create_stream

    @functools.wraps(create_stream)
    async def _create_stream(self: Any, request: Any) -> None:
        try:
            await create_stream(self, request)
        except TooManyStreamsError:
            # made but not started: closing it as a stream would fail (it has no request)
            self.streams.pop(request.stream_id, None)
            self.stream_buffers.pop(request.stream_id, None)
            raise

    @functools.wraps(handle_events)
    async def _handle_events(self: Any, events: list[Any]) -> None:
        try:
            await handle_events(self, events)
        except TooManyStreamsError:  # the rest of its events are not read
            _LOGGER.warning(
                "closed the HTTP/2 connection of %s: it opened, reset or prioritised more "
                "streams at once than are kept",
                self.client,
            )
            with contextlib.suppress(h2.exceptions.ProtocolError):  # already ending
                self.connection.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            await self._flush()
            await self.send(Closed())  # then the reader tells every stream's application

    protocol._create_stream = _create_stream  # type: ignore[method-assign]
    protocol._handle_events = _handle_events  # type: ignore[method-assign]


async def _while_moving(
    sending: Coroutine[Any, Any, None], where: Callable[[], int], timeout: float
) -> bool:
    """Await ``sending`` while ``where()`` (how far the client has taken things) changes at
    least once every ``timeout`` seconds. False, with ``sending`` cancelled, once it has not:
    the client is taking none of it. The first look is a second in (most sends never wait that
    long)."""
    loop = asyncio.get_running_loop()
    deadline = asyncio.timeout(None)
    last = 0

    def look() -> None:
        nonlocal last, watch
        now = where()
        if now == last:
            deadline.reschedule(loop.time())
        else:
            last = now
            watch = loop.call_later(timeout, look)

    def begin() -> None:  # still waiting: note where it stands
        nonlocal last, watch
        last = where()
        watch = loop.call_later(timeout, look)

    watch = loop.call_later(min(1.0, timeout), begin)
    try:
        async with deadline:
            await sending
    except TimeoutError:
        if not deadline.expired():
            raise  # the send's own
        return False
    finally:
        watch.cancel()
    return True


class _HeldBytes:
    """What a client sent on a WebSocket connection before its upgrade was answered."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.answered = False
        self.read = asyncio.Event()
        """Set once the bytes are read as frames (accepted) or dropped (refused)."""


@functools.cache  # once a process: a second call would wrap its own wrapper
def keep_frames_sent_before_accept() -> None:
    """Make hypercorn's WebSocket streams hold the bytes a client sends before the application
    has answered its upgrade, and read them as the first frames once it has accepted (see the
    module's docstring)."""
    stream = ws_stream.WSStream
    handle = stream.handle
    app_send = stream.app_send
    handshake_state = ws_stream.ASGIWebsocketState.HANDSHAKE

    @functools.wraps(handle)
    async def holding_handle(self: Any, event: Any) -> None:
        if self.closed or not isinstance(event, Body | Data):
            await handle(self, event)
            return
        held: _HeldBytes | None = getattr(self, _HELD, None)
        if held is None:
            if self.handshake.accepted:
                await handle(self, event)  # every connection's frames, once all is in order
                return
            if self.state is not handshake_state:
                return  # refused: its answer is out, and the connection ends with it
            held = _HeldBytes()
            setattr(self, _HELD, held)
        if not held.answered:
            held.data += event.data
            if len(held.data) >= _HELD_BEFORE_PUSHING_BACK:
                await held.read.wait()  # no more is read meanwhile: TCP pushes back
            return
        await held.read.wait()  # the held bytes are read first
        if self.handshake.accepted:
            await handle(self, event)

    @functools.wraps(app_send)
    async def answering_app_send(self: Any, message: Any) -> None:
        try:
            await app_send(self, message)
        finally:
            held: _HeldBytes | None = getattr(self, _HELD, None)
            answered = message is None or self.closed or self.state is not handshake_state
            if held is not None and not held.answered and answered:
                held.answered = True
                if self.handshake.accepted and not self.closed:
                    # a task of its own: the application is inside its send() now, and the
                    # held frames may be more than its queue takes before it reads again
                    self.task_group.spawn(_read_held, self, held)
                else:
                    _done_holding(self, held)

    stream.handle = holding_handle  # type: ignore[method-assign]
    stream.app_send = answering_app_send  # type: ignore[method-assign]


async def _read_held(stream: Any, held: _HeldBytes) -> None:
    """Read ``held``'s bytes as ``stream``'s first frames (what arrives meanwhile waits)."""
    try:
        if not stream.closed:
            stream.connection.receive_data(bytes(held.data))
            held.data.clear()
            await stream._handle_events()
    finally:
        _done_holding(stream, held)


def _done_holding(stream: Any, held: _HeldBytes) -> None:
    held.data.clear()
    setattr(stream, _HELD, None)
    held.read.set()


@functools.cache  # once a process: a second call would wrap its own wrapper
def drop_what_follows_an_oversized_message() -> None:
    """Make hypercorn's WebSocket streams empty their message buffer at the Close 1009 for an
    oversized message, drop the messages after it, and let go of a client that sends on
    (see the module's docstring). hypercorn's own reading of events, with those changes."""
    stream = ws_stream.WSStream

    async def bounded_handle_events(self: Any) -> None:
        loop = asyncio.get_running_loop()
        for event in self.connection.events():
            if isinstance(event, ws_stream.Message):
                oversized_at: float | None = getattr(self, _OVERSIZED_AT, None)
                if oversized_at is not None:
                    if loop.time() - oversized_at > _OVERSIZED_DRAIN_SECONDS:
                        # as if the client had closed: the application hears of it, and
                        # the connection ends
                        await self.send(ws_stream.StreamClosed(stream_id=self.stream_id))
                        return
                    continue
                try:
                    self.buffer.extend(event)
                except ws_stream.FrameTooLargeError:
                    self.buffer.clear()
                    setattr(self, _OVERSIZED_AT, loop.time())
                    too_big = ws_stream.CloseConnection(code=ws_stream.CloseReason.MESSAGE_TOO_BIG)
                    await self._send_wsproto_event(too_big)
                    continue
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, ws_stream.Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, ws_stream.CloseConnection):
                if self.connection.state == ws_stream.ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(ws_stream.StreamClosed(stream_id=self.stream_id))

    functools.update_wrapper(bounded_handle_events, stream._handle_events)
    stream._handle_events = bounded_handle_events  # type: ignore[method-assign]
