"""``python -m speechgw serve`` as a user runs it: the shipped config (multilingual base model),
a real process, SIGTERM to stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import speech
from tests.client import transcribe
from tests.test_config import REPO

KEY = "process-test-key-0123"


class ServeProcess:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.port = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"Running on http://[\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                self.ready.set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def served() -> Iterator[ServeProcess]:
    env = {**os.environ, "SERVER_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "speechgw", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    serving = ServeProcess(process)
    try:
        assert serving.ready.wait(180), "".join(serving.lines)
        yield serving
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        serving.reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    speech.require_tools()
    folder = tmp_path_factory.mktemp("multilingual")
    return {
        "de": speech.speak(
            "Wir fahren morgen mit dem Zug nach Berlin.",
            folder / "de.wav",
            voice="de",
            words_per_minute=140,
        ),
        "es": speech.speak(
            "Buenos días. Me gusta mucho la música.",
            folder / "es.wav",
            voice="es",
            words_per_minute=120,
        ),
    }


def test_default_config_transcribes_other_languages(served: ServeProcess, multilingual) -> None:
    german = transcribe(
        served.url, multilingual["de"].read_bytes(), language="de", api_key=KEY
    ).reply
    assert speech.words(german["text"]) == speech.words("Wir fahren morgen mit dem Zug nach Berlin")
    assert german["language"] == "de"
    spanish = transcribe(
        served.url, multilingual["es"].read_bytes(), language="es", api_key=KEY
    ).reply
    assert speech.words(spanish["text"]) == speech.words("Buenos días me gusta mucho la música")


def test_default_config_translates_to_english(served: ServeProcess, multilingual) -> None:
    reply = transcribe(
        served.url, multilingual["de"].read_bytes(), language="de", task="translate", api_key=KEY
    ).reply
    assert {"train", "berlin"} <= set(speech.words(reply["text"])), reply
    assert reply["language"] == "de"


def test_sigterm_stops_the_server_cleanly_and_the_key_never_reaches_the_log(
    served: ServeProcess, voices
) -> None:
    assert transcribe(served.url, voices["children"].read_bytes(), api_key=KEY).close_code == 1000
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0
    log = "".join(served.lines)
    assert "key=server" in log and "outcome=ok" in log
    assert KEY not in log
