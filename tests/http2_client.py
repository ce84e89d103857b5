"""A cleartext HTTP/2 client (prior knowledge, RFC 9113 3.3) on the ``h2`` library that
hypercorn itself uses, for the tests that need to hold HTTP/2's flow control in their own
hands: how much of the server's response they let through, and when. It carries plain
requests and WebSockets (RFC 8441: what a browser does inside an HTTP/2 connection)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence

import h2.config
import h2.connection
import h2.events
import h2.settings
from wsproto.frame_protocol import FrameProtocol

Headers = Sequence[tuple[str, str]]


class Http2Connection:
    """One HTTP/2 connection to ``127.0.0.1:port``. ``window``: the initial flow control
    window of each stream the client receives on (0: the server may send it no data until the
    client opens it with :meth:`let_through`)."""

    def __init__(self, port: int, window: int = 65535) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.h2 = Http2Connection.offline(window)
        self.events: list[h2.events.Event] = []
        self.received: dict[int, bytearray] = {}
        self.closed = False
        self._flush()
        self.wait_for(lambda: self._seen(h2.events.RemoteSettingsChanged, None))

    @staticmethod
    def offline(window: int = 65535) -> h2.connection.H2Connection:
        """A client side of the protocol with no socket (its preface and SETTINGS made):
        frames to write by hand. ``window`` as for the connection."""
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        connection.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        connection.initiate_connection()
        return connection

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Http2Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, headers: Headers = (), body: bytes = b"") -> int:
        """Send a request (its body as far as the server's windows allow at once) and return
        its stream id."""
        stream_id = self.h2.get_next_available_stream_id()
        pseudo = [(":method", method), (":path", path), (":scheme", "http")]
        self.h2.send_headers(stream_id, [*pseudo, (":authority", "127.0.0.1"), *headers])
        self.send(stream_id, body, end=True)
        return stream_id

    def websocket(self, path: str) -> int:
        """Open a WebSocket inside the connection (extended CONNECT) and return its stream id,
        once the server has accepted it."""
        stream_id = self.h2.get_next_available_stream_id()
        headers = [(":method", "CONNECT"), (":protocol", "websocket"), (":path", path)]
        headers += [(":scheme", "http"), (":authority", "127.0.0.1")]
        self.h2.send_headers(stream_id, [*headers, ("sec-websocket-version", "13")])
        self._flush()
        self.wait_for(lambda: self.status(stream_id) is not None)
        assert self.status(stream_id) == "200", self.events
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False, seconds: float = 10) -> bool:
        """Send ``data`` on a stream as the server's windows let it through; False if they stay
        shut for ``seconds``."""
        deadline = time.monotonic() + seconds
        while data:
            room = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if room <= 0:
                self.read(0.05)
                if self.reset(stream_id) is not None or time.monotonic() > deadline:
                    return False
                continue
            self.h2.send_data(stream_id, data[:room])
            data = data[room:]
            self._flush()
        if end:
            self.h2.end_stream(stream_id)
            self._flush()
        return True

    def let_through(self, stream_id: int, size: int) -> None:
        """Open the stream's window (and the connection's) by ``size`` bytes."""
        self.h2.increment_flow_control_window(size, stream_id)
        self.h2.increment_flow_control_window(size)
        self._flush()

    def open_windows(self, size: int = 65535) -> None:
        """From now on every stream starts with a window of ``size`` bytes."""
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: size})
        self._flush()

    def read(self, seconds: float) -> None:
        """Take in what the server sends for up to ``seconds`` (or until it closes)."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
                if event.flow_controlled_length:
                    # the connection's window only: each stream's is the test's to open
                    self.h2.increment_flow_control_window(event.flow_controlled_length)
        try:
            self._flush()  # an answer to what came in: a SETTINGS or PING acknowledgement
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True  # the server sent its last frames and closed: a client sees that

    def wait_for(self, condition: Callable[[], bool], seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert not self.closed, "the server closed the connection"
            assert time.monotonic() < deadline, f"not within {seconds} s: {self.events[-5:]}"
            self.read(0.1)

    def status(self, stream_id: int) -> str | None:
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                return dict(event.headers)[":status"]
        return None

    def ended(self, stream_id: int) -> bool:
        return self._seen(h2.events.StreamEnded, stream_id)

    def reset(self, stream_id: int) -> int | None:
        """The error code of the server's reset of the stream, if it has reset it."""
        for event in self.events:
            if isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                return event.error_code
        return None

    def goaway(self) -> int | None:
        """The error code of the server's GOAWAY, if it has sent one."""
        for event in self.events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return event.error_code
        return None

    def send_pending(self) -> None:
        """Send the frames made on :attr:`h2` directly (as one write)."""
        self._flush()

    def _seen(self, kind: type, stream_id: int | None) -> bool:
        return any(
            isinstance(e, kind) and getattr(e, "stream_id", None) == stream_id for e in self.events
        )

    def _flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())


def websocket_frame(text: str) -> bytes:
    """One masked text frame, as a client sends it."""
    return FrameProtocol(client=True, extensions=[]).send_data(text)
