"""The gateway's error hierarchy.

Every error a client can see is a :class:`SpeechGWError` subclass that carries two stable facts:
``error``, the wire code from CONTRACT.md (``invalid_audio``, ``unauthorized``, ...), and
``close_code``, the WebSocket close code that tells a client why the connection ended. Protocol
adapters map these onto their own wire shapes; nothing else decides them.

    SpeechGWError
    ├── Unauthorized            unauthorized            1008
    ├── InvalidRequest          invalid_request         1008
    ├── UnsupportedLanguage     unsupported_language    1008
    ├── UnsupportedTask         unsupported_task        1008
    ├── InvalidAudio            invalid_audio           1008
    ├── AudioTooLong            audio_too_long          1009
    ├── ClientTimeout           timeout                 1008
    ├── RetryLater                                      1013  (+ retry_after)
    │   ├── ServerBusy          server_busy
    │   └── RateLimited         rate_limited
    ├── BackendUnavailable      backend_unavailable     1013
    └── InternalError           internal_error          1011
"""

from __future__ import annotations

__all__ = [
    "AudioTooLong",
    "BackendUnavailable",
    "ClientTimeout",
    "ConfigError",
    "InternalError",
    "InvalidAudio",
    "InvalidRequest",
    "RateLimited",
    "RetryLater",
    "ServerBusy",
    "SpeechGWError",
    "Unauthorized",
    "UnsupportedLanguage",
    "UnsupportedTask",
]

WS_1000_NORMAL = 1000
WS_1008_POLICY_VIOLATION = 1008
WS_1009_MESSAGE_TOO_BIG = 1009
WS_1011_INTERNAL_ERROR = 1011
WS_1013_TRY_AGAIN_LATER = 1013


class SpeechGWError(Exception):
    """An error with a stable wire code and the close code that goes with it."""

    error: str = "internal_error"
    close_code: int = WS_1011_INTERNAL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(SpeechGWError):
    error = "unauthorized"
    close_code = WS_1008_POLICY_VIOLATION


class InvalidRequest(SpeechGWError):
    error = "invalid_request"
    close_code = WS_1008_POLICY_VIOLATION


class UnsupportedLanguage(SpeechGWError):
    error = "unsupported_language"
    close_code = WS_1008_POLICY_VIOLATION


class UnsupportedTask(SpeechGWError):
    error = "unsupported_task"
    close_code = WS_1008_POLICY_VIOLATION


class InvalidAudio(SpeechGWError):
    error = "invalid_audio"
    close_code = WS_1008_POLICY_VIOLATION


class AudioTooLong(SpeechGWError):
    error = "audio_too_long"
    close_code = WS_1009_MESSAGE_TOO_BIG


class ClientTimeout(SpeechGWError):
    error = "timeout"
    close_code = WS_1008_POLICY_VIOLATION


class RetryLater(SpeechGWError):
    """Refused for now; ``retry_after`` (whole seconds) tells the client when to try again."""

    close_code = WS_1013_TRY_AGAIN_LATER
    http_status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerBusy(RetryLater):
    """The server is at a capacity limit."""

    error = "server_busy"


class RateLimited(RetryLater):
    """The API key has used up its request rate."""

    error = "rate_limited"
    http_status = 429


class BackendUnavailable(SpeechGWError):
    error = "backend_unavailable"
    close_code = WS_1013_TRY_AGAIN_LATER


class InternalError(SpeechGWError):
    error = "internal_error"
    close_code = WS_1011_INTERNAL_ERROR


class ConfigError(Exception):
    """A configuration problem, stated with the key path, the value and the remedy.

    Not a :class:`SpeechGWError`: it never reaches a client, it stops the server from starting.
    """
