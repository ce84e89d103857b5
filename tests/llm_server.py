"""A local OpenAI-compatible chat-completions server for the post-processing tests.

The ``model`` named in a request picks its behaviour: ``upper`` answers the user text in upper
case, ``http500`` fails, ``slow`` answers after 3 s, ``garbage`` sends malformed JSON, ``deep``
JSON nested deeper than Python's parser goes, and ``empty`` sends no choices. Every request
body is kept for the test to inspect.
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
        else:
            if model == "slow":
                time.sleep(3)
            text = body["messages"][-1]["content"].upper()
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


class _LLMServer(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]


@contextmanager
def llm_server() -> Iterator[_LLMServer]:
    server = _LLMServer(("127.0.0.1", 0), _Handler)
    server.requests = []
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
