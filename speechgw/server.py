"""Running the app on hypercorn, with the config's listener, TLS and limits."""

from __future__ import annotations

import asyncio
import logging
import signal

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette

from ._hypercorn_compat import decline_websocket_compression
from .config import Config

__all__ = ["hypercorn_config", "run"]

_LOGGER = logging.getLogger(__name__)


def hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{config.server.host}]:{config.server.port}" if ":" in config.server.host
               else f"{config.server.host}:{config.server.port}"]
    hc.websocket_max_message_size = config.limits.max_frame_bytes
    hc.graceful_timeout = config.server.shutdown_grace_seconds
    hc.accesslog = None  # the gateway writes its own access line per request
    if config.server.certfile:
        hc.certfile = config.server.certfile
        hc.keyfile = config.server.keyfile
    return hc


async def _serve(app: Starlette, config: Config) -> None:
    if not config.server.websocket_compression:
        decline_websocket_compression()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, hypercorn_config(config), shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def run(app: Starlette, config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    asyncio.run(_serve(app, config))
