"""Configuration: YAML in, frozen typed dataclasses out, validated once at start.

One generic builder (:func:`build`) turns a mapping into any of the config dataclasses by
reading their type hints, so that every section, and every backend's own options class, gets
the same checks: unknown keys, wrong types, bad choices and numbers out of range (a
:class:`Range` in an ``Annotated`` hint) are a :class:`ConfigError` naming the key path, the
value and what was expected. Relations between keys are checked after the build
(:func:`_check_relations`). The same checks run at start and on every reload. ``${VAR}`` and
``${VAR:-default}`` in string values are replaced from the environment, which is how secrets
stay out of the file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import ssl
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from .errors import ConfigError

__all__ = [
    "AtLeastOne",
    "AuthConfig",
    "BackendConfig",
    "Config",
    "KeyConfig",
    "LimitsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "NonNegative",
    "Positive",
    "PostprocessConfig",
    "Range",
    "RouteMatch",
    "RouteRule",
    "ServerConfig",
    "StoreConfig",
    "StreamingConfig",
    "build",
    "load_config",
    "load_config_file",
]


_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Range:
    """Bounds on a number, written into a field's hint: ``Annotated[int, Range(ge=1)]``."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def check(self, value: float, path: str) -> None:
        """Raises ConfigError: ``limits.rate_limit_per_key: must be > 0, got 0``."""
        low_ok = (self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
        if low_ok and (self.le is None or value <= self.le):
            return
        parts = []
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        raise ConfigError(f"{path}: must be {' and '.join(parts)}, got {value:g}")


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""A number in exponent notation: YAML 1.2 reads ``1e3`` and ``1.0e12`` as numbers, PyYAML
(YAML 1.1) as strings unless the exponent has a sign (``1.0e+12``)."""

Positive = Range(gt=0)
AtLeastOne = Range(ge=1)
NonNegative = Range(ge=0)
Port = Range(ge=0, le=65535)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where and how the server listens."""

    host: str = "0.0.0.0"
    port: Annotated[int, Port] = 8765
    """0: any free port (tests)."""
    certfile: str | None = None
    """PEM certificate: set it (with ``keyfile``) to serve wss:// and https://."""
    keyfile: str | None = None
    websocket_compression: bool = False
    """Allow permessage-deflate. Off by default: deflating audio costs ~10x throughput."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """``auto``: uvloop where it is installed (Linux and macOS), else asyncio's own loop.
    uvloop takes a fifth off the GIL time a live stream costs (bench/gil_budget.py)."""
    keep_alive_seconds: Annotated[float, Positive] = 5.0
    """How long an idle HTTP connection is kept open for its next request (hypercorn's
    default). A proxy or load balancer that keeps its connections to the gateway open for
    reuse must give them up sooner than this (nginx: ``keepalive_timeout`` in the upstream
    block, as the examples do), or raise this above its own idle timeout (AWS ALB: 60 s):
    otherwise it may send a request on a connection the gateway is closing at that moment,
    and its client gets a 502."""
    shutdown_grace_seconds: Annotated[float, NonNegative] = 30.0
    """0: stop at once, cutting off what is in flight."""
    processes: Annotated[int, AtLeastOne] = 1
    """Server processes sharing the port, each a whole gateway with its own models (as the
    replicas of a fleet, on one machine): for a GPU that one interpreter cannot keep busy
    (``speechgw/processes.py``). ``/metrics`` answers for all of them."""
    retain_freed_memory_mib: Annotated[int | None, NonNegative] = 1024
    """glibc: keep up to this much freed memory for reuse instead of returning it to the
    kernel after each request (``speechgw/tuning.py``: it saves CTranslate2 ~53,000 page
    faults per 10 s request). Null: glibc's defaults. Applies to ``speechgw serve``."""
    blas_threads: Annotated[int | None, AtLeastOne] = 1
    """Threads of numpy's BLAS (feature extraction, resampling): one keeps idle BLAS threads
    from spinning on the cores inference uses (``speechgw/tuning.py``). Null: the library's
    default. Applies to ``speechgw serve``."""
    cors_allow_origins: tuple[str, ...] = ()
    """Web pages of these origins (``https://app.example.com``, or ``*`` for any) may call the
    HTTP routes from a browser: CORS, which the OpenAI SDK in a browser needs. Empty: no CORS
    headers, so browsers refuse cross-origin calls. WebSockets are outside CORS (their API key
    is their check)."""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one client may ask of the server."""

    max_frame_bytes: Annotated[int, AtLeastOne] = 64 * 1024 * 1024
    """Largest recording upload: a batch WAV frame (larger ones are refused with 1009) or an
    HTTP request body (413, refused while it is read)."""
    max_audio_seconds: Annotated[float, Positive] = 1800.0
    """Longest recording (batch or HTTP); longer ones get ``audio_too_long``. 30 minutes: a
    meeting's recording, and about what OpenAI's 25 MB upload limit holds of compressed speech
    (until session 22 it was 10 minutes, and a 20-minute podcast was refused). Its float32
    samples are 115 MB; decoding it raised the server's memory by about 300 MB at its peak
    (1.8 GB before the Whisper backend computed its features a block at a time; BENCHMARKS.md,
    "A 29-minute upload")."""
    receive_timeout_seconds: Annotated[float, Positive] = 30.0
    """How long the server waits for a client's next expected message before ``timeout``."""
    send_timeout_seconds: Annotated[float, Positive] = 30.0
    """How long a client with something to read (the sockets' buffers full) may read none of
    it; then its connection is dropped. A client that reads slowly, but reads, is waited for;
    one that stops reading holds nothing longer."""
    max_stream_seconds: Annotated[float | None, Positive] = None
    """Audio one stream may send in all; reaching it, the stream's buffered audio is answered
    and the server closes (1008 "stream too long"). Null: no limit (sessions restart)."""
    stream_idle_seconds: Annotated[float, Positive] = 60.0
    """A stream with no message for this long is closed (1008 "timeout") after its buffered
    audio is recognised and replied to."""
    max_pending_jobs: Annotated[int, AtLeastOne] = 32
    """Batch jobs admitted at once (running or waiting for a backend); more get
    ``server_busy`` instead of an unbounded queue."""
    max_streams: Annotated[int, AtLeastOne] = 64
    """Open streaming connections; more are refused with HTTP 503 before the upgrade."""
    busy_retry_after_seconds: Annotated[int, AtLeastOne] = 5
    """What ``server_busy`` tells clients to wait before retrying."""
    max_connections: Annotated[int, AtLeastOne] = 512
    """Open connections of every protocol together (WebSockets, and HTTP requests in
    progress); more get ``server_busy``."""
    max_connections_per_key: Annotated[int | None, AtLeastOne] = None
    """Open connections per API key name (only when keys are configured); null: no limit."""
    rate_limit_per_key: Annotated[float | None, Positive] = None
    """Requests (batch requests and stream openings) per minute per API key; null: no limit."""
    rate_limit_burst: Annotated[int, AtLeastOne] = 10
    """Requests a key may make at once before the per-minute rate applies."""


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """A named API key. The name is what logs, usage and metrics show; the key never is."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class AuthConfig:
    keys: tuple[KeyConfig, ...] = ()
    env_key_name: str = "server"
    """The name under which ``SERVER_API_KEY`` (from the environment) appears in logs and usage."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where API keys (``speechgw keys``) and the usage ledger live: a SQLite file (one
    gateway), or a PostgreSQL database that a fleet of gateways shares."""

    path: str | None = "speechgw.db"
    """SQLite file; relative paths are relative to the working directory. Null (with no
    ``url``) turns keys-in-store and the usage ledger off."""
    synchronous: Literal["normal", "full"] = "normal"
    """SQLite: ``normal``: a committed row survives the process being killed; ``full``: power
    loss too."""
    url: str | None = None
    """``postgresql://user@host:port/database``: PostgreSQL instead of ``path``, shared by every
    replica (keys, ledger, and the per-key limits of the whole fleet). Usually
    ``${SPEECHGW_STORE_URL}``, so that a password stays out of the file."""
    pool_size: Annotated[int, AtLeastOne] = 8
    """PostgreSQL: connections per replica for key checks and rate limits (the ledger writer and
    the connection-place holder have one each besides)."""
    timeout_seconds: Annotated[float, Positive] = 5.0
    """PostgreSQL: the longest a request waits on the database (connecting, a query, a commit)
    before it is refused with ``server_busy``."""


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One configured backend instance: its registered ``type`` and that type's own options,
    already validated by the backend's options class."""

    name: str
    type: str
    options: Any


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Conditions of a routing rule; an empty tuple matches anything."""

    protocol: tuple[str, ...] = ()
    language: tuple[str, ...] = ()
    task: tuple[Literal["transcribe", "translate"], ...] = ()
    key: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    """Model names a client asks for (the OpenAI API's ``model`` field); the names in all rules
    are the ones clients may send (``GET /v1/models``)."""


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Send jobs that match ``match`` to ``backend``; try ``fallback`` in order if it fails."""

    backend: str
    match: RouteMatch = field(default_factory=RouteMatch)
    fallback: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamingConfig:
    """How the webrtcvad segmenter cuts a live stream into utterances."""

    vad_aggressiveness: Literal[0, 1, 2, 3] = 3
    vad_remove_dc_offset: bool = True
    """webrtcvad judges the stream less a microphone's DC offset (``segmenter.DcBlocker``; the
    audio decoded is left as it came): an offset of 1 % of full scale hid the pauses from
    webrtcvad, and all of a soft speaker's speech. False: it judges the audio as sent."""
    vad_max_gain_db: Annotated[float, NonNegative] = 30.0
    """How much webrtcvad's copy of a quiet stream may be raised (the audio decoded is not
    touched): webrtcvad misses quiet speech, and streams 20 dB quieter than the recordings of
    ../shared/audio lost twice the words (see ``segmenter.VadLevel``). 0: off."""
    frame_ms: Literal[10, 20, 30] = 30
    start_padding_ms: Annotated[int, NonNegative] = 300
    end_padding_ms: Annotated[int, NonNegative] = 300
    end_silence_ms: Annotated[int, Positive] = 500
    """Silence that closes an utterance."""
    min_speech_ms: Annotated[int, NonNegative] = 150
    """Utterances with less voiced audio than this are dropped as noise."""
    max_utterance_seconds: Annotated[float, Positive] = 25.0
    silero_vad_after_seconds: Annotated[float | None, NonNegative] = None
    """Pauses that steady noise hides: from this many seconds into an utterance, Silero VAD
    listens too, and ``silero_vad_silence_ms`` in which it hears no speech ends the utterance
    (webrtcvad hears such noise as speech: the utterance would run to
    ``max_utterance_seconds``); an utterance it listened to and heard less than
    ``min_speech_ms`` of speech in is dropped as noise; after an utterance it ended, it
    listens to the next from its start. About 1.4 ms of CPU per second of audio it listens
    to, on the event loop. None: off (the default: on clean speech it cuts a little finer
    than webrtcvad, and Whisper then misses a few more words)."""
    silero_vad_silence_ms: Annotated[int, Positive] = 1000
    """The silence, to Silero, that ends an utterance it listens to."""
    context_chars: Annotated[int, NonNegative] = 200
    """How much of the stream's previous replies (characters, cut at a word) goes with each
    utterance as its context: a fragment cut off by a pause is then decoded knowing what was
    said before it, as inside a whole recording. 0: each utterance is decoded alone."""
    buffer_seconds: Annotated[float, Positive] = 30.0
    """Audio buffered per connection before back-pressure."""
    fragment_speech_ms: Annotated[int, NonNegative] = 1500
    """An utterance with less voiced speech than this so far is a fragment: it closes only
    after ``fragment_silence_ms`` of silence, so that a speaker pausing mid-sentence ("de |
    grano medio", "one | two | three") is heard as one utterance; 0: off."""
    fragment_silence_ms: Annotated[int, Positive] = 700
    """The pause that ends a fragment (at least ``end_silence_ms``)."""
    interim_interval_ms: Annotated[int, Positive] = 1000
    """For clients that ask for interim results: how often the utterance still being spoken
    is decoded again (when the backend has room; finals always go first)."""
    hesitation_replies: bool = False
    """Whether an utterance whose words are only hesitations ("Um.", "Uh, um.": see
    ``speechgw.text.HESITATIONS``) gets a reply. Off: it gets none and is not billed, as an
    utterance without words: a voice agent would take "Um." for a turn, and Google's
    recogniser leaves hesitations out. Hesitations inside a sentence stay."""
    early_finals: bool = True
    """Start decoding an utterance's final once the pause after it reaches
    ``end_padding_ms``: the audio is then what the final will be decoded from, so when the
    pause goes on to end the utterance its reply is ready (or nearly), up to the rest of the
    pause sooner. Only on backends that do it on idle capacity alone (local models); when the
    speaker goes on instead, that decode was for nothing."""


DEFAULT_CORRECTION_PROMPT = (
    "You correct speech recognition output. Fix spelling, punctuation, capitalisation and "
    "obvious mis-recognitions; keep the language, the wording and the meaning. Answer with the "
    "corrected text only."
)


@dataclass(frozen=True, slots=True)
class PostprocessConfig:
    """Optional LLM correction of transcripts through an OpenAI-compatible chat-completions
    endpoint (vLLM, llama.cpp's server, Ollama, OpenAI)."""

    enabled: bool = False
    """The server default for requests that do not say (the batch ``postprocess`` field)."""
    base_url: str | None = None
    """Up to and including ``/v1``, e.g. ``http://127.0.0.1:11434/v1``; required to use it."""
    model: str | None = None
    api_key: str | None = None
    timeout_seconds: Annotated[float, Positive] = 10.0
    concurrency: Annotated[int, AtLeastOne] = 4
    temperature: Annotated[float, Range(ge=0, le=2)] = 0.0
    prompt: str = DEFAULT_CORRECTION_PROMPT
    prompts: dict[str, str] = field(default_factory=dict)
    """Per-language system prompts (ISO 639-1 code -> prompt); others use ``prompt``."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    port: Annotated[int | None, Range(ge=1, le=65535)] = None
    """Also serve ``/metrics`` on this port (same host), e.g. for a scraper on a private
    network; it stays on the main port too."""
    max_machine_ids: Annotated[int, NonNegative] = 1000
    """Distinct ``machine_id`` label values kept; later ones are counted under ``other``
    (0: every machine counts as ``other``)."""


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line, access-log fields included as typed values."""


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    backends: tuple[BackendConfig, ...] = ()
    routing: tuple[RouteRule, ...] = ()
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


T = TypeVar("T")

# --- loading -------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _FromEnv(str):
    """A string that came from ``${VAR}``: it may stand for a number or a boolean."""


def _substitute(value: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set (use ${{{name}:-x}})")

    return _FromEnv(_ENV_REF.sub(replace, value))


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _describe(typing.get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_describe(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    fail = ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin is Annotated:
        inner, *extras = typing.get_args(tp)
        converted = _convert(value, inner, path)
        if converted is not None:
            for extra in extras:
                if isinstance(extra, Range):
                    extra.check(converted, path)
        return converted
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
        raise fail
    if origin is Literal:
        for choice in typing.get_args(tp):
            if value == choice and type(value) is type(choice):
                return choice
            if isinstance(value, _FromEnv) and str(choice) == value:
                return choice
        raise fail
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise fail
        return {
            _convert(k, key_type, path): _convert(v, value_type, f"{path}.{k}")
            for k, v in value.items()
        }
    if origin is tuple:
        (item,) = (a for a in typing.get_args(tp) if a is not Ellipsis)
        items = value if isinstance(value, list) else [value]
        if value is None or isinstance(value, dict):
            raise fail
        return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(items))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail
        return build(tp, value, path)
    if tp is type(None):
        if value is None:
            return None
        raise fail
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, _FromEnv) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise fail
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, _FromEnv) and re.fullmatch(r"-?\d+", value):
            return int(value)
        raise fail
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, _FromEnv) or (
            isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value)
        ):
            try:
                number = float(value)
            except ValueError:
                raise fail from None
        else:
            raise fail
        if not math.isfinite(number):  # .inf, .nan: every limit here has null (or 0) for off
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise fail
    raise ConfigError(f"{path}: no converter for {tp!r} (a bug in speechgw)")


