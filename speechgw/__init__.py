"""speechgw: a speech recognition gateway with a batch and a streaming WebSocket protocol."""

__all__ = ["__version__"]

__version__ = "0.1.0"
