"""Config validation and routing, without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from speechgw.app import backend_options
from speechgw.backend import Backend
from speechgw.config import load_config, load_config_file
from speechgw.errors import ConfigError, UnsupportedLanguage, UnsupportedTask
from speechgw.jobs import Caller, JobSpec
from speechgw.router import Router

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
        ({"backends": {"w": {"type": None}}}, "write type: 'null' for the null backend"),
        (
            {"backends": {"w": {"type": "null"}}, "routing": [{"backend": "x"}]},
            "routing[0].backend: no backend named 'x'",
        ),
        ({"backends": {"w": {"type": "null"}}}, "routing: at least one rule"),
        ({"auth": {"keys": [{"name": "a"}]}}, "auth.keys[0].key: required key is missing"),
        (
            {"auth": {"keys": [{"name": "a", "key": "${NOT_SET}"}]}},
            "auth.keys[0].key: environment variable NOT_SET is not set",
        ),
        (
            {
                "backends": {"w": {"type": "null"}},
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


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "speechgw", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
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
                "english": {"type": "null"},
                "cloud": {"type": "null"},
                "local": {"type": "null"},
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
        {"backends": {"english": {"type": "null"}}, "routing": [{"backend": "english"}]},
        env={},
        backend_options=backend_options,
    )
    router = Router(config.routing, {"english": english})
    with pytest.raises(UnsupportedTask):
        router.route(_spec("en", task="translate"))
    with pytest.raises(UnsupportedLanguage):
        router.route(_spec("de"))


def test_a_file_without_backends_gets_the_embedded_default(tmp_path: Path) -> None:
    from speechgw.app import load_app_config

    path = tmp_path / "only-limits.yaml"
    path.write_text("limits:\n  max_audio_seconds: 30\n")
    config = load_app_config(str(path), env={})  # used at start and on SIGHUP alike
    assert [b.options.model for b in config.backends] == ["base"]
    assert config.limits.max_audio_seconds == 30