def build(cls: type[T], mapping: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from ``mapping``, checking every key and value against its hints.

    Raises:
        ConfigError: an unknown key, a missing required key, or a value of the wrong type,
            with the dotted key path (``backends.whisper.beam_size``) in the message.
    """
    mapping = mapping or {}
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name in mapping:
            kwargs[name] = _convert(mapping[name], hints[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: required key is missing")
    built = cls(**kwargs)
    validate = getattr(built, "validate", None)
    if callable(validate):  # what only the options' owner knows (a backend's model path)
        validate(path)
    return built


def load_config(
    mapping: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    backend_options: typing.Callable[[str, str], type] | None = None,
) -> Config:
    """Validate a parsed YAML document into a :class:`Config`.

    Args:
        mapping: the parsed document (None or empty means all defaults).
        env: where ``${VAR}`` is looked up; ``os.environ`` by default.
        backend_options: given a backend's ``type`` and key path, returns its options class.
            The server passes the backend registry's lookup; without it options stay unchecked.
    """
    env = os.environ if env is None else env
    raw = _substitute(dict(mapping or {}), "", env)
    if not isinstance(raw, dict):
        raise ConfigError("the config file must hold a mapping at the top level")
    backends_raw = raw.pop("backends", None) or {}
    if not isinstance(backends_raw, dict):
        raise ConfigError("backends: expected a mapping of backend name to its settings")
    backends = []
    for name, settings in backends_raw.items():
        path = f"backends.{name}"
        if not isinstance(name, str):
            raise ConfigError(
                f"backends: a backend name must be a string, got {name!r} (YAML reads a bare "
                "null, true or a number as such: quote it)"
            )
        if settings is not None and not isinstance(settings, dict):
            raise ConfigError(
                f"{path}: expected a mapping of the backend's settings (type: whisper, "
                f"model: ...), got {settings!r}"
            )
        settings = dict(settings or {})
        kind = settings.pop("type", name)
        if not isinstance(kind, str):
            raise ConfigError(
                f"{path}.type: expected a backend type name such as whisper, google or "
                f"scripted, got {kind!r}"
            )
        options = settings
        if backend_options is not None:
            options = build(backend_options(kind, f"{path}.type"), settings, path)
        backends.append(BackendConfig(name=str(name), type=kind, options=options))
    streaming = raw.get("streaming")
    if isinstance(streaming, dict) and "session_limit_seconds" in streaming:
        streaming = raw["streaming"] = dict(streaming)
        del streaming["session_limit_seconds"]
        _LOGGER.warning(
            "streaming.session_limit_seconds has no effect and can be removed: utterances are "
            "recognised one by one, so no recognition session needs restarting"
        )
    config = build(Config, raw)
    config = dataclasses.replace(config, backends=tuple(backends))
    _check_routing(config)
    _check_relations(config)
    return config


_HTTP_URL = re.compile(r"https?://[^/\s?#]+(/\S*)?$", re.IGNORECASE)
"""An endpoint's base URL: http(s), a host, an optional path (urllib would open file:// too,
and take "localhost:11434/v1" for an unknown scheme on every request)."""

_ORIGIN = re.compile(r"https?://[^/\s?#@]+", re.IGNORECASE)
"""An Origin header's value: scheme, host and optional port, nothing after."""


