from __future__ import annotations

from pathlib import Path

import pytest

from tests import speech
from tests.serving import Server, running_server


@pytest.fixture(scope="session")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One espeak-ng WAV per sentence of :data:`tests.speech.SENTENCES`, at 22050 Hz."""
    speech.require_tools()
    folder = tmp_path_factory.mktemp("speech")
    return {
        name: speech.speak(text, folder / f"{name}.wav") for name, text in speech.SENTENCES.items()
    }


@pytest.fixture(scope="session")
def long_speech(voices, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """About 45 s of speech (the six sentences twice): two of Whisper's 30 s windows, so the
    first window's text can come while the second is decoded. Returns the file and its text."""
    names = list(speech.SENTENCES) * 2
    folder = tmp_path_factory.mktemp("long")
    path = speech.concat([voices[n] for n in names], folder / "long.wav", silence_seconds=0.5)
    return path, " ".join(speech.SENTENCES[n] for n in names)


@pytest.fixture(scope="session")
def seven_windows(voices, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """About 190 s of speech (the six sentences eight times, a second of silence after each):
    seven of Whisper's 30 s windows, decoded one model call at a time for many seconds, beside
    which other requests are tested. Returns the file and its text."""
    names = list(speech.SENTENCES) * 8
    folder = tmp_path_factory.mktemp("seven")
    path = speech.concat([voices[n] for n in names], folder / "long.wav", silence_seconds=1.0)
    return path, " ".join(speech.SENTENCES[n] for n in names)


@pytest.fixture(scope="session")
def tiny_server() -> Server:
    """A real server on tiny.en, no keys, default limits; shared by tests that change nothing."""
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A PostgreSQL server URL (no database): the machine's, or a private cluster."""
    from tests.postgres import machine_or_private_postgres

    with machine_or_private_postgres() as url:
        yield url
