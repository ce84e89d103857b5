"""A config file as the server and the command line read it: validated against each backend
type's options, with the embedded default backends where it names none, and the store it
configures.

Apart from the application (:mod:`speechgw.app`) so that the command line's key, usage and
check commands start in a fraction of a second: they import the backends' option classes, not
the gateway, its streams and SciPy (0.8 s of imports).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .config import Config, load_config, load_config_file
from .registry import resolve
from .store import SQLiteStore, Store

__all__ = [
    "backend_options",
    "backends_registry",
    "default_config",
    "load_app_config",
    "open_store",
]


def backends_registry() -> dict[str, str]:
    from speechgw.backends import BACKENDS

    return BACKENDS


def backend_options(kind: str, path: str) -> type:
    """The options dataclass of backend type ``kind`` (for :func:`load_config`)."""
    return resolve(backends_registry(), kind, "backend type", path).Options


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """The embedded default: the bundled multilingual Whisper model on CPU, all defaults."""
    from speechgw.backends import DEFAULT_BACKENDS

    first = next(iter(DEFAULT_BACKENDS))
    return load_config(
        {"backends": DEFAULT_BACKENDS, "routing": [{"backend": first}]}, env, backend_options
    )


def load_app_config(path: str | None, env: Mapping[str, str] | None = None) -> Config:
    """The config ``path`` (or the embedded default when None), validated; a file that names
    no backend gets the embedded default backends. The one loader for start and reload."""
    if path is None:
        return default_config(env)
    config = load_config_file(path, env, backend_options)
    if config.backends:
        return config
    defaults = default_config(env)
    return dataclasses.replace(config, backends=defaults.backends, routing=defaults.routing)


def open_store(config: Config) -> Store | None:
    """The configured key and usage store: PostgreSQL when ``store.url`` is set, else the
    SQLite file ``store.path``, or None when that is null."""
    store = config.store
    if store.url is not None:
        from .postgres import PostgresStore

        return PostgresStore(store.url, store.pool_size, store.timeout_seconds)
    if store.path is None:
        return None
    return SQLiteStore(store.path, store.synchronous)
