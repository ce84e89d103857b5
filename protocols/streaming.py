"""The streaming protocol: ``/api/core/google/asr``, per streaming-protocol.txt as settled by
CONTRACT.md.

A long-lived connection: the API key in the query string is checked before the upgrade; the
client sends JSON messages with base64 LINEAR16 ``audio`` (``rate`` and ``language_code`` taken
from the first accepted message); the server answers one ``asr_reply`` per utterance. Bad
messages get one of the four documented error messages and the connection keeps working.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from speechgw.audio import check_rate, linear16
from speechgw.errors import (
    InvalidAudio,
    InvalidRequest,
    RateLimited,
    RetryLater,
    SpeechGWError,
    Unauthorized,
    UnsupportedLanguage,
)
from speechgw.gateway import Gateway, StreamSession
from speechgw.jobs import JobRequest, Transcript
from speechgw.languages import canonical_tag, from_bcp47
from speechgw.stream import Stream

from ._live import serve_live

__all__ = [
    "DECODE_PIECE_CHARS",
    "PATH",
    "StreamingProtocol",
    "audio_of",
    "audio_of_message",
    "decode_base64",
    "decode_base64_in_pieces",
    "new_client_id",
    "parse_message",
    "wire_message",
]

PATH = "/api/core/google/asr"
PROTOCOL = "streaming"
DEFAULT_RATE, DEFAULT_LANGUAGE = 16000, "en-US"
_LOGGER = logging.getLogger(__name__)


_CLOSE: dict[str, tuple[int, str]] = {
    "end": (1000, ""),
    "idle": (1008, "timeout"),
    "too_long": (1008, "stream too long"),
    "shutdown": (1001, "server shutting down"),
}
"""How the server closes after each way a stream can end (a disconnect needs no close)."""


class MissingAudio(InvalidRequest):
    """A message without an ``audio`` field."""


def wire_message(error: SpeechGWError) -> str:
    """The documented ``message`` text for an error."""
    if isinstance(error, MissingAudio):
        return "Missing Audio Field"
    if isinstance(error, InvalidRequest):
        return "Invalid Message Format"
    if isinstance(error, InvalidAudio):
        return "Audio Decoding Error"
    return "Speech Recognition Error"


def new_client_id() -> str:
    """``<milliseconds since epoch>-<16 lowercase hex>``."""
    return f"{int(time.time() * 1000)}-{secrets.token_hex(8)}"


_SETTINGS = ("rate", "language_code", "interim_results")
"""The fields that configure a stream, taken before it starts (the spec: "only need to be sent
with the first message")."""


def parse_message(text: str | None) -> dict[str, Any] | None:
    """One client message as a JSON object; None for ``{"type": "end"}``.

    Raises:
        InvalidRequest: a binary frame, not JSON, or not a JSON object.
    """
    if text is None:
        raise InvalidRequest("messages must be JSON text frames")
    try:
        message: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can parse
        raise InvalidRequest("the message is not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidRequest("the message must be a JSON object")
    if message.get("type") == "end":
        return None
    return message


def audio_of(message: dict[str, Any]) -> np.ndarray:
    """A message's ``audio`` as int16 samples at the stream's own rate.

    Raises:
        MissingAudio: no ``audio`` field.
        InvalidAudio: ``audio`` is not base64 of whole 16-bit samples.
    """
    audio = message.get("audio")
    if audio is None:
        raise MissingAudio("the message has no 'audio' field")
    if not isinstance(audio, str):
        raise InvalidAudio("'audio' must be a base64 string")
    return linear16(decode_base64(audio))


async def audio_of_message(message: dict[str, Any]) -> list[np.ndarray]:
    """:func:`audio_of` in consecutive pieces: a long ``audio`` is decoded a piece at a time
    (:func:`decode_base64_in_pieces`) so that one large message does not hold the server. All
    of it is decoded, and checked, before any of it is used.

    Raises:
        MissingAudio: no ``audio`` field.
        InvalidAudio: ``audio`` is not base64 of whole 16-bit samples.
    """
    audio = message.get("audio")
    if isinstance(audio, str) and len(audio) > DECODE_PIECE_CHARS:
        return [linear16(piece) for piece in await decode_base64_in_pieces(audio)]
    return [audio_of(message)]


_NOT_BASE64 = str.maketrans("-_", "+/", " \t\r\n\f\v")
"""Written forms of base64 that other encoders produce, mapped to the standard one: the line
breaks of MIME base64 (RFC 2045: GNU ``base64`` without ``-w0``, Python's
``base64.encodebytes``, Java's MIME encoder) dropped, and the URL-safe alphabet (RFC 4648
section 5: Go's ``URLEncoding``, Python's ``urlsafe_b64encode``) mapped to the standard one."""


def decode_base64(text: str) -> bytes:
    """The bytes of ``audio``: strict base64 (RFC 4648) at the cost of one call, else the
    forms other encoders write, which every decoder reads the same way: line breaks and other
    whitespace, the URL-safe alphabet, padding left off (Go's ``RawStdEncoding``, JWT-style).
    Anything else (a character outside both alphabets, the two alphabets mixed, a length no
    encoder writes) is refused, never skipped: a skipped character would shift every sample
    after it into noise.

    Raises:
        InvalidAudio: not base64 in any of those forms.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    _one_alphabet(text)
    try:
        return base64.b64decode(_padded(text.translate(_NOT_BASE64)), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidAudio("'audio' is not valid base64") from None


def _one_alphabet(text: str) -> None:
    """Refuse base64 that mixes the standard and the URL-safe alphabets (no encoder does)."""
    if ("-" in text or "_" in text) and ("+" in text or "/" in text):
        raise InvalidAudio("'audio' is not valid base64 (standard and URL-safe alphabets mixed)")


def _padded(cleaned: str) -> str:
    """Base64 without whitespace, its padding (if any) put right; refused when its length is
    not one of whole bytes."""
    cleaned = cleaned.rstrip("=")
    if len(cleaned) % 4 == 1:
        raise InvalidAudio("'audio' is not valid base64 (its length is not one of whole bytes)")
    return cleaned + "=" * (-len(cleaned) % 4)


DECODE_PIECE_CHARS = 1 << 18
"""``audio`` longer than this (256 Ki characters, 6 s of 16 kHz audio) is decoded a piece at a
time, the event loop free for other connections between pieces: binascii holds the GIL for a
whole call, in a worker thread too (0.3 s for a 22-minute recording sent as one message)."""


async def decode_base64_in_pieces(text: str, piece_chars: int = DECODE_PIECE_CHARS) -> list[bytes]:
    """:func:`decode_base64`, a piece of ``piece_chars`` (a multiple of 4) at a time when the
    text is longer: the same bytes, or the same refusal, in consecutive pieces, never joined
    (joining 40 MB took the loop another 30-110 ms). The forms other encoders write are
    cleaned a piece at a time too, then decoded in pieces (in one call, 60 MB of MIME base64
    held the loop 0.43 s, and 60 MB that was no base64 at all 0.23 s).

    Raises:
        InvalidAudio: not base64 in any of the forms :func:`decode_base64` takes.
    """
    if len(text) <= piece_chars:
        return [decode_base64(text)]
    pieces = await _strict_pieces(text, piece_chars)
    if pieces is None:
        _one_alphabet(text)
        cleaned = []
        for start in range(0, len(text), piece_chars):
            cleaned.append(text[start : start + piece_chars].translate(_NOT_BASE64))
            await asyncio.sleep(0)
        pieces = await _strict_pieces(_padded("".join(cleaned)), piece_chars)
        if pieces is None:
            raise InvalidAudio("'audio' is not valid base64")
    return pieces


async def _strict_pieces(text: str, piece_chars: int) -> list[bytes] | None:
    """Strict base64 decoded a piece at a time, the event loop free between pieces; None when
    it is not strict base64 (a character outside the alphabet, padding before the end)."""
    pieces = []
    for start in range(0, len(text), piece_chars):
        piece = text[start : start + piece_chars]
        if start + piece_chars < len(text) and "=" in piece:
            return None  # padding before the end
        try:
            pieces.append(base64.b64decode(piece, validate=True))
        except (binascii.Error, ValueError):
            return None
        await asyncio.sleep(0)  # the other connections' turn
    return pieces


_TAKEN_IN_STEPS_CHARS = 1 << 16
"""A message with more base64 than this (1.5 s of 16 kHz audio) may be taken in several steps
(its base64 decoded a piece at a time beyond 6 s of 16 kHz audio, its audio fed 8 s at a time),
so it is taken whole even if its reader is stopped between two steps."""


async def _whole(taking: Coroutine[Any, Any, bool]) -> bool:
    """Await ``taking`` to its end even if the caller is cancelled meanwhile, then pass the
    cancellation on. A shutdown stops each stream's reader and then recognises what the stream
    has: a message the reader had begun to take must be all of it, as one taken in one step
    was (cut off between two pieces, the rest of it was never recognised)."""
    task = asyncio.ensure_future(taking)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task  # a second cancellation (the grace period's end) stops it too
        raise


def _settings(asked: dict[str, Any]) -> tuple[int, str, str, bool]:
    """``(rate, language_code, iso_language, interim_results)`` from what the client sent."""
    rate = asked.get("rate")
    rate = DEFAULT_RATE if rate is None else rate
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)  # JSON has one number type: Python's json.dumps writes 16000.0
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise InvalidAudio("'rate' must be an integer number of Hz")
    check_rate(rate, "'rate'")
    code = asked.get("language_code")
    code = DEFAULT_LANGUAGE if code is None else code
    if not isinstance(code, str):
        raise InvalidRequest("'language_code' must be a string such as 'en-US'")
    iso = from_bcp47(code)
    if iso is None:
        raise UnsupportedLanguage(f"language_code {code[:32]!r} is not a BCP-47 tag")
    interim = asked.get("interim_results")
    interim = False if interim is None else interim
    if not isinstance(interim, bool):
        raise InvalidRequest("'interim_results' must be true or false")
    return rate, code, iso, interim


class _Connection:
    """One client's connection: its id, its stream once configured, and a send lock (replies
    come from the stream's task while errors come from the reading loop)."""

    def __init__(self, websocket: WebSocket, session: StreamSession) -> None:
        self.websocket = websocket
        self.session = session
        self.client_id = session.stream_id
        self.stream: Stream | None = None
        self.asked: dict[str, Any] = {}
        """The settings the client has sent before its stream started, refused or not: each
        message's replace the earlier ones, and one it leaves out keeps the last value."""
        self._send_lock = asyncio.Lock()
        self.open = True

    async def send(self, payload: dict[str, Any]) -> None:
        if not self.open:
            return
        async with self._send_lock:
            try:
                await self.websocket.send_json(payload)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.open = False  # the client left; its audio is still recognised and counted

    def gone(self) -> None:
        self.open = False

    async def reply(self, transcript: Transcript) -> None:
        await self.send({"asr_reply": transcript.text, "clientId": self.client_id})

    async def interim(self, text: str) -> None:
        """Our extension (docs/PROTOCOLS.md): the words so far of the utterance being spoken."""
        await self.send({"asr_interim": text, "clientId": self.client_id})

    async def error(self, error: SpeechGWError) -> None:
        await self.send(
            {
                "type": "error",
                "message": wire_message(error),
                "clientId": self.client_id,
                "error": error.error,
                "detail": error.message,
            }
        )


class StreamingProtocol:
    """Serves ``/api/core/google/asr``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(PATH, self.endpoint)]

    async def endpoint(self, websocket: WebSocket) -> None:
        # admission happens before the upgrade, so a refused client gets a plain HTTP answer
        key = websocket.query_params.get("api_key")
        try:
            async with self.gateway.live_stream(PROTOCOL, key, new_client_id()) as session:
                await self._serve(websocket, session)
        except Unauthorized as exc:
            await websocket.send_denial_response(
                JSONResponse({"error": exc.error, "message": exc.message}, status_code=401)
            )
        except RetryLater as exc:
            await websocket.send_denial_response(
                JSONResponse(
                    {"error": exc.error, "message": exc.message, "retry_after": exc.retry_after},
                    status_code=429 if isinstance(exc, RateLimited) else 503,
                    headers={"Retry-After": str(exc.retry_after)},
                )
            )

    async def _serve(self, websocket: WebSocket, session: StreamSession) -> None:
        await websocket.accept()
        conn = _Connection(websocket, session)
        _LOGGER.info("stream %s opened (key=%s)", conn.client_id, session.caller.key_name)
        await conn.send(
            {
                "type": "connection",
                "message": "Connected to ASR service",
                "clientId": conn.client_id,
            }
        )
        worker: list[asyncio.Task[None]] = []  # the stream's recogniser, once configured

        async def flush(ending: str) -> None:
            if conn.stream is not None:
                await conn.stream.end()

        take = functools.partial(self._take_message, conn, worker)
        ending = await serve_live(websocket, self.gateway, conn, take, flush, _CLOSE, worker)
        _LOGGER.info("stream %s closed (%s)", conn.client_id, ending)

    async def _take_message(
        self,
        conn: _Connection,
        worker: list[asyncio.Task[None]],
        message: dict[str, Any],
        deadline: asyncio.Timeout,
    ) -> str | None:
        """Act on one message; the stream's ending, or None to read on."""
        try:
            parsed = parse_message(message.get("text"))
            if parsed is None:
                return "end"
            if conn.stream is None:
                conn.asked.update((name, parsed[name]) for name in _SETTINGS if name in parsed)
            taking = self._take(conn, parsed, worker, deadline)
            audio = parsed.get("audio")
            if isinstance(audio, str) and len(audio) > _TAKEN_IN_STEPS_CHARS:
                taking = _whole(taking)
            if not await taking:
                return "too_long"
        except SpeechGWError as exc:
            conn.session.refused(exc)
            await conn.error(exc)
        return None

    async def _take(
        self,
        conn: _Connection,
        message: dict[str, Any],
        worker: list[asyncio.Task[None]],
        deadline: asyncio.Timeout,
    ) -> bool:
        """Decode a message's audio and feed it to the stream (started with the first audio);
        False once the stream is over its length limit."""
        pieces = await audio_of_message(message)
        if conn.stream is None:
            conn.stream = self._open(conn)
            worker.append(asyncio.create_task(conn.stream.run()))
        deadline.reschedule(None)  # waiting out back-pressure is not idling
        return await conn.stream.feed(*pieces)

    @staticmethod
    def _open(conn: _Connection) -> Stream:
        """Start the stream with the settings the client has sent. A refused one (a bad rate,
        a language no backend here knows) is refused again for every message until the client
        sends another: audio is never decoded with defaults it did not ask for."""
        rate, code, language, interim = _settings(conn.asked)
        on_interim = conn.interim if interim else None
        asked = JobRequest(language, locale=canonical_tag(code))
        return conn.session.start(asked, rate, conn.reply, conn.error, on_interim)
