"""The batch protocol: ``/ws/transcribe``, per batch-protocol.txt as settled by CONTRACT.md.

A short-lived connection: JSON metadata (or a ping), then one binary frame holding a WAV file,
answered by one JSON transcript and a normal close. Parsing is pure (:func:`parse_metadata`,
:func:`encode_result`); :class:`BatchProtocol` drives it over a starlette WebSocket and talks to
the core only through the :class:`~speechgw.gateway.Gateway`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from speechgw.audio import read_wav, to_16k_mono
from speechgw.errors import (
    ClientTimeout,
    InternalError,
    InvalidRequest,
    RetryLater,
    SpeechGWError,
    UnsupportedLanguage,
    UnsupportedTask,
)
from speechgw.gateway import Gateway, Request
from speechgw.jobs import AudioJob, Caller, JobSpec, Task, Transcript
from speechgw.languages import normalise_iso
from speechgw.postprocess import PostprocessResult

__all__ = ["PATH", "BatchProtocol", "Metadata", "encode_result", "parse_metadata"]

PATH = "/ws/transcribe"
PROTOCOL = "batch"
_MAX_MACHINE_ID = 256
_LINGER_SECONDS = 2.0
_LOGGER = logging.getLogger(__name__)


class _Disconnected(Exception):
    """The client closed the connection."""


@dataclass(frozen=True, slots=True)
class Metadata:
    """A parsed ``{"type": "transcribe", ...}`` frame; the key is checked, never kept."""

    api_key: object
    language: str
    task: Task
    machine_id: str
    postprocess: bool | None


def _field(message: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = message.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is str and isinstance(value, bool)):
        raise InvalidRequest(f"field '{name}' must be a {kind.__name__}")
    return value


def parse_metadata(text: str) -> Metadata | None:
    """Parse a metadata frame: None for a ping, a :class:`Metadata` for a transcribe request.

    Raises:
        InvalidRequest: not JSON, not an object, a missing or unknown ``type``, a field of the
            wrong type.
        UnsupportedLanguage: ``language`` is not shaped like an ISO 639-1 code.
        UnsupportedTask: ``task`` is neither ``transcribe`` nor ``translate``.
    """
    try:
        message = json.loads(text)
    except ValueError:
        raise InvalidRequest("the metadata frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidRequest("the metadata frame must be a JSON object")
    kind = message.get("type")
    if kind == "ping":
        return None
    if kind != "transcribe":
        if kind is None:
            raise InvalidRequest("the metadata frame has no 'type' (expected 'transcribe')")
        raise InvalidRequest(f"unknown type {kind!r} (expected 'transcribe' or 'ping')")
    language_raw = _field(message, "language", str, "en")
    task = _field(message, "task", str, "transcribe")
    machine_id = _field(message, "machine_id", str, "unknown")
    postprocess = _field(message, "postprocess", bool, None)
    if len(machine_id) > _MAX_MACHINE_ID:
        raise InvalidRequest(f"field 'machine_id' is longer than {_MAX_MACHINE_ID} characters")
    language = normalise_iso(language_raw)
    if language is None:
        raise UnsupportedLanguage(f"language {language_raw[:32]!r} is not an ISO 639-1 code")
    if task not in ("transcribe", "translate"):
        raise UnsupportedTask(f"task {task[:32]!r} is unknown (use 'transcribe' or 'translate')")
    return Metadata(
        api_key=message.get("api_key"),
        language=language,
        task=task,
        machine_id=machine_id,
        postprocess=postprocess,
    )


def encode_result(
    transcript: Transcript, corrected: PostprocessResult, request: Request
) -> dict[str, Any]:
    """The success response: every field of batch-protocol.txt, plus ``request_id`` and
    ``duration`` (seconds of audio received)."""
    return {
        "text": transcript.text,
        "segments": [{"text": s.text, "start": s.start, "end": s.end} for s in transcript.segments],
        "language": transcript.language,
        "postprocessed_text": corrected.text,
        "postprocess_ms": corrected.milliseconds,
        "postprocess_error": corrected.error,
        "request_id": request.request_id,
        "duration": round(request.audio_seconds, 3),
    }


def _decode_wav(data: bytes, gateway: Gateway) -> np.ndarray:
    samples, info = read_wav(data)
    gateway.check_duration(len(samples), info.sample_rate)
    return to_16k_mono(samples, info.sample_rate)


class BatchProtocol:
    """Serves ``/ws/transcribe``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def timeout(self) -> float:
        return self.gateway.config.limits.receive_timeout_seconds  # follows a config reload

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(PATH, self.endpoint)]

    async def _receive(self, websocket: WebSocket, waiting_for: str) -> dict[str, Any]:
        try:
            with anyio.fail_after(self.timeout):
                message = await websocket.receive()
        except TimeoutError:
            raise ClientTimeout(
                f"no {waiting_for} within {self.timeout:g} s; closing the connection"
            ) from None
        if message["type"] == "websocket.disconnect":
            raise _Disconnected
        return message

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        request = self.gateway.begin(PROTOCOL)
        settled = False
        held = contextlib.ExitStack()  # the places this request holds, released at the end
        try:
            held.enter_context(self.gateway.admit_connection())
            transcript = await self._serve(websocket, request, held)
            corrected = await self.gateway.postprocess(request, transcript)
            await self.gateway.settle(request)  # durable before the client can see it
            settled = True
            await websocket.send_json(encode_result(transcript, corrected, request))
        except SpeechGWError as exc:
            await self._fail(websocket, request, exc)
            return
        except (_Disconnected, WebSocketDisconnect):
            if settled:  # done and billed; only the delivery failed
                self.gateway.finish(request)
            elif request.spec is not None:
                self.gateway.finish(request, uncounted="abandoned")
            return
        except Exception:
            _LOGGER.exception("request %s: unexpected failure", request.request_id)
            await self._fail(websocket, request, InternalError("internal server error"))
            return
        finally:
            held.close()
        self.gateway.finish(request)
        await websocket.close(1000)

    async def _serve(
        self, websocket: WebSocket, request: Request, held: contextlib.ExitStack
    ) -> Transcript:
        while True:  # metadata, after any number of pings
            message = await self._receive(websocket, "metadata frame")
            if message.get("text") is None:
                raise InvalidRequest("expected a JSON metadata frame, got a binary frame")
            metadata = parse_metadata(message["text"])
            if metadata is not None:
                break
            await websocket.send_json({"type": "pong", "status": "ok"})
        key_name = self.gateway.authenticate(metadata.api_key)
        held.enter_context(self.gateway.admit_key(key_name))
        request.spec = JobSpec(
            language=metadata.language,
            task=metadata.task,
            protocol=PROTOCOL,
            caller=Caller(key_name=key_name, machine_id=metadata.machine_id),
            postprocess=metadata.postprocess,
            request_id=request.request_id,
        )
        route = self.gateway.route(request.spec)
        message = await self._receive(websocket, "audio frame")
        data = message.get("bytes")
        if data is None:
            raise InvalidRequest("expected a binary frame holding a WAV file, got a text frame")
        request.start_clock()
        with self.gateway.admit_job():
            audio = await anyio.to_thread.run_sync(_decode_wav, data, self.gateway)
            return await self.gateway.transcribe(request, AudioJob(request.spec, audio), route)

    async def _fail(self, websocket: WebSocket, request: Request, error: SpeechGWError) -> None:
        self.gateway.finish(request, error)
        if websocket.client_state != WebSocketState.CONNECTED:
            return
        try:
            payload: dict[str, Any] = {"error": error.error, "message": error.message}
            if isinstance(error, RetryLater):
                payload["retry_after"] = error.retry_after
            await websocket.send_json(payload)
            if request.started is None and not isinstance(error, ClientTimeout):
                await self._absorb_pipelined_audio(websocket)
            await websocket.close(error.close_code, reason=error.error)
        except (_Disconnected, WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left first; nothing more to tell it

    async def _absorb_pipelined_audio(self, websocket: WebSocket) -> None:
        """Read the audio frame a client may already be sending before closing on it.

        Clients usually send metadata and audio back to back without waiting. Closing while
        that frame is still unread makes the kernel answer with a TCP reset, and a client that
        is reset loses the error it had not read yet (python-websockets drops it). So after an
        error found before the audio, the server reads on, briefly, until the frame or the
        client's own close arrives.
        """
        with anyio.move_on_after(_LINGER_SECONDS), contextlib.suppress(ClientTimeout):
            while (await self._receive(websocket, "audio frame")).get("bytes") is None:
                pass
