"""The batch protocol end to end: a real server, the real tiny.en model, real WebSocket clients
and espeak-ng speech. Each test checks what a client would: the words, the fields, the close."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import connect

import speechgw
from tests import speech
from tests.client import UploadInBackground, batch, drain, transcribe
from tests.serving import TINY, Server, running_server
from tests.waiting import wait_for

FOX = speech.SENTENCES["children"]


def assert_heard(expected: str, text: str, recall: float = 0.75) -> None:
    got = speech.word_recall(expected, text)
    assert got >= recall, f"heard {text!r} for {expected!r} (recall {got:.2f})"


def test_transcribes_speech_with_every_documented_field(tiny_server: Server, voices) -> None:
    wav = voices["market"].read_bytes()
    exchange = transcribe(tiny_server.ws, wav, machine_id="ab12", task="transcribe")
    reply = exchange.reply
    assert_heard(speech.SENTENCES["market"], reply["text"])
    assert reply["language"] == "en"
    assert reply["postprocessed_text"] is None
    assert reply["postprocess_ms"] == 0
    assert reply["postprocess_error"] is None
    assert exchange.close_code == 1000


def test_segments_are_timed_inside_the_audio(tiny_server: Server, voices, tmp_path: Path) -> None:
    long = speech.concat(
        [voices["children"], voices["garden"], voices["window"]],
        tmp_path / "long.wav",
        silence_seconds=1.0,
    )
    duration = float(
        speech.subprocess.run(
            ["soxi", "-D", str(long)], capture_output=True, text=True, check=True
        ).stdout
    )
    reply = transcribe(tiny_server.ws, long.read_bytes()).reply
    segments = reply["segments"]
    assert segments, reply
    assert " ".join(s["text"] for s in segments).split() == reply["text"].split()
    previous_end = 0.0
    for s in segments:
        assert 0.0 <= s["start"] <= s["end"] <= duration + 0.05, (s, duration)
        assert s["start"] >= previous_end - 0.05
        previous_end = s["end"]
    assert_heard(
        " ".join(speech.SENTENCES[k] for k in ("children", "garden", "window")), reply["text"]
    )


@pytest.mark.parametrize(
    "sox_options",
    [
        ("-r", "8000"),
        ("-r", "44100"),
        ("-r", "16000"),
        ("-c", "2"),
        ("-e", "floating-point", "-b", "32"),
        ("-e", "floating-point", "-b", "64", "-r", "48000"),
        ("-b", "24", "-r", "32000"),
        ("-b", "32", "-e", "signed-integer"),
        ("-b", "8", "-e", "unsigned-integer", "-r", "16000"),
        ("-e", "u-law", "-r", "8000"),  # a phone call's recording (G.711)
        ("-e", "a-law", "-r", "8000"),
        # codecs only FFmpeg reads: telephony and voice recorders write them in WAV files
        ("-e", "gsm-full-rate", "-r", "8000", "-c", "1"),
        ("-e", "ima-adpcm"),
        ("-e", "ms-adpcm"),
    ],
    ids=[
        "8k",
        "44k1",
        "16k",
        "stereo",
        "float32",
        "float64-48k",
        "pcm24-32k",
        "pcm32",
        "pcm8",
        "mulaw-8k",
        "alaw-8k",
        "gsm-8k",
        "ima-adpcm",
        "ms-adpcm",
    ],
)
def test_any_rate_width_and_channel_count(
    tiny_server: Server, voices, tmp_path: Path, sox_options
) -> None:
    converted = speech.convert(voices["children"], tmp_path / "in.wav", *sox_options)
    assert_heard(FOX, transcribe(tiny_server.ws, converted.read_bytes()).reply["text"])


def test_stereo_is_mixed_down_not_left_channel_only(
    tiny_server: Server, voices, tmp_path: Path
) -> None:
    # speech on the right channel only: a reader that kept channel 0 would hear silence
    stereo = speech.convert(
        voices["children"], tmp_path / "right.wav", "-c", "2", effects=("remix", "0", "1")
    )
    assert_heard(FOX, transcribe(tiny_server.ws, stereo.read_bytes()).reply["text"])


@pytest.fixture(scope="module")
def long_stretches(voices, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """20 s of silence, a sentence, 40 s of mains hum, a sentence, 25 s of hiss: the file
    and where its two sentences start."""
    folder = tmp_path_factory.mktemp("stretches")
    parts = [
        speech.made_sound(folder / "silence.wav", 20),
        voices["children"],
        speech.made_sound(folder / "hum.wav", 40, "sine", "50", "vol", "0.05"),
        voices["market"],
        speech.made_sound(folder / "hiss.wav", 25, "whitenoise", "vol", "0.003"),
    ]
    second = 20 + speech.duration(voices["children"]) + 40
    return speech.concat(parts, folder / "stretches.wav"), [20.0, second]


def test_long_stretches_without_speech_are_not_decoded(
    tiny_server: Server, long_stretches: tuple[Path, list[float]]
) -> None:
    """Decoded whole, a window that began in the silence had its sentence timed from the
    window's start (Whisper puts a window's first timestamp within its first second), and
    Whisper wrote words into the hum and the hiss. Left out, each sentence is timed where it
    is said, and nothing else is written."""
    path, starts = long_stretches
    reply = transcribe(tiny_server.ws, path.read_bytes()).reply
    said = speech.SENTENCES["children"] + " " + speech.SENTENCES["market"]
    assert speech.word_recall(said, reply["text"]) > 0.85, reply["text"]
    assert len(speech.words(reply["text"])) <= len(speech.words(said)), reply["text"]
    segments = reply["segments"]
    firsts = [
        next(s for s in segments if speech.words(s["text"])[:2] == speech.words(sentence)[:2])
        for sentence in (speech.SENTENCES["children"], speech.SENTENCES["market"])
    ]
    for segment, start in zip(firsts, starts, strict=True):
        assert abs(segment["start"] - start) < 0.6, (segments, starts)
    assert segments[-1]["end"] < starts[1] + 5, segments


def test_every_second_is_decoded_when_asked(long_stretches: tuple[Path, list[float]]) -> None:
    """``skip_non_speech_seconds: null``: the whole recording goes to Whisper, which times
    the first sentence from the start of the recording."""
    path, starts = long_stretches
    backend = {"whisper": {**TINY["whisper"], "skip_non_speech_seconds": None}}
    with running_server(backends=backend) as server:
        segments = transcribe(server.ws, path.read_bytes()).reply["segments"]
    assert segments[0]["start"] <= 1.0 < starts[0], segments


def test_speech_across_a_block_of_silero_hearing_stays_one_clip(voices) -> None:
    """Silero hears a long recording 5 minutes at a time (its memory); a sentence said across
    the end of a block is one stretch of speech still, and the minutes of silence before it
    and between two sentences are left out, on the recording's clock."""
    from speechgw.backends.whisper_clips import speech_clips

    sentence = speech.samples_16k(voices["children"])
    silence = np.zeros(16000 * 298, np.float32)
    gap = np.zeros(16000 * 10, np.float32)
    audio = np.concatenate([silence, sentence, gap, sentence])
    clips = speech_clips(audio, 3.0)
    assert clips is not None and len(clips) == 4, clips
    said = len(sentence) / 16000
    assert 297.0 < clips[0] < 298.2 and 298 + said - 0.2 < clips[1] < 298 + said + 1.0, clips
    second = 298 + said + 10
    assert second - 1.0 < clips[2] < second + 0.2 and clips[3] == pytest.approx(
        len(audio) / 16000, abs=0.02
    )


