"""OpenAI's HTTP transcription API: ``POST /v1/audio/transcriptions`` and ``/translations``,
``GET /v1/models``, so that the official ``openai`` SDKs, curl and the tools built on them work
unchanged (``OpenAI(base_url="http://HOST:8765/v1", api_key=KEY)``).

A request is ``multipart/form-data`` as OpenAI documents it: ``file`` (any container and codec
FFmpeg decodes), ``model``, ``language`` (absent: detected, among ``languages[]`` when sent),
``prompt``, ``keywords[]``, ``response_format``, ``temperature``, ``timestamp_granularities[]``
and ``include[]``; the key comes as
``Authorization: Bearer KEY``. This module holds the wire format only: reading the form under
the upload limit, rendering the five response formats, and OpenAI's error shape with the
statuses its SDKs act on. Admission, keys, routing (``model`` is a routing condition), the
ledger, metrics, post-processing and fallback come from
:meth:`speechgw.gateway.Gateway.run_recording`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from starlette.background import BackgroundTask
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from speechgw.early_answer import EarlyAnswer, any_method_route, refusal
from speechgw.errors import (
    AudioTooLong,
    ClientGone,
    ClientTimeout,
    InvalidRequest,
    RetryLater,
    SpeechGWError,
    UnsupportedLanguage,
)
from speechgw.gateway import Gateway, RecordingResult
from speechgw.jobs import Decoding, JobRequest, Segment, Task, Transcript
from speechgw.languages import canonical_tag, language_name, language_of
from speechgw.media import decode_media
from speechgw.progress import OnSegment
from speechgw.text import as_whisper_writes, separator

__all__ = [
    "BASE",
    "OpenAIProtocol",
    "Reply",
    "candidate_languages",
    "error_body",
    "error_response",
    "keywords_of",
    "language_code",
    "logprobs",
    "parse_form",
    "render",
    "status_of",
]

BASE = "/v1"
PROTOCOL = "openai"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")
"""The formats ``stream=true`` goes with: its events carry text, not timed segments."""
GRANULARITIES = ("segment", "word")
INCLUDES = ("logprobs",)
"""What ``include[]`` may ask for: each word's log probability with the text."""
MAX_KEYWORDS = 100
"""The most ``keywords[]`` a request may send: a vocabulary, not a dictionary (Whisper reads at
most 223 tokens of them, Google up to 5,000 phrases)."""
MAX_KEYWORD_CHARS = 100
"""The longest keyword or phrase, in characters (Google's limit for a phrase hint)."""
_LEAST_PROBABILITY = 1e-12  # its log (-27.6) stands for a word the model gave no chance
_MAX_FIELD_BYTES = 64 * 1024  # prompt and the like; the file has its own limit
_MAX_FIELDS = 32 + MAX_KEYWORDS  # a part each: a keyword, a language, an include
_NOT_A_FILE = (
    "field 'file' must be sent as a file (a part with a filename, as curl -F file=@audio.wav "
    "sends it), not as a text field"
)

_STATUS = {
    "invalid_request": 400,
    "unsupported_language": 400,
    "unsupported_task": 400,
    "invalid_audio": 400,  # OpenAI's "Invalid file format" and "could not be decoded" are 400
    "audio_too_long": 400,  # a recording over the duration limit, as OpenAI's; see _BodyTooLarge
    "unauthorized": 401,
    "timeout": 408,
    "rate_limited": 429,
    "internal_error": 500,
    "server_busy": 503,
    "backend_unavailable": 503,
}
_TYPE = {401: "authentication_error", 429: "rate_limit_error"}


class _BodyTooLarge(AudioTooLong):
    """A body over ``limits.max_frame_bytes``: 413, as OpenAI answers one over its 25 MB
    (the code stays ``audio_too_long``, the batch protocol's for a frame too big)."""


def status_of(error: SpeechGWError) -> int:
    """The HTTP status that OpenAI's SDKs act on for ``error`` (they retry 408, 429, 5xx), the
    one OpenAI gives the same fault, so that code catching ``openai.BadRequestError`` for a bad
    upload works here too."""
    if isinstance(error, _BodyTooLarge):
        return 413
    return _STATUS.get(error.error, 400)