def _check_relations(config: Config) -> None:
    """What no single key's range can say."""
    server = config.server
    if (server.certfile is None) != (server.keyfile is None):
        raise ConfigError("server.certfile and server.keyfile: set both (for TLS) or neither")
    if server.certfile is not None and server.keyfile is not None:
        _check_tls_files(server.certfile, server.keyfile)
    if config.metrics.port is not None and config.metrics.port == server.port:
        raise ConfigError(
            f"metrics.port: {config.metrics.port} is server.port already (/metrics is served "
            "there anyway); pick another port or null"
        )
    for i, origin in enumerate(server.cors_allow_origins):
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"server.cors_allow_origins[{i}]: {origin!r} is not an origin: "
                "scheme://host[:port] as a browser sends it (no path, no trailing slash), "
                "or '*' for any"
            )
    streaming = config.streaming
    if streaming.min_speech_ms > streaming.max_utterance_seconds * 1000:
        raise ConfigError(
            f"streaming.min_speech_ms: {streaming.min_speech_ms} is longer than "
            f"streaming.max_utterance_seconds ({streaming.max_utterance_seconds:g} s): no "
            "utterance could ever be long enough"
        )
    after = streaming.silero_vad_after_seconds
    if after is not None and after >= streaming.max_utterance_seconds:
        raise ConfigError(
            f"streaming.silero_vad_after_seconds: {after:g} is not less than "
            f"streaming.max_utterance_seconds ({streaming.max_utterance_seconds:g} s): no "
            "utterance would run long enough for Silero to listen"
        )
    base_url = config.postprocess.base_url
    if base_url is not None and not _HTTP_URL.match(base_url):
        raise ConfigError(
            f"postprocess.base_url: must be an http:// or https:// URL up to /v1 "
            f"(http://127.0.0.1:11434/v1), got {base_url!r}"
        )
    url = config.store.url
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"store.url: must be a postgresql:// URL, got {url.split('://')[0]!r}://... "
            "(a SQLite file is store.path)"
        )
    limits = config.limits
    per_key = limits.max_connections_per_key
    if per_key is not None and per_key > limits.max_connections:
        raise ConfigError(
            f"limits.max_connections_per_key: {per_key} is more than limits.max_connections "
            f"({limits.max_connections}): it could never apply"
        )


