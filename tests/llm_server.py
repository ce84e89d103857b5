"""A local OpenAI-compatible chat-completions server for the post-processing tests.

The ``model`` named in a request picks its behaviour: ``upper`` answers the user text in upper
case, ``http500`` fails, ``slow`` answers after 3 s, ``garbage`` sends malformed JSON, ``deep``
JSON nested deeper than Python's parser goes, ``empty`` sends no choices, ``cut`` closes the
connection a few bytes into its promised body, ``not-http`` answers in no HTTP, ``drip`` sends its
headers and then a byte every 0.2 s until the caller hangs up, and ``endless`` streams bytes
as fast as the caller reads them until it hangs up. As reasoning models answer: ``thinking``
(upper case after a ``<think>`` block), ``template-thinking`` (the block's opening tag left in
the prompt), ``unfinished-thinking`` (cut off in its reasoning); ``parts`` answers in content
parts. Every request body is kept for the test
to inspect; ``hung_up`` is set when a caller hangs up on a ``drip`` or ``endless`` answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _LLMServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        model = body["model"]
        if model == "http500":
            self._send(500, b'{"error": "overloaded"}')
        elif model == "garbage":
            self._send(200, b'{"choices": [{"mess')
        elif model == "deep":
            self._send(200, b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        elif model == "empty":
            self._send(200, b'{"choices": []}')
        elif model == "cut":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"choices": ')
            self.close_connection = True
        elif model == "not-http":
            self.wfile.write(b"SPEAK FRIEND AND ENTER\r\n\r\n")
            self.close_connection = True
        elif model in ("drip", "endless"):
            self._send_on(b" " if model == "drip" else b" " * 65536, 0.2 if model == "drip" else 0)
        else:
            if model == "slow":
                time.sleep(3)
            text: Any = body["messages"][-1]["content"].upper()
            if model == "thinking":
                text = f"<think>\nThe user wants {text.lower()!r} fixed.\n</think>\n\n{text}"
            elif model == "template-thinking":  # the template opened the block in the prompt
                text = f"Okay, upper case it is.\n</think>\n\n{text}"
            elif model == "parts":
                text = [{"type": "text", "text": text[:5]}, {"type": "text", "text": text[5:]}]
            elif model == "unfinished-thinking":
                text = "<think>\nLet me consider every word in tu"
            reply = {"choices": [{"message": {"role": "assistant", "content": text}}]}
            self._send(200, json.dumps(reply).encode())

    def _send(self, status: int, payload: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway gave up waiting (the timeout tests): nobody reads the answer

    def _send_on(self, piece: bytes, pause: float) -> None:
        """A 200 whose body never ends (whitespace, which JSON would allow before a value)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(1 << 40))
        self.end_headers()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            self.server.hung_up.set()


class _LLMServer(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]
    hung_up: threading.Event


@contextmanager
def llm_server() -> Iterator[_LLMServer]:
    server = _LLMServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.hung_up = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def base_url(server: _LLMServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"