def error_response(
    error: SpeechGWError, retry_after: float = 1, body_unread: bool = False
) -> Response:
    """OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``; ``code`` is
    speechgw's error code, the same one the other protocols send. Retry-After on 429 and 503
    (the error's own wait, else ``retry_after``). ``body_unread``: the error came before the
    request's body was read to its end (answered as an
    :class:`~speechgw.early_answer.EarlyAnswer`)."""
    status = status_of(error)
    headers = {}
    if isinstance(error, RetryLater):
        retry_after = error.retry_after
    if status in (429, 503):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if error.request_id is not None:
        headers["X-Request-Id"] = error.request_id
    param = _PARAMS.get(error.field or "", error.field)  # the SDKs: APIStatusError.param
    body = error_body(status, error.message, error.error, param)
    if body_unread:
        return EarlyAnswer(body, status, headers)
    return JSONResponse(body, status_code=status, headers=headers)


_PARAMS = {"word_timestamps": "timestamp_granularities"}
"""OpenAI's names (``param``) for the request fields errors are about, where they differ."""


def error_body(status: int, message: str, code: str | None, param: str | None = None) -> dict:
    kind = _TYPE.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- the request ---------------------------------------------------------------------------


def bearer_key(request: Request) -> str | None:
    """The key of ``Authorization: Bearer KEY`` (None without one)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"field '{name}' must be text, not a file")
    return value


@dataclass(frozen=True, slots=True)
class Reply:
    """How the client wants its answer."""

    format: str = "json"
    segments: bool = True
    """``verbose_json`` lists segments (asked for, or no granularity asked at all)."""
    words: bool = False
    stream: bool = False
    """Server-sent events: the text as it is recognised, then the whole (``stream=true``)."""
    logprobs: bool = False
    """``include[]=logprobs``: the text's words with their log probabilities (``json`` and
    the events of ``stream=true``), where the backend gives them."""
    languages: bool = False
    """``json``, ``verbose_json`` and the done event name the languages heard, in
    ``languages``, as OpenAI's ``gpt-transcribe`` answers: transcriptions only (a translation
    is written in English)."""


def parse_form(form: FormData, task: Task) -> tuple[JobRequest, Reply]:
    """The job a form asks for, and how to answer it.

    Raises:
        InvalidRequest: no ``file`` or ``model``; a bad ``response_format``,
            ``temperature``, ``timestamp_granularities[]``, ``include[]`` or ``keywords[]``;
            ``stream=true`` with a format whose timed segments its events cannot carry;
            ``logprobs`` for a format that has no place for them.
        UnsupportedLanguage: ``language`` or one of ``languages[]`` is not an ISO 639-1 code
            (nor a language's English name).
    """
    if isinstance(form.get("file"), str):
        raise InvalidRequest(_NOT_A_FILE, field="file")
    if not isinstance(form.get("file"), UploadFile):
        raise InvalidRequest("field 'file' is required: the audio file to transcribe", field="file")
    model = _text(form, "model")
    if not model:
        raise InvalidRequest(
            "field 'model' is required (GET /v1/models lists the names)", field="model"
        )
    response_format = _text(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        known = ", ".join(RESPONSE_FORMATS)
        raise InvalidRequest(
            f"response_format {response_format[:32]!r} is unknown ({known})",
            field="response_format",
        )
    stream = _flag(_text(form, "stream"), "stream")
    if stream and response_format not in STREAM_FORMATS:
        raise InvalidRequest(
            f"stream=true sends text events: response_format must be json or text, "
            f"not {response_format!r}",
            field="stream",
        )
    temperature = _temperature(_text(form, "temperature"))
    granularities = _listed(form, "timestamp_granularities")
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise InvalidRequest(
                f"timestamp_granularities[] {str(granularity)[:32]!r} is unknown (segment, word)",
                field="timestamp_granularities",
            )
    words = "word" in granularities
    if words and response_format != "verbose_json":
        raise InvalidRequest(
            "word timestamps need response_format 'verbose_json'", field="word_timestamps"
        )
    with_logprobs = _includes_logprobs(form, response_format, stream)
    language_raw = _text(form, "language") or None
    language = None if language_raw is None else language_code(language_raw, "language")
    candidates = () if language is not None else _candidate_languages(form)
    if len(candidates) == 1:  # one language the audio may be in is the language it is in
        ((language_raw, language),) = candidates
        candidates = ()
    request = JobRequest(
        language=language,
        locale=None if language_raw is None else canonical_tag(language_raw),
        task=task,
        model=model,
        prompt=_text(form, "prompt") or None,
        temperature=temperature,
        word_timestamps=words,
        word_probabilities=with_logprobs,
        languages=tuple(code for _, code in candidates),
        keywords=_keywords(form),
    )
    segments = "segment" in granularities or not words
    reply = Reply(
        response_format,
        segments=segments,
        words=words,
        stream=stream,
        logprobs=with_logprobs,
        languages=task == "transcribe",
    )
    return request, reply


def _listed(form: FormData, name: str) -> list[str]:
    """A list field's values, as the SDKs send it (``name[]``, repeated) or as a hand-written
    form may (``name``, repeated)."""
    values = [v for key in (f"{name}[]", name) for v in form.getlist(key)]
    for value in values:
        if not isinstance(value, str):
            raise InvalidRequest(f"field '{name}[]' must be text, not a file", field=name)
    return values  # type: ignore[return-value]


def _candidate_languages(form: FormData) -> tuple[tuple[str, str], ...]:
    return candidate_languages(_listed(form, "languages"))


def candidate_languages(
    values: Iterable[str], name: str = "languages[]"
) -> tuple[tuple[str, str], ...]:
    """``languages[]``: the languages the audio may be in, each as sent and as its ISO 639-1
    code, once each, in the order sent (blank ones left out).

    Raises:
        UnsupportedLanguage: one is neither a code nor a language's English name.
    """
    found: dict[str, str] = {}
    for raw in values:
        if not raw.strip():
            continue
        found.setdefault(language_code(raw, name), raw)
    return tuple((raw, code) for code, raw in found.items())


def language_code(raw: str, name: str) -> str:
    """The ISO 639-1 code of a language as a client named it in the form field ``name``
    (:func:`language_of`).

    Raises:
        UnsupportedLanguage: neither a code, a tag nor a language's English name.
    """
    code = language_of(raw)
    if code is None:
        raise UnsupportedLanguage(
            f"{name} {raw[:32]!r} is not an ISO 639-1 code (nor a language's English name)",
            field=name.removesuffix("[]"),
        )
    return code


def _keywords(form: FormData) -> tuple[str, ...]:
    return keywords_of(_listed(form, "keywords"))


def keywords_of(values: Iterable[str]) -> tuple[str, ...]:
    """``keywords[]``: words or phrases to listen for, trimmed, once each, in the order sent
    (blank ones left out).

    Raises:
        InvalidRequest: more than :data:`MAX_KEYWORDS`, or one longer than
            :data:`MAX_KEYWORD_CHARS` characters.
    """
    found: dict[str, None] = {}
    for raw in values:
        keyword = " ".join(raw.split())
        if len(keyword) > MAX_KEYWORD_CHARS:
            raise InvalidRequest(
                f"keywords[] {keyword[:32]!r}... is longer than {MAX_KEYWORD_CHARS} characters",
                field="keywords",
            )
        if keyword:
            found[keyword] = None
    if len(found) > MAX_KEYWORDS:
        raise InvalidRequest(
            f"{len(found)} keywords[] sent; at most {MAX_KEYWORDS} are taken", field="keywords"
        )
    return tuple(found)


def _includes_logprobs(form: FormData, response_format: str, stream: bool) -> bool:
    """Whether ``include[]`` asks for ``logprobs``, which OpenAI returns with ``json`` (and in
    stream events) only: the other formats have no field for them."""
    included = _listed(form, "include")
    for item in included:
        if item not in INCLUDES:
            raise InvalidRequest(
                f"include[] {str(item)[:32]!r} is unknown ({', '.join(INCLUDES)})",
                field="include",
            )
    if not included:
        return False
    if not stream and response_format != "json":
        raise InvalidRequest(
            f"include[]=logprobs needs response_format 'json', not {response_format!r}",
            field="include",
        )
    return True


def _flag(raw: str | None, name: str) -> bool:
    """A boolean form field as the SDKs send it (``true``/``false``; absent: false)."""
    value = (raw or "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise InvalidRequest(f"{name} must be true or false, not {value[:32]!r}", field=name)


def _temperature(raw: str | None) -> float | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest("temperature must be a number between 0 and 1", field="temperature")
    return value


class _Exchange:
    """One HTTP request, read as the gateway asks for it: the header, then the form (with
    the file, under the upload limit), then the file's bytes."""

    def __init__(self, request: Request, task: Task, gateway: Gateway) -> None:
        limits = gateway.config.limits
        self.http = request
        self.task = task
        self.max_bytes = limits.max_frame_bytes
        self.max_seconds = limits.max_audio_seconds
        self.timeout = limits.receive_timeout_seconds
        self.reply = Reply()
        self.form: FormData | None = None
        self.body_done = False
        self.events: asyncio.Queue[Segment | None] = asyncio.Queue()
        """What :meth:`OpenAIProtocol._recognise` waits on: segments as they are recognised
        (only for ``stream=true``), and None once the request is over. Unbounded, but holds
        at most one recording's segments (the audio's length bounds it)."""
        self.request_id = ""
        self._received = 0

    async def credentials(self) -> object:
        return bearer_key(self.http)

    async def request(self) -> JobRequest:
        self.form = await self._read_form()
        asked, self.reply = parse_form(self.form, self.task)
        return asked

    async def audio(self) -> bytes:
        assert self.form is not None
        upload = self.form["file"]
        assert isinstance(upload, UploadFile)
        return await upload.read()

    def decode(self, data: bytes) -> tuple[np.ndarray, int]:
        return decode_media(data, self.max_seconds)

    def progress(self, request_id: str) -> OnSegment | None:
        self.request_id = request_id
        return self.events.put_nowait if self.reply.stream else None

    async def _read_form(self) -> FormData:
        content_type = self.http.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise InvalidRequest("the request body must be multipart/form-data")
        length = self.http.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise self._too_large()
        parser = MultiPartParser(
            self.http.headers,
            self._body(),
            max_files=1,
            max_fields=_MAX_FIELDS,
            max_part_size=_MAX_FIELD_BYTES,
        )
        try:
            return await parser.parse()
        except MultiPartException as exc:
            if exc.message.startswith("Part exceeded maximum size"):
                # most likely the audio sent as a text field (a part with no filename)
                raise InvalidRequest(
                    f"a text field is over {_MAX_FIELD_BYTES // 1024} KB; if it is the audio, "
                    f"{_NOT_A_FILE}"
                ) from None
            raise InvalidRequest(f"the multipart body is malformed: {exc.message}") from None
        except BaseException:
            # refused mid-upload (too large, stalled, gone): the parser closes its spooled
            # files only on its own errors
            for upload in getattr(parser, "_files_to_close_on_error", ()):
                upload.close()
            raise

    async def _body(self) -> AsyncIterator[bytes]:
        """The body as it arrives, refused the moment it passes the limit (never buffered
        whole: the parser spools the file to disk past 1 MiB)."""
        while not self.body_done:
            message = await self._receive()
            chunk = message.get("body", b"")
            self._received += len(chunk)
            if self._received > self.max_bytes:
                raise self._too_large()
            self.body_done = not message.get("more_body", False)
            if chunk:
                yield chunk

    async def _receive(self) -> dict[str, Any]:
        try:
            with anyio.fail_after(self.timeout):
                message = await self.http.receive()
        except TimeoutError:
            raise ClientTimeout(f"the request body stalled for {self.timeout:g} s") from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        return message

    def _too_large(self) -> AudioTooLong:
        return _BodyTooLarge(f"the request body is larger than the limit of {self.max_bytes} bytes")

    async def close(self) -> None:
        if self.form is not None:
            await self.form.close()


# --- the response --------------------------------------------------------------------------


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(segments: tuple[Segment, ...], kind: str) -> str:
    """SubRip (``srt``) or WebVTT (``vtt``) cues, one per segment."""
    if kind == "vtt":
        cues = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments]
        return "WEBVTT\n\n" + "\n".join(cues)
    cues = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def _verbose(result: RecordingResult, task: Task, reply: Reply) -> dict[str, Any]:
    transcript = result.transcript
    body: dict[str, Any] = {
        "task": task,
        # transcriptions name the language heard; translations the one written (OpenAI's way)
        "language": "english" if task == "translate" else language_name(transcript.language),
        "duration": round(result.audio_seconds, 3),
        "text": _final_text(result),
        "usage": _usage(result),
    }
    if reply.languages:  # gpt-transcribe's field: every language heard, not the first alone
        body["languages"] = _languages(transcript)
    if reply.segments:
        body["segments"] = [_verbose_segment(i, s) for i, s in enumerate(transcript.segments)]
    if reply.words:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in transcript.words]
    return body


