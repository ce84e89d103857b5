"""OpenAI's Realtime API for transcription: ``/v1/realtime`` transcription sessions over a
WebSocket, so that the official SDKs' ``client.realtime.connect()`` (and the tools built on it)
transcribe a microphone here unchanged.

The client sends JSON events: ``session.update`` (a ``"transcription"`` session: audio format,
transcription model, language, prompt, keywords, languages, turn detection),
``input_audio_buffer.append`` (base64 audio), ``input_audio_buffer.commit`` and ``.clear``.
The server answers with ``session.created`` / ``session.updated``, and per turn
``input_audio_buffer.speech_started``, ``speech_stopped`` (``server_vad`` only),
``input_audio_buffer.committed``, ``conversation.item.added``, then
``conversation.item.input_audio_transcription.delta`` (interim words, when they extend what
was sent) and ``.completed`` with the turn's transcript, or ``.failed``; a refused event gets
an ``error`` event and the session goes on.

A session is one live stream of the gateway (:meth:`speechgw.gateway.StreamSession.start`,
with :class:`~speechgw.turns.TurnTaking`): ``server_vad`` turns are the gateway's webrtcvad
utterances (a pause of ``silence_duration_ms`` ends one); ``turn_detection: null`` makes each
commit end one. This module holds the wire format only; the session's settings and the
parser of ``session.update`` are in :mod:`._realtime_settings`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import json
import logging
import secrets
from typing import Any

import numpy as np
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from speechgw.audio import from_g711, linear16
from speechgw.errors import (
    RateLimited,
    RetryLater,
    ShuttingDown,
    SpeechGWError,
    Unauthorized,
)
from speechgw.gateway import Gateway, StreamSession
from speechgw.jobs import JobRequest, Transcript
from speechgw.stream import Stream
from speechgw.turns import SpeechEdge

from ._live import serve_live
from ._realtime_settings import LOGPROBS, SESSION_FIELD, EventError, Settings, updated
from .openai import (
    BASE,
    error_body,
    logprobs,
    status_of,
)
from .streaming import decode_base64_in_pieces

__all__ = ["PATH", "RealtimeProtocol"]

PATH = f"{BASE}/realtime"
PROTOCOL = "realtime"
WHOLE_TEXT_MODEL = "whisper-1"
"""The model whose one delta per turn is the whole transcript, as OpenAI's whisper-1 sends it;
a session with any other gets interim words as deltas while the turn is spoken."""
MIN_COMMIT_MS = 100
"""The least audio a client-ended turn may hold (OpenAI's ``input_audio_buffer_commit_empty``)."""
_CONVERSATION_EVENTS = (
    "conversation.item.create",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "output_audio_buffer.clear",
    "response.cancel",
    "response.create",
)
"""Events of the Realtime API's conversation sessions: a transcription session has no
conversation to act on."""
_CLOSE = {
    "idle": (1008, "timeout"),
    "too_long": (1008, "session too long"),
    "shutdown": (1001, "server shutting down"),
}
_LOGGER = logging.getLogger(__name__)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _key(headers: Headers) -> tuple[str | None, str | None]:
    """The API key and the subprotocol to accept: ``Authorization: Bearer KEY`` (the SDKs), or
    in a browser, which cannot set headers, the subprotocols ``realtime`` and
    ``openai-insecure-api-key.KEY``, as OpenAI takes them."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    accept = "realtime" if "realtime" in offered else None
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), accept
    for protocol in offered:
        if protocol.startswith("openai-insecure-api-key."):
            return protocol.removeprefix("openai-insecure-api-key.") or None, accept
    return None, accept


@dataclasses.dataclass
class _Item:
    """A turn as the client sees it: the user message item its audio becomes."""

    id: str
    start_ms: int = 0
    end_ms: int = 0
    sent: str = ""  # the text its deltas have carried so far
    heard: str = ""  # its last interim's words
    dropped: bool = False  # too little speech to recognise: answered "" in its turn


class _Session:
    """One client's session: its settings, its stream once audio comes, and its turns."""

    def __init__(self, websocket: WebSocket, session: StreamSession, gateway: Gateway) -> None:
        self.websocket = websocket
        self.session = session
        self.gateway = gateway
        self.id = session.stream_id
        self.settings = Settings()
        self.stream: Stream | None = None
        self.open = True
        self._send_lock = asyncio.Lock()
        self._open_item: _Item | None = None  # the turn being spoken
        self._waiting: collections.deque[_Item] = collections.deque()  # ended, not answered
        self._last_item: str | None = None
        self.uncommitted_samples = 0  # of a client-ended turn, at the client's rate

    # --- sending --------------------------------------------------------------------------

    async def send(self, kind: str, **fields: Any) -> None:
        if not self.open:
            return
        event = {"type": kind, "event_id": _new_id("event"), **fields}
        async with self._send_lock:
            try:
                await self.websocket.send_text(json.dumps(event, ensure_ascii=False))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.open = False  # the client left

    async def error(self, exc: SpeechGWError, event_id: str | None = None) -> None:
        """An ``error`` event: OpenAI's error object, ``code`` speechgw's error code (or the
        Realtime API's own for an event it refuses)."""
        body = error_body(status_of(exc), exc.message, getattr(exc, "code", exc.error), exc.field)[
            "error"
        ]
        await self.send("error", error={**body, "event_id": event_id})

    async def describe(self, kind: str) -> None:
        streaming = self.gateway.config.streaming
        session = self.settings.describe(
            self.id, streaming.start_padding_ms, streaming.end_silence_ms
        )
        await self.send(kind, session=session)

    # --- the turns --------------------------------------------------------------------------

    def _start_item(self, at_ms: int) -> _Item:
        item = _Item(_new_id("item"), start_ms=at_ms, end_ms=at_ms)
        self._open_item = item
        return item

    async def on_speech(self, edge: SpeechEdge) -> None:
        vad = not self.settings.client_ends_turns
        if edge.started:
            item = self._start_item(edge.at_ms)
            if vad:
                await self.send(
                    "input_audio_buffer.speech_started", audio_start_ms=edge.at_ms, item_id=item.id
                )
            return
        item = self._open_item or self._start_item(edge.at_ms)
        self._open_item = None
        item.end_ms = edge.at_ms
        if vad:
            await self.send(
                "input_audio_buffer.speech_stopped", audio_end_ms=edge.at_ms, item_id=item.id
            )
        await self._commit(item)
        # too little speech to recognise (noise, a cough): no words, answered in its turn
        item.dropped = not edge.kept
        self._waiting.append(item)
        await self._answer_dropped()

    async def _answer_dropped(self) -> None:
        """Complete the dropped turns that no turn before them waits for."""
        while self._waiting and self._waiting[0].dropped:
            await self._complete(self._waiting.popleft(), "", None)

    async def _commit(self, item: _Item) -> None:
        previous, self._last_item = self._last_item, item.id
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item.id)
        await self.send(
            "conversation.item.added",
            previous_item_id=previous,
            item={
                "id": item.id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        )

    async def _answered_item(self) -> _Item:
        """The turn an answer is for: the oldest ended one (the stream answers in order). It
        stays at the head of the queue until its answer is sent (:meth:`_answered`), so that
        a dropped turn behind it is not completed first."""
        if not self._waiting:
            item = self._start_item(0)  # its end was not reported (a reader stopped meanwhile)
            self._open_item = None
            await self._commit(item)
            self._waiting.appendleft(item)
        return self._waiting[0]

    async def _answered(self, item: _Item) -> None:
        if self._waiting and self._waiting[0] is item:
            self._waiting.popleft()
        await self._answer_dropped()

    async def interim(self, text: str) -> None:
        """Words so far of the turn being spoken: those two interims in a row agree on (a
        delta cannot be taken back, and a first guess, a word cut off or what Whisper makes
        of a moment of silence, is often wrong) are sent as a delta where they extend what its
        deltas have carried. The completed event has the transcript."""
        item = self._open_item
        if item is None:
            return
        stable, item.heard = _agreed(item.heard, text), text
        if len(stable) <= len(item.sent) or not stable.startswith(item.sent):
            return
        delta, item.sent = stable[len(item.sent) :], stable
        await self.send(
            "conversation.item.input_audio_transcription.delta",
            item_id=item.id,
            content_index=0,
            delta=delta,
        )

    async def transcript(self, transcript: Transcript) -> None:
        item = await self._answered_item()
        text = transcript.text
        if text and text != item.sent and text.startswith(item.sent):
            await self.send(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.id,
                content_index=0,
                delta=text[len(item.sent) :],
            )
        await self._complete(item, text, transcript)
        await self._answered(item)

    async def _complete(self, item: _Item, text: str, transcript: Transcript | None) -> None:
        event: dict[str, Any] = {
            "item_id": item.id,
            "content_index": 0,
            "transcript": text,
            "usage": {
                "type": "duration",
                "seconds": round((item.end_ms - item.start_ms) / 1000, 3) if text else 0,
            },
        }
        languages: list[dict[str, str]] = []
        if transcript is not None and text:
            languages = [{"code": c} for c in transcript.languages or (transcript.language,)]
        event["languages"] = languages
        if LOGPROBS in self.settings.include and transcript is not None:
            event["logprobs"] = logprobs(transcript.segments) or []
        await self.send("conversation.item.input_audio_transcription.completed", **event)

    async def failed(self, exc: SpeechGWError) -> None:
        """A turn could not be recognised; at a shutdown, every turn still waiting."""
        item = await self._answered_item()
        everyone = isinstance(exc, ShuttingDown)  # the stream tells of the cut once
        items = list(self._waiting) if everyone else [item]
        body = error_body(status_of(exc), exc.message, exc.error)["error"]
        for each in items:
            await self.send(
                "conversation.item.input_audio_transcription.failed",
                item_id=each.id,
                content_index=0,
                error=body,
            )
        if everyone:
            self._waiting.clear()
        else:
            await self._answered(item)

    def clear(self) -> None:
        """The client took back the turn being spoken: it becomes no item."""
        self._open_item = None
        self.uncommitted_samples = 0

    @property
    def speaking(self) -> bool:
        return self._open_item is not None

    def gone(self) -> None:
        self.open = False


class RealtimeProtocol:
    """Serves ``/v1/realtime`` transcription sessions."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(PATH, self.endpoint)]

    async def endpoint(self, websocket: WebSocket) -> None:
        key, subprotocol = _key(websocket.headers)
        try:
            async with self.gateway.live_stream(PROTOCOL, key, _new_id("sess")) as session:
                await self._serve(websocket, session, subprotocol)
        except Unauthorized as exc:
            body = error_body(401, exc.message, exc.error)
            await websocket.send_denial_response(JSONResponse(body, status_code=401))
        except RetryLater as exc:
            status = 429 if isinstance(exc, RateLimited) else 503
            await websocket.send_denial_response(
                JSONResponse(
                    error_body(status, exc.message, exc.error),
                    status_code=status,
                    headers={"Retry-After": str(exc.retry_after)},
                )
            )

    async def _serve(
        self, websocket: WebSocket, session: StreamSession, subprotocol: str | None
    ) -> None:
        await websocket.accept(subprotocol=subprotocol)
        conn = _Session(websocket, session, self.gateway)
        _LOGGER.info("realtime session %s opened (key=%s)", conn.id, session.caller.key_name)
        await conn.describe("session.created")
        worker: list[asyncio.Task[None]] = []  # the stream's recogniser, once audio came

        async def flush(ending: str) -> None:
            if conn.stream is None:
                return
            if ending != "shutdown":
                # a turn the client never ended is not transcribed, as OpenAI's; at a
                # shutdown it is, so that what was said is not lost
                conn.stream.clear()
                conn.clear()
            await conn.stream.end()

        take = functools.partial(self._take_message, conn, worker)
        ending = await serve_live(websocket, self.gateway, conn, take, flush, _CLOSE, worker)
        _LOGGER.info("realtime session %s closed (%s)", conn.id, ending)

    async def _take_message(
        self,
        conn: _Session,
        worker: list[asyncio.Task[None]],
        message: dict[str, Any],
        deadline: asyncio.Timeout,
    ) -> str | None:
        """Act on one client event; the session's ending, or None to read on."""
        event_id = None
        try:
            event = _parse(message.get("text"))
            event_id = event.get("event_id")
            event_id = event_id if isinstance(event_id, str) else None
            deadline.reschedule(None)  # back-pressure is not idling
            if not await self._act(conn, event, worker):
                longest = self.gateway.config.limits.max_stream_seconds
                await conn.error(
                    EventError(
                        f"the session has reached its longest ({longest} s of audio): open a "
                        "new one",
                        "session_expired",
                    ),
                    event_id,
                )
                return "too_long"
        except SpeechGWError as exc:
            conn.session.refused(exc)
            await conn.error(exc, event_id)
        return None

    async def _act(
        self, conn: _Session, event: dict[str, Any], worker: list[asyncio.Task[None]]
    ) -> bool:
        """Carry out one client event; False once the session is over its length limit."""
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            return await self._append(conn, event, worker)
        if kind == "input_audio_buffer.commit":
            await self._commit(conn)
        elif kind == "input_audio_buffer.clear":
            if conn.stream is not None:
                conn.stream.clear()
            conn.clear()
            await conn.send("input_audio_buffer.cleared")
        elif kind == "session.update":
            settings = updated(conn.settings, event.get("session"))
            if conn.stream is not None and settings != conn.settings:
                raise EventError(
                    "the session's settings cannot change once audio has been sent: open a new "
                    "session for other settings",
                    "session_in_use",
                    "session",
                )
            conn.settings = settings
            await conn.describe("session.updated")
        elif kind in _CONVERSATION_EVENTS:
            raise EventError(
                f"{kind!r} is not available in a transcription session", "invalid_value", "type"
            )
        else:
            raise EventError(
                f"Invalid value: {str(kind)[:64]!r}. Supported values are: 'session.update', "
                "'input_audio_buffer.append', 'input_audio_buffer.commit' and "
                "'input_audio_buffer.clear'",
                "invalid_value",
                "type",
            )
        return True

    async def _append(
        self, conn: _Session, event: dict[str, Any], worker: list[asyncio.Task[None]]
    ) -> bool:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise EventError("'audio' must be a base64 string", "invalid_value", "audio")
        pieces = await decode_base64_in_pieces(audio)
        law = conn.settings.law
        samples: list[np.ndarray] = []
        for piece in pieces:
            samples.append(linear16(piece) if law is None else from_g711(piece, law))
        if not sum(map(len, samples)):
            return True
        if conn.stream is None:
            conn.stream = self._open(conn)
            worker.append(asyncio.create_task(conn.stream.run()))
        fed = await conn.stream.feed(*samples)
        if fed and conn.settings.client_ends_turns:
            conn.uncommitted_samples += sum(map(len, samples))
        return fed

    async def _commit(self, conn: _Session) -> None:
        rate = conn.settings.rate
        held_ms = conn.uncommitted_samples * 1000 / rate
        if (
            conn.stream is None
            or not conn.speaking
            or (conn.settings.client_ends_turns and held_ms < MIN_COMMIT_MS)
        ):
            if not conn.settings.client_ends_turns:
                held_ms = 0.0  # server_vad: the buffer holds no speech yet
            raise EventError(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {held_ms:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
            )
        conn.uncommitted_samples = 0
        await conn.stream.commit()

    @staticmethod
    def _open(conn: _Session) -> Stream:
        """Start the stream with the session's settings. Refused ones (an unknown model, a
        language no backend knows) are refused again for every append until the client
        changes them: audio is never recognised with settings it did not ask for."""
        settings = conn.settings
        asked = JobRequest(
            language=settings.language,
            model=settings.model,
            prompt=settings.prompt,
            keywords=settings.keywords,
            languages=settings.languages,
        )
        try:
            return conn.session.start(
                asked,
                settings.rate,
                conn.transcript,
                conn.failed,
                # whisper-1's one delta is the whole transcript (OpenAI's); the others' carry
                # the words as they are heard
                None if settings.model == WHOLE_TEXT_MODEL else conn.interim,
                turns=settings.turns(conn.on_speech),
            )
        except SpeechGWError as exc:
            if exc.field in ("model", "language", "languages"):
                exc.field = f"{SESSION_FIELD}.transcription.{exc.field}"
            raise


def _agreed(before: str, now: str) -> str:
    """The words at the start of ``now`` that ``before`` starts with too."""
    said, heard = before.split(" "), now.split(" ")
    same = 0
    while same < min(len(said), len(heard)) and said[same] == heard[same]:
        same += 1
    return " ".join(heard[:same])


def _parse(text: str | None) -> dict[str, Any]:
    """A client event: a JSON object with a string ``type``.

    Raises:
        InvalidRequest: a binary frame, not JSON, not an object, or without a type.
    """
    if text is None:
        raise EventError("events must be JSON text frames", "invalid_json")
    try:
        event: Any = json.loads(text)
    except (ValueError, RecursionError):
        raise EventError("the event is not valid JSON", "invalid_json") from None
    if not isinstance(event, dict):
        raise EventError("the event must be a JSON object", "invalid_json")
    if not isinstance(event.get("type"), str):
        raise EventError("the event has no 'type'", "missing_required_parameter", "type")
    return event
