"""``python -m speechgw serve`` as a user runs it: the shipped config (multilingual base model),
a real process, SIGTERM to stop it."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import speech
from tests.client import multipart_upload, post, transcribe
from tests.processes import children, ended, stat_fields
from tests.serving import ServeProcess
from tests.waiting import wait_for

KEY = "process-test-key-0123"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    here = tmp_path_factory.mktemp("served")  # the shipped config's ledger lands here
    with ServeProcess(env={"SERVER_API_KEY": KEY}, cwd=here) as serving:  # the shipped config
        yield serving


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
    decoders = children(served.process.pid)
    assert len(decoders) == 1  # started with the server, for the first compressed upload
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0
    wait_for(lambda: all(ended(pid) for pid in decoders), seconds=10)
    log = served.log
    assert "key=server" in log and "outcome=ok" in log
    assert KEY not in log


def test_the_decoders_end_with_a_server_that_is_killed(tmp_path: Path) -> None:
    """SIGKILL (the out-of-memory killer, ``kill -9``) gives the server no time to stop
    its decoder processes: each ends on its own when its socket to the server closes."""
    config = tmp_path / "scripted.yaml"
    config.write_text(
        f"store: {{path: {tmp_path / 'ledger.db'}}}\n"
        "backends: {scripted: {type: scripted, text: words}}\n"
        "routing: [{backend: scripted}]\n"
    )
    with ServeProcess("--config", str(config)) as server:
        (decoder,) = children(server.process.pid)
        server.process.kill()
        server.process.wait(timeout=30)
        wait_for(lambda: ended(decoder), seconds=10)


def minor_faults(pid: int) -> int:
    return int(stat_fields(pid)[7])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_requests_reuse_memory_instead_of_faulting_it_in_again(voices, tmp_path: Path) -> None:
    """With the shipped config the allocator keeps CTranslate2's freed buffers: after a warm-up
    a request costs almost no page faults. With ``retain_freed_memory_mib: null`` (glibc's own
    policy) every request faults its buffers in again."""
    wav = voices["children"].read_bytes()

    def faults_per_request(server: ServeProcess) -> int:
        for _ in range(2):  # warm-up: the heap grows to the working size once
            transcribe(server.url, wav)
        before = minor_faults(server.process.pid)
        assert transcribe(server.url, wav).reply.get("text")
        return minor_faults(server.process.pid) - before

    # config/speechgw.yaml: base, retain_freed_memory_mib 1024, blas_threads 1
    with ServeProcess(cwd=tmp_path) as shipped:
        retained = faults_per_request(shipped)
        assert "BLAS libraries limited to 1 thread(s)" in shipped.log
    config = tmp_path / "glibc-defaults.yaml"
    config.write_text(
        f"store: {{path: {tmp_path / 'ledger.db'}}}\n"
        "server: {retain_freed_memory_mib: null}\n"
        "backends: {whisper: {type: whisper, model: base}}\n"
        "routing: [{backend: whisper}]\n"
    )
    with ServeProcess("--config", str(config)) as plain:
        returned = faults_per_request(plain)
    assert retained < 3000 < 20_000 < returned, (retained, returned)


def test_json_logs_carry_the_access_fields_typed_and_never_the_key(voices, tmp_path) -> None:
    """``logging.format: json``: every line the process writes is one JSON object (a log
    shipper reads it without parsing text), the access line's fields are typed values."""
    config = tmp_path / "json-logs.yaml"
    config.write_text(
        "logging: {format: json}\n"
        f"store: {{path: {tmp_path / 'ledger.db'}}}\n"
        "backends: {s: {type: scripted, text: scripted words}}\n"
        "routing: [{backend: s}]\n"
    )
    with ServeProcess("--config", str(config), env={"SERVER_API_KEY": KEY}) as served:
        wav = voices["children"].read_bytes()
        assert transcribe(served.url, wav, api_key=KEY).reply["text"] == "scripted words"
        assert (
            transcribe(served.url, wav, api_key="wrong-key-4711").reply["error"] == "unauthorized"
        )
        # a malformed upload is the client's error (a 400 with the parser's reason), not a
        # warning in the server's log
        upload, content_type = multipart_upload(wav)
        broken = upload.replace(b"\r\n\r\n", b"\r\n", 1)  # the first part's header runs on
        status, answer = post(served.http + "/v1/audio/transcriptions", broken, content_type, KEY)
        assert status == 400 and "malformed" in answer["error"]["message"], answer
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=60) == 0
    records = [json.loads(line) for line in served.lines]  # every line, or this raises
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert not [r for r in records if r["level"] == "WARNING" and "multipart" in r["logger"]]
    access = [r for r in records if r["logger"] == "speechgw.access" and r["protocol"] == "batch"]
    answered, refused = access
    assert answered["key"] == "server" and answered["outcome"] == "ok"
    assert answered["protocol"] == "batch" and answered["backend"] == "s"
    assert isinstance(answered["audio_s"], float) and answered["audio_s"] > 1.0
    assert isinstance(answered["processing_ms"], int)
    assert answered["message"].startswith(f"request={answered['request']} protocol=batch")
    assert refused["outcome"] == "unauthorized"
    messages = [r["message"] for r in records]
    assert any(m.startswith("speechgw ") and "serving on" in m for m in messages), messages
    assert KEY not in "".join(served.lines) and "wrong-key-4711" not in "".join(served.lines)
