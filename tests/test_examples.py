"""The integrators' examples, each run as a user would run it against a real server."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests import speech
from tests.serving import REPO, Server, running_server

EXAMPLES = REPO / "examples"


def run(*command: str, cwd: Path = EXAMPLES, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_sentences(voices, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("examples")
    return speech.concat(
        [voices["children"], voices["coffee"]], folder / "two.wav", silence_seconds=1.0
    )


def assert_two_sentences(lines: list[str]) -> None:
    assert len(lines) == 2, lines
    for name, line in zip(["children", "coffee"], lines, strict=True):
        assert speech.word_recall(speech.SENTENCES[name], line) >= 0.6, lines


def _imported_packages(script: Path) -> set[str]:
    """The top-level names of what ``script`` imports from outside the standard library and
    ``examples/`` (at any depth: an import inside a function is still needed when it runs)."""
    local = {path.stem for path in EXAMPLES.glob("*.py")}
    names: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - local - {"__future__"}


def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def test_the_examples_extra_holds_what_the_python_examples_import() -> None:
    """The README's ``.venv/bin/pip install -e '.[examples]'`` is all a gateway's ``.venv``
    needs to run the Python examples: every package they import is a dependency of speechgw
    or in its ``examples`` extra, but ``sounddevice`` (``--mic``), which the README names on
    its own. (After ``scripts/serve.sh`` alone, ``batch_client.py`` stopped at
    ``import websockets``.)"""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        _distribution(r)
        for r in [*project["dependencies"], *project["optional-dependencies"]["examples"]]
    }
    modules = importlib.metadata.packages_distributions()
    missing = {}
    imported: set[str] = set()
    for script in sorted(EXAMPLES.glob("*.py")):
        for module in _imported_packages(script) - {"sounddevice"}:
            imported.add(module)
            owners = {_distribution(d) for d in modules.get(module, [module])}
            if not owners & declared:
                missing[module] = script.name
    assert {"websockets", "openai", "av"} <= imported  # the check sees the examples' imports
    assert missing == {}, (
        f"imported by examples/, in no dependency nor the examples extra: {missing}"
    )
    assert "pip install sounddevice" in (REPO / "README.md").read_text()


def test_machine_id_is_a_sha256() -> None:
    result = run(sys.executable, "machine_id.py")
    assert re.fullmatch(r"[0-9a-f]{64}\n", result.stdout), result


def test_python_stream_client(tiny_server: Server, two_sentences: Path) -> None:
    result = run(
        sys.executable,
        "stream_client.py",
        str(two_sentences),
        "--url",
        tiny_server.ws,
        "--speed",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert_two_sentences(result.stdout.splitlines())


def test_python_clients_say_what_is_wrong_with_a_file_they_cannot_send(
    tiny_server: Server, voices, tmp_path: Path
) -> None:
    """Each said it in a traceback before: the stream client for a float WAV (Python's wave
    module: "unknown format: 3"; the protocol carries 16-bit PCM), every client for a file
    that is not there, the batch client for one FFmpeg cannot decode."""
    float_wav = speech.convert(voices["coffee"], tmp_path / "float.wav", "-e", "floating-point")
    cases = (
        (float_wav, "unknown format: 3; the streaming protocol carries 16-bit mono PCM"),
        (tmp_path / "gone.wav", "gone.wav: No such file or directory"),
    )
    for path, words in cases:
        result = run(sys.executable, "stream_client.py", str(path), "--url", tiny_server.ws)
        assert result.returncode == 1
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
    # and the other two clients: a missing file, a file that is no audio
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    cases = (
        ("batch_client.py", tmp_path / "gone.mp3", tiny_server.ws, 2, "gone.mp3: no such file"),
        ("batch_client.py", notes, tiny_server.ws, 1, "notes.txt could not be decoded as audio"),
        ("openai_client.py", tmp_path / "gone.mp3", tiny_server.http, 2, "no such file"),
    )
    for client, path, url, status, words in cases:
        result = run(sys.executable, client, str(path), "--url", url)
        assert result.returncode == status, (client, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_clients_take_an_endpoint_url_and_say_why_they_are_refused(voices) -> None:
    """An integrator pastes an endpoint's whole URL, or runs with a wrong key or a wrong path:
    the examples take the first as the server's, and print the server's reason for the rest."""
    coffee = str(voices["coffee"])
    with running_server(env={"SERVER_API_KEY": "example-key"}) as server:
        whole = server.ws + "/ws/transcribe/"
        batch = run(
            sys.executable, "batch_client.py", coffee, "--url", whole, "--api-key", "example-key"
        )
        assert batch.returncode == 0, batch.stderr
        assert speech.word_recall(speech.SENTENCES["coffee"], batch.stdout) >= 0.75, batch
        stream = run(
            sys.executable, "stream_client.py", coffee, "--url", server.ws, "--api-key", "wrong"
        )
        assert stream.returncode == 1 and not stream.stdout
        assert stream.stderr.startswith("refused: HTTP 401: "), stream.stderr
        assert json.loads(stream.stderr.split(": ", 2)[2])["error"] == "unauthorized"
        for url in (server.http, server.http + "/v1/audio/transcriptions"):  # not the SDK's
            sdk = run(
                sys.executable, "openai_client.py", coffee, "--url", url, "--api-key", "example-key"
            )
            assert sdk.returncode == 0, (url, sdk.stderr)
            assert speech.word_recall(speech.SENTENCES["coffee"], sdk.stdout) >= 0.75, sdk
        lost = run(sys.executable, "batch_client.py", coffee, "--url", server.ws + "/asr")
        assert lost.returncode == 1 and lost.stderr.startswith("error: HTTP 404: "), lost.stderr
        assert "/ws/transcribe, /api/core/google/asr" in lost.stderr  # where to go instead


def test_load_generator(two_sentences: Path) -> None:
    with running_server(backends={"null": {"type": "scripted", "text": "ok"}}) as server:
        for protocol in ("batch", "stream"):
            result = run(
                sys.executable,
                "load_generator.py",
                protocol,
                str(two_sentences),
                "--url",
                server.ws,
                "--clients",
                "3",
                "--seconds",
                "2",
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert re.search(rf"{protocol}: [1-9]\d* ok in .*, 0 errors", result.stdout), result


@pytest.fixture(scope="module")
def node_client(tmp_path_factory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js is not installed here (apt-get install nodejs npm)")
    folder = tmp_path_factory.mktemp("node")
    shutil.copytree(EXAMPLES / "node", folder, dirs_exist_ok=True)
    installed = run("npm", "install", "--no-audit", "--no-fund", cwd=folder, timeout=300)
    if installed.returncode != 0:
        pytest.skip(f"npm cannot install ws and openai here: {installed.stderr[-300:]}")
    return folder


def test_node_client_batch(tiny_server: Server, node_client: Path, voices) -> None:
    result = run(
        "node",
        "client.mjs",
        "batch",
        str(voices["coffee"]),
        "--url",
        tiny_server.ws,
        cwd=node_client,
    )
    assert result.returncode == 0, result.stderr
    assert speech.word_recall(speech.SENTENCES["coffee"], result.stdout) >= 0.75
    assert "[" in result.stderr  # timed segments
    for mode in ("batch", "stream"):  # a missing file: one line, not Node's stack trace
        gone = run("node", "client.mjs", mode, "gone.wav", "--url", tiny_server.ws, cwd=node_client)
        assert gone.returncode == 1 and gone.stderr.strip() == "gone.wav: no such file", gone


def test_node_client_stream(tiny_server: Server, node_client: Path, two_sentences) -> None:
    result = run(
        "node",
        "client.mjs",
        "stream",
        str(two_sentences),
        "--url",
        tiny_server.ws,
        "--speed",
        "0",
        cwd=node_client,
    )
    assert result.returncode == 0, result.stderr
    assert_two_sentences(result.stdout.splitlines())


def test_node_client_says_why_it_is_refused(node_client: Path, voices) -> None:
    coffee = str(voices["coffee"])
    with running_server(env={"SERVER_API_KEY": "example-key"}) as server:
        stream = run(
            "node",
            "client.mjs",
            "stream",
            coffee,
            "--url",
            server.ws,
            "--api-key",
            "wrong",
            cwd=node_client,
        )
        assert stream.returncode == 1 and not stream.stdout
        assert stream.stderr.startswith("refused: HTTP 401: "), stream.stderr
        assert json.loads(stream.stderr.split(": ", 2)[2])["error"] == "unauthorized"
        whole = server.ws + "/ws/transcribe"  # the endpoint's URL works as the server's
        batch = run(
            "node",
            "client.mjs",
            "batch",
            coffee,
            "--url",
            whole,
            "--api-key",
            "example-key",
            cwd=node_client,
        )
        assert batch.returncode == 0, batch.stderr
        assert speech.word_recall(speech.SENTENCES["coffee"], batch.stdout) >= 0.75


def test_node_openai_sdk(tiny_server: Server, node_client: Path, voices, tmp_path: Path) -> None:
    """OpenAI's official Node.js SDK, as ``examples/node/openai.mjs`` drives it: an ogg/opus
    file, plain and streamed; a refused request says why. Its fetch (undici) is the client
    that lost early answers to a reset (the upload test in ``test_openai.py``)."""
    major = int(run("node", "--version").stdout.strip().lstrip("v").split(".")[0])
    if major < 20:
        pytest.skip(f"the openai package needs Node.js 20 or later; this is {major}")
    ogg = str(speech.encode(voices["window"], tmp_path / "window.ogg", "ogg"))
    url = tiny_server.http
    result = run("node", "openai.mjs", ogg, "--url", url, cwd=node_client)
    assert result.returncode == 0, result.stderr
    assert speech.word_recall(speech.SENTENCES["window"], result.stdout) >= 0.8, result
    streamed = run("node", "openai.mjs", ogg, "--url", url, "--stream", cwd=node_client)
    assert streamed.returncode == 0, streamed.stderr
    assert speech.word_recall(speech.SENTENCES["window"], streamed.stdout) >= 0.8, streamed
    refused = run("node", "openai.mjs", ogg, "--url", url, "--model", "x", cwd=node_client)
    assert refused.returncode == 1 and not refused.stdout
    assert refused.stderr.startswith("refused: HTTP 400: invalid_request: "), refused.stderr
    assert "known: whisper-1" in refused.stderr
    scripted = {"null": {"type": "scripted", "text": "scripted words"}}
    with running_server(env={"SERVER_API_KEY": "example-key"}, backends=scripted) as server:
        command = ("node", "openai.mjs", ogg, "--url", server.http, "--api-key", "wrong")
        for _ in range(3):  # the refusal came as "Connection error" one time in two
            wrong = run(*command, cwd=node_client)
            assert wrong.stderr.startswith("refused: HTTP 401: unauthorized: "), wrong.stderr


def test_rust_client(tiny_server: Server, voices, tmp_path: Path) -> None:
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed here")
    shutil.copytree(EXAMPLES / "rust", tmp_path / "rust")
    built = run("cargo", "build", "--offline", "--quiet", cwd=tmp_path / "rust", timeout=600)
    if built.returncode != 0:
        pytest.skip(
            "the tungstenite and serde_json crates are not available offline here "
            "(crates.io is unreachable)"
        )
    result = run(
        str(tmp_path / "rust" / "target" / "debug" / "speechgw-client"),
        str(voices["coffee"]),
        tiny_server.ws,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert speech.word_recall(speech.SENTENCES["coffee"], result.stdout) >= 0.75


def test_batch_client_decodes_any_audio_file(tiny_server: Server, voices, tmp_path: Path) -> None:
    """The batch protocol carries WAV; the example turns an mp3 into one on the client."""
    mp3 = speech.encode(voices["children"], tmp_path / "children.mp3", "mp3")
    result = run(sys.executable, "batch_client.py", str(mp3), "--url", tiny_server.ws)
    assert result.returncode == 0, result.stderr
    assert speech.word_recall(speech.SENTENCES["children"], result.stdout) >= 0.8, result
    # two mp3s joined end to end, at other rates and layouts: PyAV's resampler, fixed by its
    # first frame, raised "Frame does not match AudioResampler setup" at the second
    other = speech.encode(voices["window"], tmp_path / "window.mp3", "mp3", 16000, "mono")
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(mp3.read_bytes() + other.read_bytes())
    result = run(sys.executable, "batch_client.py", str(joined), "--url", tiny_server.ws)
    assert result.returncode == 0, result.stderr
    said = speech.SENTENCES["children"] + " " + speech.SENTENCES["window"]
    assert speech.word_recall(said, result.stdout) >= 0.8, result
    # a title tag in Latin-1 where UTF-8 is declared: PyAV 18 refused the file
    tagged = tmp_path / "tagged.mp3"
    tagged.write_bytes(speech.with_a_latin1_title(mp3.read_bytes()))
    result = run(sys.executable, "batch_client.py", str(tagged), "--url", tiny_server.ws)
    assert result.returncode == 0, result.stderr
    assert speech.word_recall(speech.SENTENCES["children"], result.stdout) >= 0.8, result


def test_openai_client(tiny_server: Server, voices, tmp_path: Path) -> None:
    """The official SDK, as the example drives it: an ogg/opus file, timed words."""
    ogg = speech.encode(voices["window"], tmp_path / "window.ogg", "ogg")
    url = tiny_server.http + "/v1"
    result = run(sys.executable, "openai_client.py", str(ogg), "--url", url, "--words")
    assert result.returncode == 0, result.stderr
    assert speech.word_recall(speech.SENTENCES["window"], result.stdout) >= 0.8, result
    timed = re.findall(r"\[\s*([\d.]+) -\s*([\d.]+)\] (\S+)", result.stderr)
    assert [w.lower() for _, _, w in timed][:2] == ["open", "the"], result.stderr
    rated = run(sys.executable, "openai_client.py", str(ogg), "--url", url, "--confidence")
    assert rated.returncode == 0, rated.stderr
    sure = re.findall(r"^  (\d\.\d\d) (\S+)$", rated.stderr, re.MULTILINE)
    assert [w.lower() for _, w in sure][:2] == ["open", "the"], rated.stderr
    assert all(0 < float(p) <= 1 for p, _ in sure), rated.stderr
    srt = run(sys.executable, "openai_client.py", str(ogg), "--url", url, "--format", "srt")
    assert srt.stdout.startswith("1\n00:00:00,000 --> "), srt
    refused = run(sys.executable, "openai_client.py", str(ogg), "--url", url, "--model", "x")
    assert refused.returncode == 1 and "known: whisper-1" in refused.stderr
    streamed = run(sys.executable, "openai_client.py", str(ogg), "--url", url, "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert speech.word_recall(speech.SENTENCES["window"], streamed.stdout) >= 0.8, streamed
    # gpt-transcribe's fields reach the server: tiny.en hears English only, so among German
    # and French it refuses, and among English and German it answers
    hinted = [str(ogg), "--url", url, "--model", "gpt-transcribe", "--keyword", "window"]
    among = run(sys.executable, "openai_client.py", *hinted, "--languages", "en,de")
    assert among.returncode == 0, among.stderr
    assert speech.word_recall(speech.SENTENCES["window"], among.stdout) >= 0.8, among
    foreign = run(sys.executable, "openai_client.py", *hinted, "--languages", "de,fr", "--stream")
    assert foreign.returncode == 1 and "detection among de, fr" in foreign.stderr, foreign


@pytest.fixture(scope="module")
def continuous(voices, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("examples-continuous")
    names = ["children", "market", "window"]
    return speech.concat([voices[n] for n in names], folder / "continuous.wav")


def assert_interims_then_final(result: subprocess.CompletedProcess) -> None:
    """The client streamed the 10 s utterance at real time (``--speed 1``), as it does by
    default: at twice that a slow machine has time for one interim (test_interim.py)."""
    assert result.returncode == 0, result.stderr
    interims = [line for line in result.stderr.splitlines() if line.startswith("... ")]
    assert len(interims) >= 2, result.stderr
    (final,) = result.stdout.splitlines()
    assert speech.word_recall(speech.SENTENCES["window"], final) >= 0.6, final


def test_python_stream_client_shows_interims(tiny_server: Server, continuous: Path) -> None:
    assert_interims_then_final(
        run(
            sys.executable,
            "stream_client.py",
            str(continuous),
            "--url",
            tiny_server.ws,
            "--speed",
            "1",
            "--interim",
        )
    )


def test_node_client_shows_interims(tiny_server: Server, node_client: Path, continuous) -> None:
    assert_interims_then_final(
        run(
            "node",
            "client.mjs",
            "stream",
            str(continuous),
            "--url",
            tiny_server.ws,
            "--speed",
            "1",
            "--interim",
            cwd=node_client,
        )
    )


def test_realtime_client(tiny_server: Server, two_sentences: Path) -> None:
    """The official SDK's Realtime API, as the example drives it: a turn per sentence, then
    the whole file as one push-to-talk turn."""
    url = tiny_server.http + "/v1"
    client = (sys.executable, "realtime_client.py", str(two_sentences), "--base-url", url)
    result = run(*client, "--speed", "0", "--language", "en")
    assert result.returncode == 0, result.stderr
    assert_two_sentences(result.stdout.splitlines())
    held = run(*client, "--speed", "0", "--push-to-talk")
    assert held.returncode == 0, held.stderr
    (line,) = held.stdout.splitlines()
    both = " ".join(speech.SENTENCES[name] for name in ("children", "coffee"))
    assert speech.word_recall(both, line) >= 0.6, held.stdout


def test_realtime_client_says_why_it_is_refused(two_sentences: Path) -> None:
    with running_server({"auth": {"keys": [{"name": "a", "key": "right"}]}}) as server:
        result = run(
            sys.executable,
            "realtime_client.py",
            str(two_sentences),
            "--base-url",
            server.http + "/v1",
            "--api-key",
            "wrong",
        )
    assert result.returncode == 1
    assert "refused (401)" in result.stderr and "invalid API key" in result.stderr, result