def test_a_first_segment_starts_near_its_speech_after_a_short_lead(
    tiny_server: Server, voices, tmp_path: Path
) -> None:
    """1.2 s of silence, then a sentence: Whisper writes its first timestamp as 0.00 after a
    short lead, so the segment started 1.2 s before the sentence; the lead is left out (over
    half a second), and the segment starts at most Silero's padding early."""
    lead = speech.made_sound(tmp_path / "lead.wav", 1.2)
    recording = speech.concat([lead, voices["children"]], tmp_path / "late.wav")
    reply = transcribe(tiny_server.ws, recording.read_bytes()).reply
    assert_heard(FOX, reply["text"])
    assert 0.6 <= reply["segments"][0]["start"] <= 1.3, reply["segments"]


@pytest.fixture(scope="module")
def nobody_speaking(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Recordings in which nobody speaks: tiny.en, left to faster-whisper's own rule, writes
    "You" into each (measured)."""
    folder = tmp_path_factory.mktemp("nobody")
    return {
        "silence": speech.made_sound(folder / "silence.wav", 10),
        "45 s of silence": speech.made_sound(folder / "long.wav", 45),
        "mains hum": speech.made_sound(folder / "hum.wav", 12, "sine", "50", "vol", "0.03"),
    }


@pytest.mark.parametrize("name", ["silence", "45 s of silence", "mains hum"])
def test_a_recording_in_which_nobody_speaks_has_no_words(
    tiny_server: Server, nobody_speaking: dict[str, Path], name: str
) -> None:
    """A muted microphone, a push-to-talk pressed with nothing said: Whisper rates the window
    as probably holding no speech (0.85-0.96) yet writes "You", with words confident enough
    that faster-whisper keeps them; Silero hears no speech in it, so nothing is kept."""
    exchange = transcribe(tiny_server.ws, nobody_speaking[name].read_bytes())
    assert exchange.reply["text"] == "", exchange.reply
    assert exchange.reply["segments"] == []
    assert exchange.reply["language"] == "en"
    assert exchange.close_code == 1000


def test_whispers_own_rule_alone_when_asked(nobody_speaking: dict[str, Path]) -> None:
    """``recording_no_speech_prob: 1.0``: faster-whisper's rule alone, which keeps the words
    Whisper writes into silence."""
    backend = {"whisper": {**TINY["whisper"], "recording_no_speech_prob": 1.0}}
    with running_server(backends=backend) as server:
        reply = transcribe(server.ws, nobody_speaking["silence"].read_bytes()).reply
    assert speech.words(reply["text"]), reply


def test_a_window_whisper_doubts_is_kept_where_silero_hears_speech(voices) -> None:
    """The rule on real Silero VAD: a window rated probably not speech is dropped only when
    Silero hears none in it; a sentence, even 40 dB quieter, is heard, and a window Whisper
    rates as speech is kept whatever Silero says. The same where Silero heard the whole
    recording already (its clips and times), and what it heard is counted instead."""
    from types import SimpleNamespace

    from speechgw.backends.whisper_clips import listen
    from speechgw.backends.whisper_spoken import RecordingCheck

    sentence = speech.samples_16k(voices["children"])
    silence = np.zeros(16000 * 35, np.float32)
    audio = np.concatenate([silence, sentence, silence])
    doubted = [SimpleNamespace(no_speech_prob=0.9, seek=seek) for seek in (0, 3000, 7000)]
    for heard in (None, listen(audio).probabilities):
        check = RecordingCheck(0.5, audio, heard)
        # the windows from 0 s and 70 s hold silence alone, the one from 30 s the sentence
        assert [check(s) for s in doubted] == [False, True, False]
        assert check(SimpleNamespace(no_speech_prob=0.5, seek=0))
    quiet = audio * np.float32(0.01)
    for heard in (None, listen(quiet).probabilities):
        check = RecordingCheck(0.5, quiet, heard)
        assert check(doubted[1]) and not check(doubted[0])


def test_a_segment_ends_where_its_recording_does(tiny_server: Server, tmp_path: Path) -> None:
    """Whisper's last timestamp falls on its 20 ms grid, and after a short recording often
    past its end: the segment ends with the recording (and so would its words)."""
    spoken = speech.speak("Open the window.", tmp_path / "window.wav")  # tiny.en: 1.46 s -> 2.0
    said = speech.convert(spoken, tmp_path / "16k.wav", "-r", "16000")
    seconds = speech.duration(said)
    reply = transcribe(tiny_server.ws, said.read_bytes()).reply
    assert reply["segments"], reply
    assert max(s["end"] for s in reply["segments"]) <= round(seconds, 3), (reply, seconds)


def test_defaults_language_null_means_english(tiny_server: Server, voices) -> None:
    wav = voices["children"].read_bytes()
    exchange = batch(tiny_server.ws, {"type": "transcribe", "language": None}, wav)
    assert exchange.reply["language"] == "en"
    assert_heard(FOX, exchange.reply["text"])
    minimal = batch(tiny_server.ws, {"type": "transcribe"}, wav)
    assert_heard(FOX, minimal.reply["text"])


def test_a_bcp47_tag_is_read_as_its_language(tiny_server: Server, voices) -> None:
    """``en-US`` (what the streaming protocol takes, and many clients hold) is English here
    too, as the OpenAI endpoint reads it: only its language subtag counts."""
    wav = voices["children"].read_bytes()
    for tag in ("en-US", "EN-gb", "en_US"):
        exchange = batch(tiny_server.ws, {"type": "transcribe", "language": tag}, wav)
        assert exchange.reply["language"] == "en", tag
        assert_heard(FOX, exchange.reply["text"])


def test_ping_then_transcribe_on_one_connection(tiny_server: Server, voices) -> None:
    exchange = batch(
        tiny_server.ws,
        {"type": "ping"},
        {"type": "ping"},
        {"type": "transcribe"},
        voices["children"].read_bytes(),
    )
    assert exchange.messages[:2] == [{"type": "pong", "status": "ok"}] * 2
    assert_heard(FOX, exchange.messages[2]["text"])
    assert exchange.close_code == 1000


def test_four_concurrent_clients_each_get_their_own_transcript(tiny_server: Server, voices) -> None:
    names = ["children", "market", "window", "coffee"]

    def one(name: str) -> str:
        return transcribe(tiny_server.ws, voices[name].read_bytes()).reply["text"]

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(one, names))
    for name, text in zip(names, texts, strict=True):
        assert_heard(speech.SENTENCES[name], text)


def test_ping_is_answered_while_a_transcription_runs(
    tiny_server: Server, voices, tmp_path: Path
) -> None:
    long = speech.concat([voices[k] for k in speech.SENTENCES] * 3, tmp_path / "long.wav")
    result: dict = {}
    with connect(tiny_server.ws + "/ws/transcribe", max_size=None) as busy:
        busy.send(json.dumps({"type": "transcribe"}))
        busy.send(long.read_bytes())
        running = threading.Event()

        def wait_until_in_flight() -> None:
            while tiny_server.metric("speechgw_requests_in_flight") < 1:
                pass
            running.set()

        watcher = threading.Thread(target=wait_until_in_flight, daemon=True)
        watcher.start()
        assert running.wait(60), "the transcription never started"
        with connect(tiny_server.ws + "/ws/transcribe") as pinger:
            pinger.send(json.dumps({"type": "ping"}))
            pong = json.loads(pinger.recv(timeout=5))
        # the pong came back while the long job was still in the model
        assert tiny_server.metric("speechgw_requests_in_flight") == 1
        assert pong == {"type": "pong", "status": "ok"}
        result = drain(busy).reply
    assert_heard(speech.SENTENCES["window"], result["text"])


def test_health(tiny_server: Server) -> None:
    assert tiny_server.get_json("/health") == {
        "status": "ok",
        "postprocess_enabled": False,
        "version": speechgw.__version__,
        # where each backend runs, for an operator: the model is on the CPU here
        "backends": {
            "whisper": {
                "ready": True,
                "device": "cpu",
                "compute_type": "int8",
                "batch_size": 1,
                "segment_times": "tokens",
            }
        },
    }
    # the release, also as a metric: which replicas of a fleet run which
    assert tiny_server.metric("speechgw_build_info", version=speechgw.__version__) == 1


def _refused(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, Any, Any]:
    """An HTTP request the server refuses: (status, headers, its JSON body)."""
    request = urllib.request.Request(url, data=data, method=method)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    return refused.value.code, refused.value.headers, json.loads(refused.value.read())


def _get_only(path: str, method: str) -> dict[str, str]:
    return {"error": "method_not_allowed", "message": f"{path} answers GET, not {method}"}


def test_a_wrong_method_gets_json_naming_the_one_to_use(tiny_server: Server) -> None:
    """An upload to ``/health`` is answered in JSON, after its body is read (not lost); and a
    method outside HTTP's usual seven, which starlette answered in plain text."""
    upload = _refused(tiny_server.http + "/health", "POST", bytes(300_000))
    assert upload[0] == 405 and upload[1]["Allow"] == "GET, HEAD"
    assert upload[2] == _get_only("/health", "POST")
    for path in ("/health", "/metrics"):
        status, headers, body = _refused(tiny_server.http + path, "PROPFIND")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert body == _get_only(path, "PROPFIND")


def test_the_pages_files_answer_errors_in_json(tiny_server: Server) -> None:
    """The demo page's files: one that is not there, or a method other than GET, in the JSON
    shape of every other answer (starlette's static files answered in plain text)."""
    status, _, body = _refused(tiny_server.http + "/static/nope.js")
    assert status == 404
    assert body == {"error": "not_found", "message": "no file at '/static/nope.js'"}
    status, headers, body = _refused(tiny_server.http + "/static/app.js", "POST", bytes(300_000))
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert body == _get_only("/static/app.js", "POST")
    assert urllib.request.urlopen(tiny_server.http + "/static/app.js", timeout=10).status == 200


def test_plain_http_to_a_websocket_path_is_told_to_upgrade(tiny_server: Server) -> None:
    """curl, or a proxy that drops the Upgrade header (nginx without ``proxy_set_header
    Upgrade``): told what the path is, not that it does not exist."""
    for path in ("/ws/transcribe", "/api/core/google/asr?api_key=k"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(tiny_server.http + path, timeout=10)
        assert refused.value.code == 426 and refused.value.headers["Upgrade"] == "websocket"
        body = json.loads(refused.value.read())
        assert body["error"] == "upgrade_required", body
        assert body["message"].startswith(f"{path.partition('?')[0]} is a WebSocket endpoint")


def test_compression_is_declined_when_the_client_offers_it(tiny_server: Server) -> None:
    with connect(tiny_server.ws + "/ws/transcribe") as ws:  # offers permessage-deflate
        assert ws.request.headers.get("Sec-WebSocket-Extensions")
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None


def test_metrics_count_requests_and_audio(tiny_server: Server, voices) -> None:
    before = tiny_server.metric(
        "asr_requests_total", machine_id="metrics01", task="transcribe", status="ok"
    )
    transcribe(tiny_server.ws, voices["children"].read_bytes(), machine_id="metrics01")
    after = tiny_server.metric(
        "asr_requests_total", machine_id="metrics01", task="transcribe", status="ok"
    )
    assert after == before + 1
    seconds = tiny_server.metric(
        "asr_audio_seconds_total", machine_id="metrics01", task="transcribe"
    )
    assert 2.0 < seconds < 4.0
    assert (
        tiny_server.metric(
            "asr_processing_seconds_count", machine_id="metrics01", task="transcribe"
        )
        >= 1
    )


def test_example_batch_client(tiny_server: Server, voices) -> None:
    import subprocess
    import sys

    from tests.test_config import REPO

    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "batch_client.py"),
            str(voices["coffee"]),
            "--url",
            tiny_server.ws,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert speech.word_recall(speech.SENTENCES["coffee"], result.stdout) >= 0.75, result
    assert "[" in result.stderr  # the timed segments


def test_the_queue_for_the_model_is_in_the_metrics(tiny_server: Server, voices) -> None:
    """Six requests at once for one model worker: ``speechgw_backend_waiting`` shows the
    jobs waiting for it (for one of its places, or at the model between calls) while they
    are answered, and 0 once every answer is in; each answer has its words."""
    wav = voices["market"].read_bytes()
    seen: list[float] = []

    def waiting() -> float:
        seen.append(tiny_server.metric("speechgw_backend_waiting", backend="whisper"))
        return seen[-1]

    assert 'speechgw_backend_waiting{backend="whisper"} 0.0' in tiny_server.get("/metrics")[1]
    with ThreadPoolExecutor(6) as pool:
        answers = [pool.submit(transcribe, tiny_server.ws, wav) for _ in range(6)]
        wait_for(lambda: waiting() >= 3, seconds=60)
        replies = [answer.result().reply for answer in answers]
    for reply in replies:
        assert_heard(speech.SENTENCES["market"], reply["text"])
    assert waiting() == 0, seen


def test_a_short_request_does_not_wait_for_a_long_one(
    tiny_server: Server, voices, seven_windows: tuple[Path, str]
) -> None:
    """One model worker (the CPU default), a recording of several 30 s windows being decoded
    through the OpenAI API, and then a one-sentence batch request: its answer comes while the
    long recording is still decoded (their calls take turns, the shorter recording's first),
    and both have their words."""
    long, said = seven_windows
    with UploadInBackground(tiny_server.http, long) as upload:
        reply = transcribe(tiny_server.ws, voices["market"].read_bytes()).reply
        answered_before_the_long_one = not upload.done.is_set()
    assert_heard(speech.SENTENCES["market"], reply["text"])
    assert answered_before_the_long_one
    assert upload.text and speech.word_recall(said, upload.text) > 0.8, upload.text
