"""The ASGI application: backends from config, the gateway, every registered protocol, and the
shared HTTP endpoints (``/health``, ``/metrics``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .auth import Keyring
from .backend import Backend
from .config import Config, load_config
from .errors import ConfigError
from .gateway import Gateway
from .metrics import GatewayMetrics
from .registry import resolve
from .store import SQLiteStore, Store

__all__ = [
    "backend_options",
    "build_app",
    "build_gateway",
    "build_metrics_app",
    "default_config",
    "open_store",
]


def _backends_registry() -> dict[str, str]:
    from speechgw.backends import BACKENDS

    return BACKENDS


def backend_options(kind: str, path: str) -> type:
    """The options dataclass of backend type ``kind`` (for :func:`load_config`)."""
    return resolve(_backends_registry(), kind, "backend type", path).Options


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """The embedded default: the bundled multilingual Whisper model on CPU, all defaults."""
    from speechgw.backends import DEFAULT_BACKENDS

    first = next(iter(DEFAULT_BACKENDS))
    return load_config(
        {"backends": DEFAULT_BACKENDS, "routing": [{"backend": first}]}, env, backend_options
    )


def build_gateway(config: Config, env: Mapping[str, str]) -> Gateway:
    if not config.backends:
        raise ConfigError("backends: no backend is configured")
    backends: dict[str, Backend] = {}
    for b in config.backends:
        cls = resolve(_backends_registry(), b.type, "backend type", f"backends.{b.name}.type")
        backends[b.name] = cls(b.name, b.options)
    store = open_store(config)
    return Gateway(
        config,
        backends,
        Keyring.from_config(config.auth, env, store),
        GatewayMetrics(config.metrics.max_machine_ids),
        store,
    )


def open_store(config: Config) -> Store | None:
    """The configured key and usage store, or None when ``store.path`` is null."""
    if config.store.path is None:
        return None
    return SQLiteStore(config.store.path, config.store.synchronous)


def metrics_endpoint(gateway: Gateway):  # -> an ASGI request handler
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def build_metrics_app(gateway: Gateway) -> Starlette:
    """``/metrics`` alone, for ``metrics.port``."""
    return Starlette(routes=[Route("/metrics", metrics_endpoint(gateway), methods=["GET"])])


def build_app(config: Config, env: Mapping[str, str] | None = None) -> Starlette:
    """The whole server as one ASGI app; models load in its lifespan, before it accepts."""
    from speechgw.protocols import PROTOCOLS

    gateway = build_gateway(config, os.environ if env is None else env)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok" if gateway.ready else "loading",
                "postprocess_enabled": gateway.postprocessor.configured
                and config.postprocess.enabled,
            },
            status_code=200 if gateway.ready else 503,
        )

    metrics = metrics_endpoint(gateway)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    for name in PROTOCOLS:
        protocol_cls = resolve(PROTOCOLS, name, "protocol", f"protocols.{name}")
        routes.extend(protocol_cls(gateway).routes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Gateway]]:
        await gateway.start()
        try:
            yield {"gateway": gateway}
        finally:
            await gateway.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