_UNKNOWN_DECODING = Decoding(
    seek=0, tokens=(), temperature=0.0, avg_logprob=0.0, compression_ratio=1.0, no_speech_prob=0.0
)
"""What a segment from a backend without decoding statistics (Google) shows: OpenAI's schema
has the fields, and these values make no client drop the segment."""


def _verbose_segment(number: int, segment: Segment) -> dict[str, Any]:
    decoding = segment.decoding or _UNKNOWN_DECODING
    return {
        "id": number,
        "seek": decoding.seek,
        "start": segment.start,
        "end": segment.end,
        "text": as_whisper_writes(segment.text),
        "tokens": list(decoding.tokens),
        "temperature": decoding.temperature,
        "avg_logprob": decoding.avg_logprob,
        "compression_ratio": decoding.compression_ratio,
        "no_speech_prob": decoding.no_speech_prob,
    }


def logprobs(segments: Iterable[Segment], before: str = "") -> list[dict[str, Any]] | None:
    """OpenAI's ``logprobs`` for ``segments``: a token per word, with the space that parts it
    from the text before (``before``: what precedes the first), so that the tokens joined are
    the text; None when the backend rated no words (as OpenAI's whisper-1 gives none)."""
    tokens: list[dict[str, Any]] = []
    shown, heard = before, False
    for segment in segments:
        heard = heard or bool(segment.text)
        for word in segment.words:
            if word.probability is None:
                continue
            token = separator(shown, word.text) + word.text
            tokens.append(
                {
                    "token": token,
                    "logprob": round(math.log(max(word.probability, _LEAST_PROBABILITY)), 6),
                    "bytes": list(token.encode()),
                }
            )
            shown = word.text
    return tokens if tokens or not heard else None


