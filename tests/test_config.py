"""Config validation and routing, without a server."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from speechgw.backend import Backend
from speechgw.config import load_config, load_config_file
from speechgw.errors import ConfigError, UnsupportedLanguage, UnsupportedTask
from speechgw.jobs import Caller, JobSpec
from speechgw.loading import backend_options
from speechgw.router import Router
from tests.certificates import self_signed

REPO = Path(__file__).resolve().parents[1]


def test_shipped_default_config_is_valid_and_uses_the_multilingual_model() -> None:
    config = load_config_file(
        REPO / "config" / "speechgw.yaml", env={}, backend_options=backend_options
    )
    (whisper,) = config.backends
    assert whisper.type == "whisper" and whisper.options.model == "base"
    assert config.server.port == 8765
    assert config.server.websocket_compression is False


@pytest.mark.parametrize(
    "path", sorted((REPO / "config" / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_configs_are_valid(path: Path) -> None:
    config = load_config_file(path, env={}, backend_options=backend_options)
    assert config.backends and config.routing


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"server": {"prot": 1}}, "server.prot: unknown key"),
        ({"server": {"port": "eighty"}}, "server.port: expected an integer, got 'eighty'"),
        ({"limits": {"max_audio_seconds": True}}, "limits.max_audio_seconds: expected a number"),
        ({"streaming": {"frame_ms": 25}}, "streaming.frame_ms: expected one of 10, 20, 30"),
        ({"backends": {"w": {"type": "whisper", "beam": 5}}}, "backends.w.beam: unknown key"),
        (
            {"backends": {"w": {"type": "whisper", "device": "tpu"}}},
            "backends.w.device: expected one of 'auto', 'cpu', 'cuda', got 'tpu'",
        ),
        ({"backends": {"w": {"type": "kaldi"}}}, "backends.w.type: unknown backend type 'kaldi'"),
        ({"backends": {"w": {"type": None}}}, "expected a backend type name such as whisper"),
        # "backends: {whisper: whisper}", or a list under the name: a TypeError before
        ({"backends": {"w": "whisper"}}, "backends.w: expected a mapping of the backend's"),
        ({"backends": {"w": ["type", "whisper"]}}, "backends.w: expected a mapping of the"),
        (
            {"backends": {"w": {"type": "scripted"}}, "routing": [{"backend": "x"}]},
            "routing[0].backend: no backend named 'x'",
        ),
        ({"backends": {"w": {"type": "scripted"}}}, "routing: at least one rule"),
        ({"auth": {"keys": [{"name": "a"}]}}, "auth.keys[0].key: required key is missing"),
        (
            {"auth": {"keys": [{"name": "a", "key": "${NOT_SET}"}]}},
            "auth.keys[0].key: environment variable NOT_SET is not set",
        ),
        (
            {
                "backends": {"w": {"type": "scripted"}},
                "routing": [{"backend": "w", "match": {"task": "summarise"}}],
            },
            "routing[0].match.task[0]: expected one of",
        ),
    ],
)
def test_invalid_config_names_the_key_path(document, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(document, env={}, backend_options=backend_options)
    assert message in str(caught.value)


def _key_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a parsed YAML document, the document itself first."""
    found = [prefix]
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        found += _key_paths(value, (*prefix, key))
    return found


