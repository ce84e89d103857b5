"""Answering an HTTP request before its body has arrived, without losing the answer.

A refusal can often be made from a request's head (a wrong key, a Content-Length over the
limit, a path nothing serves), while the client is still sending its upload; clients send the
whole body before they read the answer. Closing the connection then makes the client's next
write fail (EPIPE, a reset), and a client may report that instead of the answer it was sent:
Node's fetch, the official ``openai`` package's, says "Connection error" for a 401. hypercorn
closes an HTTP/1.1 connection the moment a response ends while its request has not, so
reading the rest after the response (a background task) is too late.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import Receive, Scope, Send

__all__ = ["DISCARD_SECONDS", "EarlyAnswer", "any_method_route", "drop_body", "refusal"]


class _AnyMethod:
    """A request-response endpoint as an ASGI app: starlette gives a route of an ASGI app
    every method, where a route of a function takes the methods it lists (``GET`` when it
    lists none), and any other method met starlette's plain-text 405."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self._app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def any_method_route(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    """A route at ``path`` for every method, whatever its name (``PROPFIND`` or ``BREW`` as
    well as ``DELETE``), listed after the routes of the methods a path serves: the JSON answer
    to a method or a path that is not served."""
    return Route(path, _AnyMethod(endpoint), include_in_schema=False)


DISCARD_SECONDS = 2.0
"""How long the rest of an unwanted body is read for, at most, before the connection closes
(nginx's lingering close waits likewise)."""


async def drop_body(receive: Receive) -> None:
    """Read and drop (never store) the rest of a request body nobody wants, for at most
    :data:`DISCARD_SECONDS`: until its end, or the client's disconnect."""
    with anyio.move_on_after(DISCARD_SECONDS):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return


class EarlyAnswer(JSONResponse):
    """A JSON answer given before the request's body was read to its end.

    Over HTTP/1.1 the whole answer is sent at once, but ended only after :func:`drop_body`,
    and then the connection closes (``Connection: close``). Over HTTP/2 it ends at once: the
    stream is then reset with NO_ERROR, which tells the client to stop sending
    (``speechgw._hypercorn_compat.end_http2_requests_answered_early``).
    """

    def __init__(self, body: Any, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(
            body, status_code=status, headers={**(headers or {}), "Connection": "close"}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("http_version") == "2":
            await super().__call__(scope, receive, send)
            return
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        await drop_body(receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def refusal(
    body: Any, status: int, request: Scope, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON refusal of ``request`` from its head alone: an :class:`EarlyAnswer` where the
    head announces a body (a Content-Length above 0, or chunks), else a plain answer that
    leaves the connection open for the next request."""
    head = Headers(scope=request)
    if head.get("content-length", "0") != "0" or "transfer-encoding" in head:
        return EarlyAnswer(body, status, headers)
    return JSONResponse(body, status_code=status, headers=headers)