def _usage(result: RecordingResult) -> dict[str, Any]:
    """OpenAI's usage object for a model billed by audio duration (whisper-1's): the seconds
    the ledger recorded for the request."""
    return {"type": "duration", "seconds": round(result.audio_seconds, 3)}


def _json(result: RecordingResult, reply: Reply) -> dict[str, Any]:
    """The ``json`` answer (and the stream's done event): ``{"text", "logprobs", "usage"}``,
    ``logprobs`` only when asked for and given."""
    body: dict[str, Any] = {"text": _final_text(result)}
    if reply.logprobs and (tokens := logprobs(result.transcript.segments)) is not None:
        body["logprobs"] = tokens
    if reply.languages:
        body["languages"] = _languages(result.transcript)
    body["usage"] = _usage(result)
    return body


def _languages(transcript: Transcript) -> list[dict[str, str]]:
    """OpenAI's ``languages``: those heard, as ``[{"code": ISO 639-1}]``, in the order first
    heard (a recording that changes language has two); empty for a recording without words,
    as OpenAI answers when no language could be heard."""
    if not transcript.text:
        return []
    return [{"code": code} for code in transcript.languages or (transcript.language,)]


def _final_text(result: RecordingResult) -> str:
    """The corrected text when post-processing ran and succeeded, else the recogniser's."""
    return result.corrected.text or result.transcript.text


