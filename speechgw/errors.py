"""The gateway's error hierarchy.

Every error a client can see is a :class:`SpeechGWError` subclass with one stable fact,
``error``: the code from CONTRACT.md (``invalid_audio``, ``unauthorized``, ...). The core raises
these and knows nothing of how they travel; each protocol adapter renders them in its own terms
(WebSocket close codes, HTTP statuses, the streaming protocol's message texts).

    SpeechGWError
    ├── Unauthorized            unauthorized
    ├── InvalidRequest          invalid_request
    ├── UnsupportedLanguage     unsupported_language
    ├── UnsupportedTask         unsupported_task
    ├── InvalidAudio            invalid_audio
    ├── AudioTooLong            audio_too_long
    ├── ClientTimeout           timeout
    ├── RetryLater              (+ retry_after)
    │   ├── ServerBusy          server_busy
    │   └── RateLimited         rate_limited
    ├── BackendUnavailable      backend_unavailable
    └── InternalError           internal_error

:class:`ClientGone` is not a client-visible error: an adapter raises it when its client left,
so that the request is logged as abandoned and nothing is sent.
"""

from __future__ import annotations

from typing import Self

__all__ = [
    "AudioTooLong",
    "BackendUnavailable",
    "ClientGone",
    "ClientTimeout",
    "ConfigError",
    "InternalError",
    "InvalidAudio",
    "InvalidRequest",
    "RateLimited",
    "RetryLater",
    "ServerBusy",
    "ShuttingDown",
    "SpeechGWError",
    "StartupError",
    "Unauthorized",
    "UnsupportedLanguage",
    "UnsupportedTask",
    "start_failure",
]


class SpeechGWError(Exception):
    """An error a client is told about, with its stable code."""

    error: str = "internal_error"
    request_id: str | None = None
    """The request it ended, where it ended one (the id its access-log line and any ledger row
    carry), so that the client can be told it: set by the gateway."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        """The request's field the error is about, where there is one (``model``,
        ``language``, ``word_timestamps``...): OpenAI's errors name it (``param``)."""


class Unauthorized(SpeechGWError):
    error = "unauthorized"


class InvalidRequest(SpeechGWError):
    error = "invalid_request"


class UnsupportedLanguage(SpeechGWError):
    error = "unsupported_language"


class UnsupportedTask(SpeechGWError):
    error = "unsupported_task"


class InvalidAudio(SpeechGWError):
    error = "invalid_audio"


class AudioTooLong(SpeechGWError):
    error = "audio_too_long"


class ClientTimeout(SpeechGWError):
    error = "timeout"


class RetryLater(SpeechGWError):
    """Refused for now; ``retry_after`` (whole seconds) tells the client when to try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def retry_in(cls, reason: str, seconds: int) -> Self:
        """``reason``, with when to come back said in the message too (clients that show
        only the message still tell their user when to retry)."""
        return cls(f"{reason}; retry in {seconds} s", seconds)


class ServerBusy(RetryLater):
    """The server is at a capacity limit."""

    error = "server_busy"


class ShuttingDown(ServerBusy):
    """The server is shutting down and its grace ran out for this work (try another replica)."""


class RateLimited(RetryLater):
    """The API key has used up its request rate."""

    error = "rate_limited"


class BackendUnavailable(SpeechGWError):
    error = "backend_unavailable"


class InternalError(SpeechGWError):
    error = "internal_error"


class ClientGone(Exception):
    """The client closed the connection before its answer: nothing more can be sent."""


class ConfigError(Exception):
    """A configuration problem, stated with the key path, the value and the remedy.

    Not a :class:`SpeechGWError`: it never reaches a client, it stops the server from starting.
    """


class StartupError(Exception):
    """A backend could not start (a model that cannot be found or loaded, an unusable device):
    the server stops with this one line instead of a traceback from inside its lifespan."""


def start_failure(backend: str, exc: BaseException) -> str:
    """``backend 'NAME' could not start: REASON``, the reason on one line: how startup and a
    config reload say that a backend failed to start (a model that cannot be loaded)."""
    reason = " ".join(str(exc).split())[:500] or repr(exc)
    return f"backend {backend!r} could not start: {reason}"
