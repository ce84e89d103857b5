"""A Realtime transcription session's settings (:class:`Settings`) and the parser of the
``session.update`` event that changes them (:func:`updated`): the wire's field names, types,
ranges and OpenAI's error codes for each, apart from the session's events
(:mod:`.realtime`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from speechgw.audio import check_rate
from speechgw.errors import InvalidRequest, SpeechGWError
from speechgw.turns import OnSpeech, TurnTaking

from .openai import candidate_languages, keywords_of, language_code

__all__ = ["LOGPROBS", "SESSION_FIELD", "EventError", "Settings", "updated"]

DEFAULT_RATE = 24000
"""OpenAI's one rate for ``audio/pcm``; other rates the gateway takes are accepted too."""
G711_RATE = 8000
FORMATS = {"audio/pcm": None, "audio/pcmu": "mu-law", "audio/pcma": "A-law"}
"""The ``audio.input.format`` types, and the G.711 law of each companded one."""
LOGPROBS = "item.input_audio_transcription.logprobs"
"""The one ``include`` a transcription session takes."""
SESSION_FIELD = "session.audio.input"
"""Where the settings live in ``session.update``: the start of each error's ``param``."""
MAX_SILENCE_MS = 10_000
MAX_PREFIX_MS = 5_000


class EventError(InvalidRequest):
    """A client event that cannot be taken, with OpenAI's ``code`` and ``param`` for it."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message, field=param)
        self.code = code


@dataclasses.dataclass
class Settings:
    """A transcription session's configuration, as ``session.update`` sets it."""

    format: str = "audio/pcm"
    rate: int = DEFAULT_RATE
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    keywords: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    turn_detection: dict[str, Any] | None = dataclasses.field(
        default_factory=lambda: {"type": "server_vad"}
    )
    noise_reduction: dict[str, Any] | None = None
    include: tuple[str, ...] = ()

    @property
    def law(self) -> str | None:
        """The G.711 law the audio is companded with; None: linear PCM."""
        return FORMATS[self.format]

    @property
    def client_ends_turns(self) -> bool:
        return self.turn_detection is None

    def describe(self, session_id: str, padding_ms: int, silence_ms: int) -> dict[str, Any]:
        """The session object of ``session.created`` / ``session.updated``: what is in effect
        (the server's own pause and lead-in where the client set none)."""
        audio_format: dict[str, Any] = {"type": self.format}
        if self.format == "audio/pcm":
            audio_format["rate"] = self.rate
        transcription: dict[str, Any] = {"model": self.model, "language": self.language}
        if self.prompt is not None:
            transcription["prompt"] = self.prompt
        if self.keywords:
            transcription["keywords"] = list(self.keywords)
        if self.languages:
            transcription["languages"] = list(self.languages)
        turn = None
        if self.turn_detection is not None:
            turn = {
                "threshold": 0.5,
                "prefix_padding_ms": padding_ms,
                "silence_duration_ms": silence_ms,
                **self.turn_detection,
            }
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "audio": {
                "input": {
                    "format": audio_format,
                    "transcription": transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": turn,
                }
            },
            "include": list(self.include),
        }

    def turns(self, on_speech: OnSpeech) -> TurnTaking:
        turn = self.turn_detection or {}
        return TurnTaking(
            on_speech,
            client_ends_turns=self.client_ends_turns,
            end_silence_ms=turn.get("silence_duration_ms"),
            start_padding_ms=turn.get("prefix_padding_ms"),
        )


def updated(settings: Settings, session: Any) -> Settings:
    """``settings`` with a ``session.update``'s ``session`` applied: only the fields present
    change (``null`` turns turn detection off, as OpenAI's).

    Raises:
        EventError: not a transcription session, or a field of the wrong type or value.
    """
    if not isinstance(session, dict):
        raise EventError("'session' must be an object", "invalid_type", "session")
    kind = session.get("type")
    if kind != "transcription":
        raise EventError(
            f"session.type {str(kind)[:32]!r} is not served here: this gateway serves "
            "transcription sessions (session.type 'transcription', or connect with "
            "?intent=transcription)",
            "invalid_value",
            "session.type",
        )
    new = dataclasses.replace(settings)
    include = session.get("include")
    if include is not None:
        if not isinstance(include, list) or any(item != LOGPROBS for item in include):
            raise EventError(
                f"session.include may hold {LOGPROBS!r} only", "invalid_value", "session.include"
            )
        new.include = tuple(dict.fromkeys(include))
    audio = _object(session, "audio", "session.audio")
    given = _object(audio, "input", "session.audio.input")
    if "format" in given:
        new.format, new.rate = _format(given["format"])
    if "noise_reduction" in given:
        reduction = given["noise_reduction"]
        if reduction is not None and not isinstance(reduction, dict):
            raise EventError(
                "noise_reduction must be an object or null",
                "invalid_type",
                f"{SESSION_FIELD}.noise_reduction",
            )
        new.noise_reduction = reduction
    if "transcription" in given:
        _transcription(new, given["transcription"])
    if "turn_detection" in given:
        new.turn_detection = _turn_detection(given["turn_detection"])
    return new


