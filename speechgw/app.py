"""The ASGI application: backends from config, the gateway, every registered protocol, and the
shared HTTP endpoints (``/health``, ``/metrics``)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from . import __version__, silero
from .auth import Keyring
from .backend import Backend
from .config import Config, ServerConfig
from .early_answer import any_method_route, refusal
from .errors import ConfigError, start_failure
from .gateway import Gateway
from .loading import backends_registry, load_app_config, open_store
from .metrics import GatewayMetrics
from .registry import resolve
from .siblings import ProcessPlace, Siblings
from .tuning import check_open_files

_LOGGER = logging.getLogger(__name__)
_WEB = Path(__file__).parent / "web"
"""The page at ``/``: the microphone over the streaming protocol, a file over the batch one."""

__all__ = [
    "build_app",
    "build_backends",
    "build_gateway",
    "build_metrics_app",
    "reload_gateway",
]


def build_backends(
    config: Config, existing: Mapping[str, Backend] | None = None
) -> dict[str, Backend]:
    """One instance per configured backend; one in ``existing`` with the same name, type and
    options is reused (a reload must not load a model twice)."""
    if not config.backends:
        raise ConfigError("backends: no backend is configured")
    backends: dict[str, Backend] = {}
    for b in config.backends:
        cls = resolve(backends_registry(), b.type, "backend type", f"backends.{b.name}.type")
        old = (existing or {}).get(b.name)
        if old is not None and type(old) is cls and old.options == b.options:
            backends[b.name] = old
        else:
            backends[b.name] = cls(b.name, b.options)
    return backends


async def reload_gateway(gateway: Gateway, path: str, env: Mapping[str, str]) -> bool:
    """Re-read ``path`` and apply it to the running gateway; False (with a log line) when the
    new config is invalid, in which case the old one keeps serving.

    Routing, keys, limits, streaming and post-processing change at once for new requests;
    requests in flight finish on what they started with. New or changed backends are started
    before the switch. ``server``, ``store`` and ``metrics`` take effect only on a restart.
    """
    started: list[Backend] = []
    try:
        config = await anyio.to_thread.run_sync(load_app_config, path, env)
        backends = build_backends(config, gateway.backends)
        for backend in backends.values():
            if backend not in gateway.backends.values():
                started.append(backend)
                try:
                    await backend.start()
                except Exception as exc:  # a model that cannot load: as at startup, one line
                    raise ConfigError(start_failure(backend.name, exc)) from exc
        if config.streaming.silero_vad_after_seconds is not None:
            await anyio.to_thread.run_sync(silero.load)  # not on the first stream that listens
    except ConfigError as exc:
        _LOGGER.error("config reload refused, the running config stays: %s", exc)
        for backend in started:  # nothing of the refused config stays loaded
            try:
                await backend.close()
            except Exception:
                _LOGGER.exception("backend %r failed to close", backend.name)
        return False
    for section in ("server", "store", "metrics"):
        if getattr(config, section) != getattr(gateway.config, section):
            _LOGGER.warning("config reload: the %r section changes only on a restart", section)
    if config.limits.max_connections > gateway.config.limits.max_connections:
        check_open_files(config.limits.max_connections)
    gateway.reconfigure(config, backends, Keyring.from_config(config.auth, env, gateway.store))
    _LOGGER.info("config reloaded from %s", path)
    return True


def build_gateway(config: Config, env: Mapping[str, str]) -> Gateway:
    backends = build_backends(config)
    store = open_store(config)
    return Gateway(
        config,
        backends,
        Keyring.from_config(config.auth, env, store),
        GatewayMetrics(config.metrics.max_machine_ids),
        store,
    )


def metrics_endpoint(gateway: Gateway, siblings: Siblings | None = None):  # -> ASGI handler
    """``/metrics``: this process's registry, or with ``siblings`` every process's, summed."""

    async def metrics(request: Request) -> Response:
        if siblings is not None:
            return Response(await siblings.exposition(), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def build_metrics_app(gateway: Gateway, siblings: Siblings | None = None) -> Starlette:
    """``/metrics`` alone, for ``metrics.port``."""
    endpoint = metrics_endpoint(gateway, siblings)
    return Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])


def build_app(
    config: Config, env: Mapping[str, str] | None = None, place: ProcessPlace | None = None
) -> Starlette:
    """The whole server as one ASGI app; models load in its lifespan, before it accepts.
    ``place``: this process's among the processes of ``speechgw serve --processes N``."""
    from speechgw.protocols import PROTOCOLS

    gateway = build_gateway(config, os.environ if env is None else env)
    siblings = None if place is None else Siblings(place, gateway.metrics.registry)

    async def health(request: Request) -> Response:
        # a replica whose store is unreachable can answer nobody (no key check, no ledger
        # row): 503 takes it out of its load balancer until the store is back
        store_up = gateway.store is None or await gateway.store.ping()
        gateway.metrics.store_up.set(1 if store_up else 0)
        status = "loading" if not gateway.ready else "ok" if store_up else "store_unreachable"
        body = {
            "status": status,
            "postprocess_enabled": gateway.postprocessor.configured and config.postprocess.enabled,
            "version": __version__,
        }
        if gateway.store is not None:
            body["store"] = "ok" if store_up else "unreachable"
        body["backends"] = {
            name: {"ready": backend.ready, **backend.info}
            for name, backend in gateway.backends.items()
        }
        if place is not None:  # which of the processes on this port answered
            body["process"] = {"index": place.index, "of": place.count, "pid": os.getpid()}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    metrics = metrics_endpoint(gateway, siblings)

    async def page(request: Request) -> Response:
        return FileResponse(_WEB / "index.html")

    routes: list[BaseRoute] = [
        Route("/", page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=_WEB), name="static"),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *(_wrong_method(path) for path in ("/", "/health", "/metrics")),
    ]
    for name in PROTOCOLS:
        protocol_cls = resolve(PROTOCOLS, name, "protocol", f"protocols.{name}")
        routes.extend(protocol_cls(gateway).routes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Gateway]]:
        await gateway.start()
        try:
            if siblings is not None:
                await siblings.start()
                siblings.place.ready()  # the parent counts this process as serving
            yield {"gateway": gateway}
        finally:
            if siblings is not None:
                await siblings.aclose()
            await gateway.close()

    app = Starlette(
        routes=routes,
        middleware=_cors(config.server),
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.router.default = _not_found(routes)
    app.state.gateway = gateway
    app.state.siblings = siblings
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """starlette's own HTTP errors (the demo page's files: one that is not there, a method
    other than GET) in JSON like every other answer of the server, not its plain text."""
    assert isinstance(exc, HTTPException)
    path = request.url.path[:200]
    if exc.status_code == 405:
        return _get_only(request, path)
    if exc.status_code == 404:
        body = {"error": "not_found", "message": f"no file at '{path}'"}
    else:
        body = {"error": "http_error", "message": f"{path}: {exc.detail}"}
    return refusal(body, exc.status_code, request.scope, headers=dict(exc.headers or {}))


def _get_only(request: Request, path: str) -> Response:
    """The JSON 405 of a path that answers GET (and HEAD) only, where starlette's is plain
    text sent while an upload may still be on its way, and lost to the close that follows
    (:func:`~speechgw.early_answer.refusal`)."""
    message = f"{path} answers GET, not {request.method[:16]}"
    body = {"error": "method_not_allowed", "message": message}
    return refusal(body, 405, request.scope, headers={"Allow": "GET, HEAD"})


def _wrong_method(path: str) -> Route:
    """:func:`_get_only` for every method but GET (and HEAD) at ``path``."""

    async def refuse(request: Request) -> Response:
        return _get_only(request, path)

    return any_method_route(path, refuse)


def _not_found(routes: list[BaseRoute]) -> ASGIApp:
    """What answers a path no route serves: an HTTP 404 whose JSON body names the endpoints
    of its kind. For a WebSocket upgrade, starlette's default (a close before the upgrade)
    reaches the client as a bare 403, which reads like a refused key; for HTTP, its plain "Not
    Found" says nothing of where to go (an OpenAI client whose base URL lacks ``/v1`` posts to
    ``/audio/transcriptions``), and an upload to it was answered before its end and lost to
    the close (:class:`~speechgw.early_answer.EarlyAnswer`)."""
    socket_routes = [r for r in routes if isinstance(r, WebSocketRoute)]
    sockets = ", ".join(r.path for r in socket_routes)
    pages = ", ".join(
        r.path
        for r in routes
        if isinstance(r, Route) and r.include_in_schema and "{" not in r.path and r.path != "/"
    )

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"][:100]
        if scope["type"] == "websocket":
            message = f"no WebSocket endpoint at {path!r}; there are: {sockets}"
            response = JSONResponse({"error": "not_found", "message": message}, status_code=404)
            await WebSocket(scope, receive, send).send_denial_response(response)
            return
        if any(r.path_regex.match(scope["path"]) for r in socket_routes):
            # the path exists, for WebSocket clients: this request came without the upgrade
            # (a plain HTTP client, or a proxy that drops the Upgrade header)
            message = (
                f"{path} is a WebSocket endpoint: connect with a WebSocket client; a proxy "
                "in between must pass the Upgrade and Connection headers on"
            )
            body = {"error": "upgrade_required", "message": message}
            # HTTP/2 forbids the header (its WebSockets come by extended CONNECT instead)
            headers = {} if scope.get("http_version") == "2" else {"Upgrade": "websocket"}
            await refusal(body, 426, scope, headers)(scope, receive, send)
            return
        body = {"error": "not_found", "message": f"no endpoint at {path!r}; there are: {pages}"}
        await refusal(body, 404, scope)(scope, receive, send)

    return not_found


def _cors(server: ServerConfig) -> list[Middleware]:
    """Starlette's CORS middleware for ``server.cors_allow_origins``, if any.

    Any request header may be sent (the OpenAI SDK adds its own ``x-stainless-*`` ones),
    without cookies: keys travel in ``Authorization``. ``Retry-After`` and ``X-Request-Id``
    are exposed, so a browser client can back off as told and quote its request.
    """
    if not server.cors_allow_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            # browsers send scheme and host in lower case; starlette compares exactly
            allow_origins=[origin.lower() for origin in server.cors_allow_origins],
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "X-Request-Id"],
            max_age=600,
        )
    ]
