"""Running the app on hypercorn, with the config's listener, TLS and limits."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette

from ._hypercorn_compat import (
    abort_stalled_writes,
    close_http2_connections_that_flood_streams,
    decline_websocket_compression,
    drop_what_follows_an_oversized_message,
    end_http2_requests_answered_early,
    keep_frames_sent_before_accept,
    mend_application_queues,
    reset_stalled_http2_streams,
)
from ._wsproto_compat import unmask_with_numpy
from .config import Config
from .errors import ConfigError
from .tuning import limit_blas_threads, raise_open_files_limit, retain_freed_memory

__all__ = [
    "CannotListen",
    "bind",
    "bind_shared",
    "event_loop_factory",
    "hypercorn_config",
    "run",
    "serve_app",
]

_LOGGER = logging.getLogger(__name__)


def event_loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the server's event loop: uvloop's for ``uvloop`` (and for ``auto`` where
    it is installed), else asyncio's. Every message of every connection passes through the
    loop, so its own cost per event counts: uvloop (libuv, in C) took the GIL time of a
    real-time stream from 4.1 to 3.2 ms per second of audio (medians; BENCHMARKS.md)."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("server.event_loop is uvloop, but uvloop is not installed") from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class _HypercornConfig(HypercornConfig):
    """hypercorn's settings, with TLS that sends no TLS 1.3 session tickets.

    OpenSSL sends them right after the handshake, while a client may already be writing its
    request. A client that reads in one thread while it writes in another (``websockets``'
    sync client does; the two threads then share one OpenSSL connection, which OpenSSL does
    not allow) can lose that request when its reader takes in a ticket at the same moment: the
    server never sees it, and the client gets no answer (``bench/tls_ticket_race.py``: 5 and
    34 of 600 requests lost with tickets in two runs, none of 600 without; found as a flaky
    wss:// test). Without tickets a client cannot resume a TLS session; a gateway's
    connections are few and long, so each paying a full handshake costs little.
    """

    send_timeout: float | None = None
    """How long a write may wait with the client reading none of it (``_hypercorn_compat``)."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        if context is not None:
            context.num_tickets = 0
        return context


class CannotListen(Exception):
    """A listening socket cannot be bound: its port is taken, or not this user's to take."""


def bind(host: str, port: int, shared: bool = False) -> socket.socket:
    """A socket bound to ``host``:``port`` with hypercorn's options, made before the models
    load, so that a taken port stops a start at once and in one line (:class:`CannotListen`),
    not after the models have loaded and with hypercorn's traceback.

    ``shared``: with ``SO_REUSEPORT``, for the processes of ``--processes``, each of which binds
    the port so (:mod:`speechgw.processes`); the kernel then deals the connections out among
    them by their addresses, rather than to whichever accepts first (a burst of streams all to
    one process, which takes every connection waiting when it wakes)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # EADDRINUSE; EACCES below port 1024; EADDRNOTAVAIL
        sock.close()
        reason = exc.strerror or exc
        raise CannotListen(f"cannot listen on {_address(host, port)}: {reason}") from None
    sock.setblocking(False)
    return sock


def bind_shared(host: str, port: int) -> socket.socket:
    """:func:`bind` with ``shared``, for the parent of ``--processes``, which holds the port
    while its processes serve it. First bound alone and let go: a port that another server's
    processes share (``SO_REUSEPORT``, the same user) would let this one join them
    silently, and two gateways would take turns answering each other's clients."""
    if port != 0:
        bind(host, port).close()  # CannotListen if anything holds it
    return bind(host, port, shared=True)


def _address(host: str, port: int) -> str:
    """``host:port`` as hypercorn binds it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(config: Config, sock: socket.socket | None = None) -> HypercornConfig:
    """hypercorn's settings from ours. ``sock``: an already bound socket to serve on (tests and
    benchmarks bind port 0 themselves, so that the port is known before the server starts).
    It is detached: hypercorn's socket object for its descriptor closes it when the server
    stops, and ``sock`` must not close that number again (by then it may be another file's)."""
    hc = _HypercornConfig()
    host, port = config.server.host, config.server.port
    if sock is not None:
        hc.bind = [f"fd://{sock.detach()}"]
    else:
        hc.bind = [_address(host, port)]
    hc.websocket_max_message_size = config.limits.max_frame_bytes
    hc.send_timeout = config.limits.send_timeout_seconds
    hc.graceful_timeout = config.server.shutdown_grace_seconds
    hc.keep_alive_timeout = config.server.keep_alive_seconds
    hc.accesslog = None  # the gateway writes its own access line per request
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our handlers, once
    if config.server.certfile:
        hc.certfile = config.server.certfile
        hc.keyfile = config.server.keyfile
        # a client that stalls in its TLS handshake is one that stopped sending (hypercorn: 60 s)
        hc.ssl_handshake_timeout = config.limits.receive_timeout_seconds
    return hc


async def serve_app(
    app: Starlette,
    config: Config,
    shutdown_trigger: Callable[[], Awaitable[None]],
    sock: socket.socket | None = None,
    metrics_sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns, on ``sock`` (and ``/metrics`` on
    ``metrics_sock``) where given, else on the config's addresses."""
    if not config.server.websocket_compression:
        decline_websocket_compression()
    unmask_with_numpy()
    mend_application_queues()
    end_http2_requests_answered_early()
    close_http2_connections_that_flood_streams()
    abort_stalled_writes()
    reset_stalled_http2_streams()
    keep_frames_sent_before_accept()
    drop_what_follows_an_oversized_message()

    async def begin_shutdown() -> None:
        await shutdown_trigger()
        # hypercorn now stops accepting and waits up to its grace period for connections;
        # open streams are told to flush and close instead of being cut off at its end
        app.state.gateway.drain(config.server.shutdown_grace_seconds)

    main = serve(app, hypercorn_config(config, sock), shutdown_trigger=begin_shutdown)  # type: ignore[arg-type]
    if config.metrics.port is None:
        await main
        return
    from .app import build_metrics_app

    metrics_config = hypercorn_config(config, metrics_sock)
    if metrics_sock is None:
        metrics_config.bind = [_address(config.server.host, config.metrics.port)]
    metrics_app = build_metrics_app(app.state.gateway, app.state.siblings)
    await asyncio.gather(
        main,
        serve(metrics_app, metrics_config, shutdown_trigger=shutdown_trigger),  # type: ignore[arg-type]
    )


async def _serve_until_signalled(
    app: Starlette, config: Config, path: str | None, sockets: list[socket.socket]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        if path is None:
            _LOGGER.warning("SIGHUP: no config file to reload (running on the embedded default)")
            return
        from .app import reload_gateway

        task = loop.create_task(reload_gateway(app.state.gateway, path, os.environ))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await serve_app(app, config, stop.wait, *sockets)


def run(
    app: Starlette,
    config: Config,
    path: str | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully; SIGHUP reloads ``path``.
    ``sockets``: the server's and the metrics' (:func:`bind`), when bound beforehand."""
    if config.server.retain_freed_memory_mib is not None:
        retain_freed_memory(config.server.retain_freed_memory_mib)
    if config.server.blas_threads is not None:
        limit_blas_threads(config.server.blas_threads)
    raise_open_files_limit(config.limits.max_connections)
    factory = loop_factory or event_loop_factory(config.server.event_loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_until_signalled(app, config, path, sockets or []))
