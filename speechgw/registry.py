"""Lazy ``name -> "module:attribute"`` registries, resolved on first use.

Registries are plain dicts of import strings (as uvicorn's ``WS_PROTOCOLS``), so that adding a
backend or protocol is one new module and one line, and so that a backend whose heavy library is
not installed costs nothing until a config names it. A name that is not registered is treated as
a ``module:attribute`` path, which lets a deployment plug in its own class.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError

__all__ = ["resolve"]


def resolve(registry: dict[str, str], name: str, what: str, path: str) -> Any:
    """Import the object that ``name`` stands for in ``registry``.

    Raises:
        ConfigError: unknown name, or the module or attribute cannot be imported; the message
            carries the config key ``path`` and the registered names.
    """
    target = registry.get(name, name)
    module_name, sep, attr = target.partition(":")
    if not sep:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"{path}: unknown {what} {name!r} (known: {known}, or 'module:Class')")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{path}: cannot load {what} {name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(
            f'{path}: attribute "{attr}" not found in module "{module_name}"'
        ) from None