def _object(parent: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    value = parent.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError(f"'{path}' must be an object", "invalid_type", path)
    return value


def _format(given: Any) -> tuple[str, int]:
    param = f"{SESSION_FIELD}.format"
    if not isinstance(given, dict):
        raise EventError(
            "format must be an object such as {'type': 'audio/pcm', 'rate': 24000}",
            "invalid_type",
            param,
        )
    kind = given.get("type", "audio/pcm")
    if kind not in FORMATS:
        raise EventError(
            f"format.type {str(kind)[:32]!r} is not one of {', '.join(FORMATS)}",
            "invalid_value",
            f"{param}.type",
        )
    if kind != "audio/pcm":
        return kind, G711_RATE
    rate = given.get("rate", DEFAULT_RATE)
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise EventError(
            "format.rate must be an integer number of Hz", "invalid_type", f"{param}.rate"
        )
    try:
        check_rate(rate, "format.rate")
    except SpeechGWError as exc:
        raise EventError(exc.message, "invalid_value", f"{param}.rate") from None
    return kind, rate


def _transcription(settings: Settings, given: Any) -> None:
    param = f"{SESSION_FIELD}.transcription"
    if given is None:  # OpenAI's "off": a transcription session transcribes all the same
        settings.model = settings.language = settings.prompt = None
        settings.keywords = settings.languages = ()
        return
    if not isinstance(given, dict):
        raise EventError("transcription must be an object", "invalid_type", param)
    for name in ("model", "language", "prompt"):
        if name in given and given[name] is not None and not isinstance(given[name], str):
            raise EventError(
                f"transcription.{name} must be a string", "invalid_type", f"{param}.{name}"
            )
    if "model" in given:
        settings.model = given["model"] or None
    if "language" in given:
        raw = given["language"]
        settings.language = None
        if raw:
            settings.language = _hinted(lambda: language_code(raw, "language"), param)
    if "prompt" in given:
        settings.prompt = given["prompt"] or None
    for name in ("keywords", "languages"):
        if name not in given:
            continue
        values = given[name] or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise EventError(
                f"transcription.{name} must be a list of strings", "invalid_type", f"{param}.{name}"
            )
        if name == "keywords":
            settings.keywords = _hinted(lambda v=values: keywords_of(v), param)
        else:
            found = _hinted(lambda v=values: candidate_languages(v, "languages"), param)
            settings.languages = tuple(code for _, code in found)


def _hinted(parse: Any, param: str) -> Any:
    """Run one of the HTTP API's field parsers, its error said with this event's param."""
    try:
        return parse()
    except SpeechGWError as exc:
        field = exc.field or ""
        raise EventError(exc.message, exc.error, f"{param}.{field}".rstrip(".")) from None


def _turn_detection(given: Any) -> dict[str, Any] | None:
    param = f"{SESSION_FIELD}.turn_detection"
    if given is None:
        return None
    if not isinstance(given, dict):
        raise EventError("turn_detection must be an object or null", "invalid_type", param)
    kind = given.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise EventError(
            f"turn_detection.type {str(kind)[:32]!r} is not server_vad or semantic_vad",
            "invalid_value",
            f"{param}.type",
        )
    turn: dict[str, Any] = {"type": kind}
    for name, most in (
        ("silence_duration_ms", MAX_SILENCE_MS),
        ("prefix_padding_ms", MAX_PREFIX_MS),
    ):
        value = given.get(name)
        if value is None or kind != "server_vad":
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        least = 1 if name == "silence_duration_ms" else 0
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
            raise EventError(
                f"turn_detection.{name} must be a whole number of ms from {least} to {most}",
                "invalid_value",
                f"{param}.{name}",
            )
        turn[name] = value
    threshold = given.get("threshold")
    if threshold is not None:
        if (
            not isinstance(threshold, int | float)
            or isinstance(threshold, bool)
            or not (0 <= threshold <= 1)
        ):
            raise EventError(
                "turn_detection.threshold must be a number from 0 to 1",
                "invalid_value",
                f"{param}.threshold",
            )
        turn["threshold"] = threshold
    return turn