ANY_YAML_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_value_anywhere_in_the_shipped_config_is_valid_or_a_config_error(data) -> None:
    """What an admin's edit can do to the shipped file: each key's value replaced by any YAML
    value. The server must start or say which key is wrong, never show a traceback."""
    document = yaml.safe_load((REPO / "config" / "speechgw.yaml").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_key_paths(document)[1:]))
        parent = document
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = data.draw(ANY_YAML_VALUE)
    with contextlib.suppress(ConfigError):
        load_config(document, env={}, backend_options=backend_options)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        # int(inf * 16000) in the decoder made every compressed upload a 500
        ("limits:\n  max_audio_seconds: .inf\n", "max_audio_seconds: must be a finite number"),
        ("limits:\n  stream_idle_seconds: .nan\n", "stream_idle_seconds: must be a finite"),
        ("server:\n  shutdown_grace_seconds: -.inf\n", "must be a finite number, got -inf"),
    ],
)
def test_infinite_and_nan_numbers_are_refused(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(yaml.safe_load(yaml_text), env={})


def test_numbers_in_exponent_notation_are_numbers() -> None:
    """PyYAML (YAML 1.1) reads ``1.5e3`` as a string; YAML 1.2 and people read a number."""
    document = yaml.safe_load("limits:\n  max_audio_seconds: 1.5e3\n  stream_idle_seconds: 9E1\n")
    assert document["limits"]["max_audio_seconds"] == "1.5e3"  # what PyYAML gives
    limits = load_config(document, env={}).limits
    assert (limits.max_audio_seconds, limits.stream_idle_seconds) == (1500.0, 90.0)


def test_environment_substitution_with_defaults_and_types() -> None:
    env = {"PORT": "9000", "KEY": "k-123", "COMPRESS": "true"}
    config = load_config(
        {
            "server": {
                "port": "${PORT}",
                "host": "${HOST:-127.0.0.1}",
                "websocket_compression": "${COMPRESS}",
            },
            "auth": {"keys": [{"name": "ops", "key": "${KEY}"}]},
        },
        env=env,
    )
    assert config.server.port == 9000 and config.server.host == "127.0.0.1"
    assert config.server.websocket_compression is True
    assert config.auth.keys[0].key == "k-123"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "speechgw", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("server:\n  port: [1]\n", "server.port: expected an integer"),
        ("limits:\n  max_audio_secs: 5\n", "limits.max_audio_secs: unknown key"),
        ("server: [oops\n", "not valid YAML"),
    ],
)
def test_serve_refuses_a_bad_config_without_a_traceback(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_path_naming_a_binary_file_is_refused_in_words(tmp_path: Path) -> None:
    """``--config talk.wav`` (a slip of the shell's completion): a UnicodeDecodeError before."""
    path = tmp_path / "talk.wav"
    path.write_bytes(b"RIFF\xf6\xfe\x00\x00WAVEfmt ")
    for command in ("serve", "check"):
        result = run_cli(command, "--config", str(path))
        assert result.returncode == 2
        assert "talk.wav: not a YAML text file (byte 4 is not UTF-8)" in result.stderr
        assert "Traceback" not in result.stderr


def test_serve_refuses_a_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml: cannot read the config file" in result.stderr


class _Fake(Backend):
    def __init__(self, name: str, languages: set[str] | None, tasks: set[str]) -> None:
        super().__init__(name, None)
        from speechgw.backend import Capabilities

        self._caps = Capabilities(frozenset(languages) if languages else None, frozenset(tasks))

    @property
    def capabilities(self):
        return self._caps

    async def transcribe(self, audio, spec):  # pragma: no cover - routing only
        raise NotImplementedError


def _spec(
    language: str = "en", task: str = "transcribe", protocol: str = "batch", key: str = "anonymous"
) -> JobSpec:
    return JobSpec(language=language, task=task, protocol=protocol, caller=Caller(key_name=key))


def test_router_rules_match_in_order_and_fall_through_on_capability() -> None:
    english = _Fake("english", {"en"}, {"transcribe"})
    cloud = _Fake("cloud", {"en", "de", "bg"}, {"transcribe"})
    local = _Fake("local", None, {"transcribe", "translate"})
    config = load_config(
        {
            "backends": {
                "english": {"type": "scripted"},
                "cloud": {"type": "scripted"},
                "local": {"type": "scripted"},
            },
            "routing": [
                {"match": {"key": "vip"}, "backend": "cloud"},
                {
                    "match": {"protocol": "streaming", "language": ["de", "bg"]},
                    "backend": "cloud",
                    "fallback": ["local"],
                },
                {"match": {"language": "en"}, "backend": "english"},
                {"backend": "local"},
            ],
        },
        env={},
        backend_options=backend_options,
    )
    router = Router(config.routing, {"english": english, "cloud": cloud, "local": local})
    names = lambda spec: [b.name for b in router.route(spec)]  # noqa: E731
    assert names(_spec("de", protocol="streaming")) == ["cloud", "local"]
    assert names(_spec("de", protocol="batch")) == ["local"]
    assert names(_spec("en")) == ["english"]
    assert names(_spec("en", task="translate")) == ["local"]  # english cannot translate
    assert names(_spec("bg", key="vip")) == ["cloud"]
    assert names(_spec("bg", key="vip", task="translate")) == ["local"]
    assert names(_spec("ja")) == ["local"]


def test_router_says_which_part_is_unsupported() -> None:
    english = _Fake("english", {"en"}, {"transcribe"})
    config = load_config(
        {"backends": {"english": {"type": "scripted"}}, "routing": [{"backend": "english"}]},
        env={},
        backend_options=backend_options,
    )
    router = Router(config.routing, {"english": english})
    with pytest.raises(UnsupportedTask):
        router.route(_spec("en", task="translate"))
    with pytest.raises(UnsupportedLanguage):
        router.route(_spec("de"))


def test_a_file_without_backends_gets_the_embedded_default(tmp_path: Path) -> None:
    from speechgw.loading import load_app_config

    path = tmp_path / "only-limits.yaml"
    path.write_text("limits:\n  max_audio_seconds: 30\n")
    config = load_app_config(str(path), env={})  # used at start and on SIGHUP alike
    assert [b.options.model for b in config.backends] == ["base"]
    assert config.limits.max_audio_seconds == 30


LIMITS_AT_ZERO_OR_BELOW = [
    ("limits", "max_frame_bytes", 0, "must be >= 1"),
    ("limits", "max_audio_seconds", 0, "must be > 0"),
    ("limits", "receive_timeout_seconds", -1, "must be > 0"),
    ("limits", "max_stream_seconds", 0, "must be > 0"),
    ("limits", "stream_idle_seconds", 0, "must be > 0"),
    ("limits", "max_pending_jobs", -3, "must be >= 1"),
    ("limits", "max_streams", 0, "must be >= 1"),
    ("limits", "busy_retry_after_seconds", 0, "must be >= 1"),
    ("limits", "max_connections", 0, "must be >= 1"),
    ("limits", "max_connections_per_key", 0, "must be >= 1"),
    ("limits", "rate_limit_per_key", 0, "must be > 0"),
    ("limits", "rate_limit_burst", 0, "must be >= 1"),
    ("server", "port", -1, "must be >= 0 and <= 65535"),
    ("server", "shutdown_grace_seconds", -1, "must be >= 0"),
    ("server", "retain_freed_memory_mib", -1, "must be >= 0"),
    ("server", "blas_threads", 0, "must be >= 1"),
    ("server", "processes", 0, "must be >= 1"),
    ("streaming", "end_silence_ms", 0, "must be > 0"),
    ("streaming", "start_padding_ms", -30, "must be >= 0"),
    ("streaming", "max_utterance_seconds", 0, "must be > 0"),
    ("streaming", "buffer_seconds", 0, "must be > 0"),
    ("postprocess", "concurrency", 0, "must be >= 1"),
    ("postprocess", "timeout_seconds", 0, "must be > 0"),
    ("postprocess", "temperature", 3, "must be >= 0 and <= 2"),
    ("metrics", "port", 0, "must be >= 1 and <= 65535"),
    ("metrics", "max_machine_ids", -1, "must be >= 0"),
]


@pytest.mark.parametrize(
    ("section", "key", "value", "rule"),
    LIMITS_AT_ZERO_OR_BELOW,
    ids=[f"{s}.{k}" for s, k, _, _ in LIMITS_AT_ZERO_OR_BELOW],
)
def test_a_number_out_of_range_is_refused_with_its_key_path(
    section: str, key: str, value: int, rule: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({section: {key: value}}, env={})
    assert str(caught.value) == f"{section}.{key}: {rule}, got {value}"


def test_every_limit_at_zero_in_one_file_is_refused_at_start(tmp_path: Path) -> None:
    """The file an admin might write to "turn limits off": refused, naming the first key."""
    path = tmp_path / "zeros.yaml"
    keys = [k for s, k, _, _ in LIMITS_AT_ZERO_OR_BELOW if s == "limits"]
    path.write_text("limits:\n" + "".join(f"  {k}: 0\n" for k in keys))
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert "limits.max_frame_bytes: must be >= 1, got 0" in result.stderr


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"type": "whisper", "beam_size": 0}, "backends.b.beam_size: must be >= 1"),
        ({"type": "whisper", "concurrency": 0}, "backends.b.concurrency: must be >= 1"),
        ({"type": "whisper", "cpu_threads": -1}, "backends.b.cpu_threads: must be >= 0"),
        # each of these slips started the server and then aborted it, crashed it without a
        # word, or let one request take minutes and gigabytes (beam search 100000 wide)
        (
            {"type": "whisper", "concurrency": 100_000},
            "backends.b.concurrency: must be >= 1 and <= 256, got 100000",
        ),
        (
            {"type": "whisper", "cpu_threads": 100_000},
            "backends.b.cpu_threads: must be >= 0 and <= 1024, got 100000",
        ),
        (
            {"type": "whisper", "beam_size": 100_000},
            "backends.b.beam_size: must be >= 1 and <= 64, got 100000",
        ),
        (
            {"type": "whisper", "compute_type": "int4"},
            "backends.b.compute_type: expected one of 'auto', 'default', 'int8'",
        ),
        (
            {"type": "whisper", "device": "cpu", "compute_type": "float16"},
            "backends.b.compute_type: float16 is not computed on this CPU; it takes",
        ),
        (
            {"type": "whisper", "utterance_no_speech_prob": 1.5},
            "backends.b.utterance_no_speech_prob: must be >= 0 and <= 1, got 1.5",
        ),
        (
            {"type": "google", "session_seconds": 300},
            "backends.b.session_seconds: must be > 0 and <= 265, got 300",
        ),
        ({"type": "google", "backoff_seconds": 0}, "backends.b.backoff_seconds: must be > 0"),
        ({"type": "scripted", "delay_seconds": -1}, "backends.b.delay_seconds: must be >= 0"),
    ],
)
def test_backend_options_out_of_range_are_refused(options: dict, rule: str) -> None:
    document = {"backends": {"b": options}, "routing": [{"backend": "b"}]}
    with pytest.raises(ConfigError) as caught:
        load_config(document, env={}, backend_options=backend_options)
    assert rule in str(caught.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"server": {"certfile": "c.pem"}}, "server.certfile and server.keyfile: set both"),
        ({"metrics": {"port": 8765}}, "metrics.port: 8765 is server.port already"),
        (
            {"server": {"cors_allow_origins": ["*", "https://app.example.com/"]}},
            "server.cors_allow_origins[1]: 'https://app.example.com/' is not an origin",
        ),
        ({"server": {"cors_allow_origins": ["app.example.com"]}}, "no path, no trailing slash"),
        (
            {"streaming": {"min_speech_ms": 3000, "max_utterance_seconds": 2}},
            "streaming.min_speech_ms: 3000 is longer than streaming.max_utterance_seconds",
        ),
        (
            {"streaming": {"silero_vad_after_seconds": 25}},
            "streaming.silero_vad_after_seconds: 25 is not less than "
            "streaming.max_utterance_seconds (25 s)",
        ),
        (
            {"limits": {"max_connections": 10, "max_connections_per_key": 11}},
            "limits.max_connections_per_key: 11 is more than limits.max_connections (10)",
        ),
        (
            {"postprocess": {"base_url": "localhost:11434/v1", "model": "m"}},
            "postprocess.base_url: must be an http:// or https:// URL up to /v1",
        ),
        ({"postprocess": {"base_url": "file:///etc/v1"}}, "postprocess.base_url: must be an"),
    ],
)
def test_relations_between_keys_are_checked(document: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(document, env={})
    assert message in str(caught.value)


def test_tls_files_that_would_fail_at_start_are_config_errors(tmp_path: Path) -> None:
    """A missing file, a key of another certificate or an encrypted key (OpenSSL would ask for
    its password on the terminal) used to surface as a traceback after the models loaded."""
    cert, key = self_signed(tmp_path)
    _, other_key = self_signed(tmp_path, name="other")
    locked_cert, locked_key = self_signed(tmp_path, name="locked", password="secret")
    load_config({"server": {"certfile": str(cert), "keyfile": str(key)}}, env={})
    cases = [
        (str(tmp_path / "nope.pem"), str(key), "No such file or directory"),
        (str(cert), str(other_key), "key values mismatch"),
        (str(locked_cert), str(locked_key), "the key is encrypted"),
    ]
    for certfile, keyfile, why in cases:
        with pytest.raises(ConfigError) as caught:
            load_config({"server": {"certfile": certfile, "keyfile": keyfile}}, env={})
        message = str(caught.value)
        assert message.startswith("server.certfile and server.keyfile: cannot load"), message
        assert why in message, message


def test_check_says_what_a_config_sets_up_without_starting_it() -> None:
    result = run_cli("check", "--config", "config/examples/per-language.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "config/examples/per-language.yaml: valid"
    assert "backend english: whisper (model=tiny.en)" in lines
    assert "route 1: language=en task=transcribe -> english (fallback: multi)" in lines
    assert "route 3: any job -> multi" in lines


def test_check_refuses_what_serve_would_and_hides_the_store_password(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  max_audio_secs: 5\n")
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "limits.max_audio_secs: unknown key" in result.stderr
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("store:\n  url: postgresql://gw:s3cret@db.internal:5432/speechgw\n")
    result = run_cli("check", "--config", str(fleet))
    assert result.returncode == 0, result.stderr
    assert "store: PostgreSQL postgresql://gw:***@db.internal:5432/speechgw" in result.stdout
    assert "s3cret" not in result.stdout


def test_a_store_path_that_cannot_be_written_is_refused_in_words(tmp_path: Path) -> None:
    """`check` says so without creating anything; serve, keys and usage say so without a
    traceback (a folder the service's user may not write is the usual cause)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tmp_path / "store.yaml"
    config.write_text(f"store:\n  path: {blocker}/ledger/speechgw.db\n")
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 2 and not checked.stdout and "Traceback" not in checked.stderr
    assert f"{blocker}/ledger/speechgw.db cannot be created: {blocker} is not a folder" in (
        checked.stderr
    )
    for command in (["serve", "--port", "0"], ["keys", "list"], ["usage"]):
        result = run_cli(command[0], "--config", str(config), *command[1:])
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"cannot open the SQLite file {blocker}/ledger/speechgw.db" in result.stderr
    assert blocker.read_text() == "not a folder"
    # folders yet to be made are fine (check creates nothing), and so is an existing ledger
    fresh = tmp_path / "new" / "folders" / "ledger.db"
    config.write_text(f"store:\n  path: {fresh}\n")
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 0 and f"store: SQLite {fresh}" in checked.stdout, checked
    assert not fresh.parent.parent.exists()
    assert run_cli("keys", "--config", str(config), "list").returncode == 0  # creates it
    assert fresh.is_file() and run_cli("check", "--config", str(config)).returncode == 0


def test_a_port_already_taken_is_said_in_one_line_before_any_model_loads(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("server:\n  host: 127.0.0.1\nstore:\n  path: null\n")  # Whisper base
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--config", str(config), "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == f"speechgw: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_check_into_a_closed_pipe_ends_quietly() -> None:
    """`speechgw check | head -1`: the reader goes away first; no traceback, exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "speechgw", "check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the command has printed anything (it is still starting)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert "Traceback" not in errors and "Exception ignored" not in errors, errors


def test_a_model_path_that_holds_no_model_is_a_config_error(tmp_path: Path) -> None:
    """faster-whisper takes a missing folder for a Hugging Face name and fails while the
    server starts, with an error about repository ids; a path is checked with the config."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (str(tmp_path / "nope"), "is no directory"),
        (str(empty), "holds no model.bin"),
        ("~/speechgw-no-such-model", "is no directory"),
        ("bse", "is no model faster-whisper knows"),  # a typo: refused before any download
    ]
    for model, what in cases:
        document = {"backends": {"w": {"type": "whisper", "model": model}}}
        document["routing"] = [{"backend": "w"}]
        with pytest.raises(ConfigError) as caught:
            load_config(document, env={}, backend_options=backend_options)
        assert str(caught.value).startswith(f"backends.w.model: {model!r}"), caught.value
        assert what in str(caught.value)


@pytest.mark.parametrize("model", ["large-v3", "Systran/faster-whisper-small"])
def test_a_hub_model_that_may_not_be_downloaded_must_be_cached(tmp_path: Path, model: str) -> None:
    """With ``local_files_only`` a hub model not in the cache would let the server start and
    then fail on it; ``check`` says so first (looking in the cache, fetching nothing). Without
    ``local_files_only`` the same config is valid: the server would download it."""
    path = tmp_path / "hub.yaml"
    for local_only in (True, False):
        path.write_text(
            f"backends: {{w: {{type: whisper, model: {model}, local_files_only: {local_only}}}}}\n"
            "routing: [{backend: w}]\nstore: {path: null}\n"
        )
        empty_cache = {"HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
        result = run_cli("check", "--config", str(path), env=empty_cache)
        if local_only:
            assert result.returncode == 2, result.stdout
            assert f"backends.w.model: {model!r} is not in the local Hugging Face cache" in (
                result.stderr
            ), result.stderr
            assert "Traceback" not in result.stderr
        else:
            assert result.returncode == 0, result.stderr


def test_a_model_that_cannot_load_stops_serve_with_one_line(tmp_path: Path) -> None:
    """A model folder whose model.bin CTranslate2 cannot read (the config check sees only
    that it is there)."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\xff" * 64)
    path = tmp_path / "broken-model.yaml"
    path.write_text(
        f"backends: {{whisper: {{type: whisper, model: {folder}}}}}\n"
        "routing: [{backend: whisper}]\nstore: {path: null}\nserver: {port: 0}\n"
    )
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "speechgw: backend 'whisper' could not start: Unsupported model binary version"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_zero_where_it_means_off_is_accepted() -> None:
    """Zero is a documented setting for these: no grace at shutdown, no freed memory kept,
    no machine ids as labels, no padding, CTranslate2's default thread count."""
    config = load_config(
        {
            "server": {"shutdown_grace_seconds": 0, "retain_freed_memory_mib": 0, "port": 0},
            "metrics": {"max_machine_ids": 0},
            "streaming": {"start_padding_ms": 0, "end_padding_ms": 0, "min_speech_ms": 0},
            "postprocess": {"temperature": 0},
            "backends": {"w": {"type": "whisper", "cpu_threads": 0}},
            "routing": [{"backend": "w"}],
        },
        env={},
        backend_options=backend_options,
    )
    assert config.server.shutdown_grace_seconds == 0 and config.metrics.max_machine_ids == 0
    assert config.backends[0].options.cpu_threads == 0


def test_limits_from_the_environment_are_range_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"limits": {"max_pending_jobs": "${JOBS}"}}, env={"JOBS": "0"})
    assert str(caught.value) == "limits.max_pending_jobs: must be >= 1, got 0"


