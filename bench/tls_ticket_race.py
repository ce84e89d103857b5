#!/usr/bin/env python3
"""Requests a threaded TLS client loses when the server sends TLS 1.3 session tickets.

A client that reads in one thread while it writes in another (``websockets``' sync client
starts its reader right after the handshake) drives one OpenSSL connection from two threads.
When a session ticket from the server arrives while the first request is being written, the
request can be lost: the server never sees it. This asks N requests of a minimal asyncio TLS
server that answers each, once with OpenSSL's default of two tickets and once with none (what
``speechgw serve`` sends), and counts the requests left without an answer.

    python bench/tls_ticket_race.py [--requests 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import tempfile
import threading
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path for the tests' helpers)

from tests.certificates import self_signed


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
        writer.write(b"ok")
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass  # the request never came: the client counts it
    writer.close()


def _ask(port: int, context: ssl.SSLContext, requests: int) -> int:
    """Requests without an answer, each on a new connection with a reader thread."""
    lost = 0
    for _ in range(requests):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            answer: list[bytes] = []
            reader = threading.Thread(target=lambda t=tls, a=answer: a.append(t.recv(2)))
            reader.start()
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reader.join(3)
            lost += answer != [b"ok"]
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_RDWR)
            reader.join()
    return lost


async def _measure(cert: Path, key: Path, tickets: int, requests: int) -> int:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server_context.num_tickets = tickets
    server = await asyncio.start_server(_answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context(cafile=str(cert))
    try:
        return await asyncio.to_thread(_ask, port, client_context, requests)
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cert, key = self_signed(Path(folder))
        totals = {2: 0, 0: 0}
        for _ in range(args.rounds):
            for tickets in totals:
                totals[tickets] += asyncio.run(_measure(cert, key, tickets, args.requests))
    asked = args.requests * args.rounds
    for tickets, lost in totals.items():
        print(f"session tickets {tickets}: {lost} of {asked} requests lost")


if __name__ == "__main__":
    main()
