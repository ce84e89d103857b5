"""The batch protocol: ``/ws/transcribe``, per batch-protocol.txt as settled by CONTRACT.md.

A short-lived connection: JSON metadata (or a ping), then one binary frame holding a WAV file,
answered by one JSON transcript and a normal close. This module holds the wire format only:
parsing (:func:`read_frame`, :func:`parse_request`), the reply (:func:`encode_result`), the
close codes, and :class:`BatchProtocol`, which hands the gateway a :class:`_Exchange` that reads
the request off the WebSocket and renders what the gateway returns or raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import anyio
import numpy as np
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from speechgw.errors import (
    ClientGone,
    ClientTimeout,
    InvalidRequest,
    RetryLater,
    SpeechGWError,
    UnsupportedLanguage,
    UnsupportedTask,
)
from speechgw.gateway import Gateway, RecordingResult
from speechgw.jobs import JobRequest
from speechgw.languages import canonical_tag, from_bcp47
from speechgw.media import decode_wav

from ._closing import close

__all__ = ["PATH", "BatchProtocol", "close_code", "encode_result", "parse_request", "read_frame"]

PATH = "/ws/transcribe"
PROTOCOL = "batch"
_MAX_MACHINE_ID = 256
_ABSORB_SECONDS = 2.0
_LOGGER = logging.getLogger(__name__)

_CLOSE_CODES = {
    "audio_too_long": 1009,  # message too big
    "internal_error": 1011,
    "server_busy": 1013,  # try again later
    "rate_limited": 1013,
    "backend_unavailable": 1013,
}


def close_code(error: SpeechGWError) -> int:
    """The WebSocket close code that tells a client why: 1008 (policy) unless listed."""
    return _CLOSE_CODES.get(error.error, 1008)


def _field(message: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = message.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is str and isinstance(value, bool)):
        raise InvalidRequest(f"field '{name}' must be a {kind.__name__}")
    return value


def read_frame(text: str) -> dict[str, Any] | None:
    """A metadata frame as a JSON object; None for a ping. Its fields are not checked yet:
    that waits until the key is accepted (:func:`parse_request`).

    Raises:
        InvalidRequest: not JSON, or not a JSON object.
    """
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can parse
        raise InvalidRequest("the metadata frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidRequest("the metadata frame must be a JSON object")
    if message.get("type") == "ping":
        return None
    return message


def parse_request(message: dict[str, Any]) -> JobRequest:
    """The fields of a ``{"type": "transcribe", ...}`` frame.

    Raises:
        InvalidRequest: a missing or unknown ``type``, a field of the wrong type.
        UnsupportedLanguage: ``language`` is not shaped like an ISO 639-1 code.
        UnsupportedTask: ``task`` is neither ``transcribe`` nor ``translate``.
    """
    kind = message.get("type")
    if kind != "transcribe":
        if kind is None:
            raise InvalidRequest("the metadata frame has no 'type' (expected 'transcribe')")
        raise InvalidRequest(f"unknown type {str(kind)[:32]!r} (expected 'transcribe' or 'ping')")
    language_raw = _field(message, "language", str, "en")
    task = _field(message, "task", str, "transcribe")
    machine_id = _field(message, "machine_id", str, "unknown")
    postprocess = _field(message, "postprocess", bool, None)
    if len(machine_id) > _MAX_MACHINE_ID:
        raise InvalidRequest(f"field 'machine_id' is longer than {_MAX_MACHINE_ID} characters")
    language = from_bcp47(language_raw)  # "de", "DE", and "de-DE" as the other protocols take it
    if language is None:
        raise UnsupportedLanguage(
            f"language {language_raw[:32]!r} is not an ISO 639-1 code (nor a BCP-47 tag such "
            "as en-US)"
        )
    if task not in ("transcribe", "translate"):
        raise UnsupportedTask(f"task {task[:32]!r} is unknown (use 'transcribe' or 'translate')")
    return JobRequest(
        language=language,
        locale=canonical_tag(language_raw),
        task=task,
        machine_id=machine_id,
        postprocess=postprocess,
    )


def encode_result(result: RecordingResult) -> dict[str, Any]:
    """The success response: every field of batch-protocol.txt, plus ``request_id`` and
    ``duration`` (seconds of audio received)."""
    transcript, corrected = result.transcript, result.corrected
    return {
        "text": transcript.text,
        "segments": [{"text": s.text, "start": s.start, "end": s.end} for s in transcript.segments],
        "language": transcript.language,
        "postprocessed_text": corrected.text,
        "postprocess_ms": corrected.milliseconds,
        "postprocess_error": corrected.error,
        "request_id": result.request_id,
        "duration": round(result.audio_seconds, 3),
    }


class _Exchange:
    """One connection's request, read off the WebSocket as the gateway asks for it."""

    def __init__(self, websocket: WebSocket, timeout: float, max_seconds: float) -> None:
        self.websocket = websocket
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.audio_received = False
        self._frame: dict[str, Any] = {}

    async def receive(self, waiting_for: str) -> dict[str, Any]:
        try:
            with anyio.fail_after(self.timeout):
                message = await self.websocket.receive()
        except TimeoutError:
            raise ClientTimeout(
                f"no {waiting_for} within {self.timeout:g} s; closing the connection"
            ) from None
        except WebSocketDisconnect:
            raise ClientGone from None
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        return message

    async def credentials(self) -> object:
        while True:  # metadata, after any number of pings
            message = await self.receive("metadata frame")
            if message.get("text") is None:
                raise InvalidRequest("expected a JSON metadata frame, got a binary frame")
            frame = read_frame(message["text"])
            if frame is not None:
                self._frame = frame
                return frame.get("api_key")
            try:
                await self.websocket.send_json({"type": "pong", "status": "ok"})
            except (WebSocketDisconnect, RuntimeError, OSError):
                raise ClientGone from None

    async def request(self) -> JobRequest:
        return parse_request(self._frame)

    async def audio(self) -> bytes:
        message = await self.receive("audio frame")
        data = message.get("bytes")
        if data is None:
            raise InvalidRequest("expected a binary frame holding a WAV file, got a text frame")
        self.audio_received = True
        return data

    def decode(self, data: bytes) -> tuple[np.ndarray, int]:
        return decode_wav(data, self.max_seconds)

    def progress(self, request_id: str) -> None:
        """The protocol answers with one whole transcript."""
        return None