def _check_tls_files(certfile: str, keyfile: str) -> None:
    """Load the certificate and key as the server will: a missing file, a key of another
    certificate or an encrypted key (OpenSSL would ask for its password on the terminal) is
    a config error here, not a traceback or a prompt once the models are loaded."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile, password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, ssl.SSLError) and _is_encrypted(keyfile):
            why = "the key is encrypted; give the server an unencrypted key readable only by it"
        raise ConfigError(
            f"server.certfile and server.keyfile: cannot load {certfile!r} with {keyfile!r}: {why}"
        ) from None


def _is_encrypted(keyfile: str) -> bool:
    try:
        with open(keyfile, "rb") as key:
            return b"ENCRYPTED" in key.read(4096)
    except OSError:
        return False


def _check_routing(config: Config) -> None:
    names = {b.name for b in config.backends}
    if config.backends and not config.routing:
        raise ConfigError("routing: at least one rule is needed (for example `- backend: NAME`)")
    for i, rule in enumerate(config.routing):
        for j, name in enumerate((rule.backend, *rule.fallback)):
            if name not in names:
                where = f"routing[{i}].backend" if j == 0 else f"routing[{i}].fallback[{j - 1}]"
                known = ", ".join(sorted(names)) or "none"
                raise ConfigError(f"{where}: no backend named {name!r} (configured: {known})")


class _KeyGivenTwice(yaml.YAMLError):
    """A mapping of the config file names a key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    PyYAML keeps the last and drops the first without a word: a ``limits:`` section added at
    the end of the file would silently undo every limit set in the one above it.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *defaults`` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error says so
                continue
            if first is not None:
                raise _KeyGivenTwice(
                    f"line {line}: {key!r} is given twice in one mapping (first on line "
                    f"{first}); only the later would count: give it once"
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config_file(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    backend_options: typing.Callable[[str, str], type] | None = None,
) -> Config:
    """Read and validate a YAML config file.

    Raises:
        ConfigError: the file is missing or unreadable, is not valid YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML text file (byte {exc.start} is not UTF-8); is it the right file?"
        ) from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except _KeyGivenTwice as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if document is not None and not isinstance(document, dict):
        raise ConfigError(f"{path}: the config file must hold a mapping at the top level")
    try:
        return load_config(document, env, backend_options)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