def test_the_old_session_limit_key_is_accepted_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load_config({"streaming": {"session_limit_seconds": 240}}, env={})
    assert "streaming.session_limit_seconds has no effect" in caplog.text


def test_the_scripted_backend_keeps_its_old_quoted_name() -> None:
    config = load_config(
        {"backends": {"b": {"type": "null"}}, "routing": [{"backend": "b"}]},
        env={},
        backend_options=backend_options,
    )
    assert config.backends[0].type == "null"


def test_the_event_loop_is_uvloop_unless_asked_otherwise() -> None:
    """``server.event_loop``: auto and uvloop run on uvloop (a dependency where it builds),
    asyncio on asyncio's own loop; an unknown name is a config error."""
    import asyncio

    import uvloop

    from speechgw.server import event_loop_factory

    for choice, kind in (("auto", uvloop.Loop), ("uvloop", uvloop.Loop)):
        loop = event_loop_factory(choice)()
        assert isinstance(loop, kind), choice
        loop.close()
    loop = event_loop_factory("asyncio")()
    assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
    loop.close()
    with pytest.raises(ConfigError, match="event_loop"):
        load_config({"server": {"event_loop": "trio"}}, env={}, backend_options=backend_options)


def _service_account_key(path: Path) -> Path:
    """A service-account JSON key as the Cloud console writes it, with a fresh RSA key."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    key = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "1",
        "private_key": pem,
        "client_email": "speechgw@p.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(key))
    return path


def test_a_google_key_file_that_would_not_load_is_a_config_error(tmp_path: Path) -> None:
    """At start such a backend is only logged as unreachable (the rest is served and falls
    back from it); ``check`` and a reload must say what is wrong with the file."""

    def google(**options: object) -> dict:
        return {"backends": {"g": {"type": "google", **options}}, "routing": [{"backend": "g"}]}

    audio = tmp_path / "talk.wav"
    audio.write_bytes(b"RIFF\xf6\xfe\x00\x00WAVEfmt ")
    no_email = tmp_path / "partial.json"
    no_email.write_text('{"type": "service_account", "private_key": "x"}')
    cases = [
        (tmp_path / "missing.json", "cannot read '%s' (No such file or directory)"),
        (audio, "'%s' is not a service-account JSON key"),
        (no_email, "'%s' is not a service-account JSON key (Service account info was not"),
    ]
    for path, message in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(google(credentials_file=str(path)), env={}, backend_options=backend_options)
        assert f"backends.g.credentials_file: {message % path}" in str(caught.value)
    with pytest.raises(ConfigError, match=r"backends\.g\.insecure: true needs an endpoint"):
        load_config(google(insecure=True), env={}, backend_options=backend_options)
    key = str(_service_account_key(tmp_path / "key.json"))
    config = load_config(google(credentials_file=key), env={}, backend_options=backend_options)
    assert config.backends[0].options.credentials_file == key


@pytest.mark.parametrize("command", [["check"], ["keys", "list"], ["usage"]])
def test_the_admin_commands_load_no_model_library_and_no_gateway(
    command: list[str], tmp_path: Path
) -> None:
    """`speechgw keys`, `usage` and `check` read the whole config (every backend's options),
    but load neither the gateway nor SciPy, CTranslate2 or faster-whisper: each such command
    took 1.2 s of imports (0.25 s now), and `systemctl reload` runs `check` first."""
    config = tmp_path / "gw.yaml"
    shipped = (REPO / "config" / "speechgw.yaml").read_text()
    assert "\n  path: speechgw.db" in shipped
    config.write_text(shipped.replace("\n  path: speechgw.db", f"\n  path: {tmp_path / 'l.db'}"))
    heavy = {"scipy", "ctranslate2", "faster_whisper", "speechgw.gateway", "speechgw.stream"}
    script = (
        "import sys\n"
        "from speechgw.cli import main\n"
        f"code = main({[*command, '--config', str(config)]!r})\n"
        "names = {m for m in sys.modules} | {m.split('.')[0] for m in sys.modules}\n"
        f"print(code, sorted(names & {heavy!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []"


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    """A ``limits:`` section added at the end of a file that has one: PyYAML alone keeps the
    second and drops every limit of the first without a word. A key repeated in one flow
    mapping is refused too; YAML merge keys (``<<: *defaults``), which are meant to be
    overridden, still work."""
    path = tmp_path / "gw.yaml"
    path.write_text(
        "limits:\n  max_streams: 10\n  max_pending_jobs: 4\nserver:\n  port: 9000\n"
        "limits:\n  max_streams: 20\n"
    )
    message = "line 6: 'limits' is given twice in one mapping (first on line 1)"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_config_file(path, env={}, backend_options=backend_options)
    path.write_text("backends:\n  w: {type: whisper, model: tiny.en, model: base}\n")
    with pytest.raises(ConfigError, match="line 2: 'model' is given twice"):
        load_config_file(path, env={}, backend_options=backend_options)
    path.write_text(
        "backends:\n  a: &a {type: scripted, text: one, delay_seconds: 0.5}\n"
        "  b:\n    <<: *a\n    text: two\n"
        "routing: [{backend: a}]\n"
    )
    config = load_config_file(path, env={}, backend_options=backend_options)
    b = config.backends[1].options
    assert (b.text, b.delay_seconds) == ("two", 0.5)