class BatchProtocol:
    """Serves ``/ws/transcribe``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(PATH, self.endpoint)]

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        # read at each request, so that a config reload applies to the next one
        limits = self.gateway.config.limits
        exchange = _Exchange(websocket, limits.receive_timeout_seconds, limits.max_audio_seconds)
        try:
            result = await self.gateway.run_recording(PROTOCOL, exchange)
        except SpeechGWError as exc:
            await self._fail(exchange, exc)
            return
        except ClientGone:
            return
        try:
            await websocket.send_json(encode_result(result))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client left first
        await close(websocket, 1000)

    async def _fail(self, exchange: _Exchange, error: SpeechGWError) -> None:
        websocket = exchange.websocket
        if websocket.client_state != WebSocketState.CONNECTED:
            return
        try:
            payload: dict[str, Any] = {"error": error.error, "message": error.message}
            if isinstance(error, RetryLater):
                payload["retry_after"] = error.retry_after
            await websocket.send_json(payload)
            if not exchange.audio_received and not isinstance(error, ClientTimeout):
                await self._absorb_pipelined_audio(exchange)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client left first; nothing more to tell it
        await close(websocket, close_code(error), reason=error.error)

    @staticmethod
    async def _absorb_pipelined_audio(exchange: _Exchange) -> None:
        """Read the audio frame a client may already be sending before closing on it.

        Clients usually send metadata and audio back to back without waiting. A client whose
        audio goes out after our Close has come in is refused by its own library
        (python-websockets raises on that send, before the client reads the error). So after
        an error found before the audio, the server reads on, briefly, until the frame or the
        client's own close arrives, and only then closes.
        """
        with (
            anyio.move_on_after(_ABSORB_SECONDS),
            contextlib.suppress(ClientTimeout, ClientGone),
        ):
            while (await exchange.receive("audio frame")).get("bytes") is None:
                pass