def render(result: RecordingResult, reply: Reply, task: Task) -> Response:
    """The success response in the format asked for, with the request id in a header."""
    headers = {"X-Request-Id": result.request_id}
    if reply.format == "json":
        return JSONResponse(_json(result, reply), headers=headers)
    if reply.format == "verbose_json":
        return JSONResponse(_verbose(result, task, reply), headers=headers)
    if reply.format == "text":
        return PlainTextResponse(_final_text(result) + "\n", headers=headers)
    media = "text/vtt" if reply.format == "vtt" else "text/plain"
    body = subtitles(result.transcript.segments, reply.format)
    return Response(body, media_type=media, headers=headers)


class OpenAIProtocol:
    """Serves ``/v1/audio/transcriptions``, ``/v1/audio/translations`` and ``/v1/models``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{BASE}/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route(f"{BASE}/audio/translations", self.translations, methods=["POST"]),
            Route(f"{BASE}/models", self.models, methods=["GET"]),
            Route(f"{BASE}/models/{{model:path}}", self.model, methods=["GET"]),
            # last: any other path or method under /v1 gets OpenAI's answer, not a plain 404/405
            *(
                any_method_route(path, self.unknown)
                for path in (
                    f"{BASE}/{{rest:path}}",
                    # the API's paths without /v1: a client whose base URL lacks it is told so
                    "/audio/{rest:path}",
                    "/models",
                    "/models/{rest:path}",
                )
            ),
        ]

    async def transcriptions(self, request: Request) -> Response:
        return await self._recognise(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        return await self._recognise(request, "translate")

    async def _recognise(self, request: Request, task: Task) -> Response:
        exchange = _Exchange(request, task, self.gateway)
        run = asyncio.ensure_future(self.gateway.run_recording(PROTOCOL, exchange))
        run.add_done_callback(lambda _: exchange.events.put_nowait(None))
        try:
            first = await exchange.events.get()
        except BaseException:
            await _finish(run, exchange)
            raise
        if first is not None or (exchange.reply.stream and _succeeded(run)):
            return StreamingResponse(
                self._events(first, run, exchange),
                media_type="text/event-stream",
                headers={
                    "X-Request-Id": exchange.request_id,
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # nginx would hold the events back
                },
                # runs after the last event, or once the client has left mid-stream
                background=BackgroundTask(_finish, run, exchange),
            )
        try:
            result = run.result()
        except SpeechGWError as exc:
            wait = self.gateway.config.limits.busy_retry_after_seconds
            if exchange.body_done:
                return error_response(exc, wait)
            return error_response(exc, wait, body_unread=True)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; the server logged the request
        finally:
            await exchange.close()
        return render(result, exchange.reply, task)

    async def _events(
        self, first: Segment | None, run: asyncio.Future[RecordingResult], exchange: _Exchange
    ) -> AsyncIterator[str]:
        """``stream=true``: a ``transcript.text.delta`` event per segment as it is recognised,
        then ``transcript.text.done`` with the whole text (corrected, with post-processing),
        or an error event in OpenAI's error shape (which the SDKs raise). A client that leaves
        stops the recognition (:func:`_finish`; logged as abandoned, not billed)."""
        segment, shown = first, ""
        while segment is not None:
            event: dict[str, Any] = {"delta": separator(shown, segment.text) + segment.text}
            if exchange.reply.logprobs and (tokens := logprobs([segment], shown)) is not None:
                event["logprobs"] = tokens
            yield _event("transcript.text.delta", event)
            shown = segment.text
            segment = await exchange.events.get()
        try:
            result = run.result()
        except SpeechGWError as exc:
            body = error_body(status_of(exc), exc.message, exc.error)
            yield _event("error", {"type": "error", **body})
            return
        yield _event("transcript.text.done", _json(result, exchange.reply))

    async def models(self, request: Request) -> Response:
        try:
            names = await self._models(request)
        except SpeechGWError as exc:
            return error_response(exc)
        return JSONResponse({"object": "list", "data": [_model(name) for name in names]})

    async def model(self, request: Request) -> Response:
        try:
            names = await self._models(request)
        except SpeechGWError as exc:
            return error_response(exc)
        name = request.path_params["model"]
        if name not in names:
            message = f"model {name[:64]!r} does not exist (known: {', '.join(names)})"
            body = error_body(404, message, "model_not_found", param="model")
            return JSONResponse(body, status_code=404)
        return JSONResponse(_model(name))

    async def unknown(self, request: Request) -> Response:
        """OpenAI's 404 for a path or method it does not serve, such as a trailing slash or a
        GET of ``/v1/audio/transcriptions``: an error its SDKs can show, where starlette would
        send a plain-text 404 or 405 (or redirect a POST that drops its body). The API's paths
        without ``/v1`` (a base URL that lacks it, a common slip) get it too, saying so."""
        path = request.url.path
        message = f"Invalid URL ({request.method} {path[:200]})"
        if not path.startswith(f"{BASE}/"):
            message += f": the OpenAI-compatible API is under {BASE} (a base URL ending in {BASE})"
        return refusal(error_body(404, message, None), 404, request.scope)  # OpenAI: no code

    async def _models(self, request: Request) -> tuple[str, ...]:
        return await self.gateway.models(PROTOCOL, bearer_key(request))


def _event(kind: str, data: dict[str, Any]) -> str:
    """One server-sent event, named as its ``type`` (the SDKs read the data; browsers'
    EventSource dispatches on the name)."""
    payload = json.dumps({"type": kind, **data}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n"


def _succeeded(run: asyncio.Future[Any]) -> bool:
    return run.done() and not run.cancelled() and run.exception() is None


async def _finish(run: asyncio.Future[Any], exchange: _Exchange) -> None:
    """Cancel the request if it is still running (its client left), wait until it has let
    go, and drop the upload's spooled files. A request that has already ended is awaited
    too: its error (the client gone) is then seen, not logged by asyncio as never retrieved."""
    with anyio.CancelScope(shield=True):
        if not run.done():
            run.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await run
        await exchange.close()


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "speechgw"}
