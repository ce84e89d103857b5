"""The OpenAI-compatible HTTP API, driven by the official ``openai`` package as its users drive
it: real servers, the real model, a real SQLite ledger."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from speechgw.media import DECODERS
from tests import speech
from tests.client import multipart_upload, post
from tests.ledger import rows as ledger_rows
from tests.serving import Server, running_server
from tests.waiting import wait_for

KEY = "openai-test-key-0123"
AUTH = {"auth": {"keys": [{"name": "alice", "key": KEY}]}}
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # Whisper's fallback schedule
BASE = {"whisper": {"type": "whisper", "model": "base", "cpu_threads": 2}}
SCRIPTED = {"null": {"type": "scripted", "text": "scripted words"}}
CHILDREN = "The children are playing football in the park."
TRAIN = "The train to London leaves from platform number four."


_CLIENTS: list[OpenAI] = []


def client(server: Server, api_key: str = KEY) -> OpenAI:
    """The official SDK pointed at ``server``; retries off, so that each status is seen."""
    sdk = OpenAI(base_url=server.http + "/v1", api_key=api_key, max_retries=0)
    _CLIENTS.append(sdk)
    return sdk


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai") / "ledger.db"


@pytest.fixture(scope="module")
def server(ledger: Path) -> Iterator[Server]:
    """tiny.en with a key and a real SQLite ledger."""
    with running_server({**AUTH, "store": {"path": str(ledger)}}) as serving:
        yield serving


def test_each_response_format_carries_the_words(server: Server, voices) -> None:
    sdk = client(server)
    with voices["children"].open("rb") as audio:
        answer = sdk.audio.transcriptions.create(model="whisper-1", file=audio)
    assert speech.words(answer.text) == speech.words(CHILDREN)
    # billed by duration, as OpenAI's whisper-1: the seconds the ledger records
    assert answer.usage.type == "duration"
    assert answer.usage.seconds == pytest.approx(speech.duration(voices["children"]), abs=0.01)
    bodies = {}
    for kind in ("text", "srt", "vtt"):
        with voices["children"].open("rb") as audio:
            bodies[kind] = sdk.audio.transcriptions.create(
                model="whisper-1", file=audio, response_format=kind
            )
    assert bodies["text"].endswith("\n") and speech.words(bodies["text"]) == speech.words(CHILDREN)
    # SubRip: index, "HH:MM:SS,mmm --> HH:MM:SS,mmm", text, blank line
    srt = bodies["srt"].split("\n")
    assert srt[0] == "1"
    assert re.fullmatch(r"00:00:00,\d{3} --> 00:00:0\d,\d{3}", srt[1]), srt
    assert speech.words(" ".join(srt[2:])) == speech.words(CHILDREN)
    # WebVTT: the signature line, a blank line, then cues with dots before the milliseconds
    vtt = bodies["vtt"].split("\n")
    assert vtt[0] == "WEBVTT" and vtt[1] == ""
    assert re.fullmatch(r"00:00:00\.\d{3} --> 00:00:0\d\.\d{3}", vtt[2]), vtt
    assert speech.words(" ".join(vtt[3:])) == speech.words(CHILDREN)

    with voices["children"].open("rb") as audio:
        verbose = sdk.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    assert verbose.language == "english"
    assert verbose.duration == pytest.approx(speech.duration(voices["children"]), abs=0.01)
    assert verbose.usage.seconds == verbose.duration
    assert speech.words(verbose.text) == speech.words(CHILDREN)
    assert speech.words(" ".join(s.text for s in verbose.segments)) == speech.words(CHILDREN)
    assert 0 <= verbose.segments[0].start < verbose.segments[-1].end <= verbose.duration + 0.1
    assert verbose.words is None  # only when asked: word timing costs compute


def test_word_timestamps_when_asked(server: Server, voices) -> None:
    with voices["train"].open("rb") as audio:
        verbose = client(server).audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    timed = " ".join(w.word for w in verbose.words)
    assert speech.words(timed) == speech.words(verbose.text)
    assert speech.word_recall(TRAIN, timed) > 0.8
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts)
    assert all(w.start <= w.end <= verbose.duration + 0.1 for w in verbose.words)
    assert verbose.segments is None  # words only, as asked


def _joined(logprobs: list) -> str:
    """The tokens of an answer's ``logprobs``, checked one by one, joined."""
    for item in logprobs:
        assert item.logprob <= 0 and item.bytes == list(item.token.encode()), item
    return "".join(item.token for item in logprobs)


def test_logprobs_when_asked(server: Server, voices) -> None:
    """``include[]=logprobs``, as a tool that measures gpt-4o-transcribe's confidence asks:
    one token per word, whose text joined is the answer's, sure of words said clearly."""
    sdk = client(server)
    with voices["children"].open("rb") as audio:
        plain = sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio)
    assert plain.logprobs is None  # only when asked: it costs the words' alignment
    with voices["children"].open("rb") as audio:
        answer = sdk.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=audio, include=["logprobs"]
        )
    assert answer.text == plain.text and _joined(answer.logprobs) == answer.text
    assert len(answer.logprobs) == len(answer.text.split())
    # a clear voice: most words above even odds
    assert sorted(p.logprob for p in answer.logprobs)[len(answer.logprobs) // 2] > -0.69
    with voices["children"].open("rb") as audio:
        events = list(
            sdk.audio.transcriptions.create(
                model="gpt-4o-mini-transcribe", file=audio, stream=True, include=["logprobs"]
            )
        )
    deltas, done = events[:-1], events[-1]
    assert deltas and all(_joined(event.logprobs) == event.delta for event in deltas)
    assert _joined(done.logprobs) == done.text == "".join(event.delta for event in deltas)


@pytest.mark.parametrize("container", ["mp3", "flac", "ogg", "webm", "m4a"])
def test_compressed_uploads_give_the_words_of_the_wav(
    server: Server, voices, tmp_path: Path, container: str
) -> None:
    """Each file is made from the same 48 kHz stereo rendering as the WAV it is compared with,
    as a recorder would write it. A lossy codec changes the samples a little, and tiny.en on
    synthetic speech can then flip a word ("grandma"/"grandmother"); these two sentences came
    back word for word through all five codecs (measured), so a difference here is the
    decoder's. FLAC is lossless: the same samples, so the same words on any sentence."""
    sdk = client(server)
    names = ("children", "window", "coffee") if container == "flac" else ("children", "window")
    for name in names:
        wav = speech.encode(voices[name], tmp_path / f"{name}.wav", "wav")
        encoded = speech.encode(voices[name], tmp_path / f"{name}.{container}", container)
        with wav.open("rb") as audio:
            expected = sdk.audio.transcriptions.create(model="whisper-1", file=audio).text
        with encoded.open("rb") as audio:
            got = sdk.audio.transcriptions.create(model="whisper-1", file=audio).text
        assert speech.words(got) == speech.words(expected), (name, got, expected)
        if name != "coffee":  # its 48 kHz rendering is misheard as a WAV too
            assert speech.word_recall(speech.SENTENCES[name], got) > 0.7, (name, got)


def test_a_wav_codec_the_wav_reader_lacks_goes_to_ffmpeg(
    server: Server, voices, tmp_path: Path
) -> None:
    adpcm = speech.convert(voices["children"], tmp_path / "adpcm.wav", "-e", "ima-adpcm")
    with adpcm.open("rb") as audio:
        text = client(server).audio.transcriptions.create(model="whisper-1", file=audio).text
    assert speech.word_recall(CHILDREN, text) > 0.8, text


def test_a_decoder_crash_fails_its_upload_and_the_server_serves_on(
    server: Server, voices, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """FFmpeg decodes in a worker process: one that dies while it holds an upload (killed
    here, as a decoder fault would end it) fails that upload with ``invalid_audio``, in
    OpenAI's shape, and the server goes on with the next upload in a new process."""
    mp3 = speech.encode(voices["children"], tmp_path / "children.mp3", "mp3").read_bytes()
    sdk = client(server)
    answers: list = []

    def upload_long_file() -> None:  # 17 minutes of mp3: seconds of decoding
        try:
            sdk.audio.transcriptions.create(model="whisper-1", file=("long.mp3", mp3 * 400))
        except openai.BadRequestError as exc:  # what OpenAI answers an undecodable file
            answers.append(exc)

    uploading = threading.Thread(target=upload_long_file)
    uploading.start()
    wait_for(lambda: DECODERS.pids()[1])
    (decoder,) = DECODERS.pids()[1]
    os.kill(decoder, signal.SIGKILL)
    uploading.join(timeout=60)
    (failed,) = answers
    assert failed.status_code == 400 and failed.body["code"] == "invalid_audio"
    assert failed.body["message"] == (
        "the file could not be decoded as audio (the decoder crashed on it)"
    )
    assert f"decoder process {decoder} ended (signal SIGKILL)" in caplog.text
    text = sdk.audio.transcriptions.create(model="whisper-1", file=("short.mp3", mp3)).text
    assert speech.word_recall(CHILDREN, text) > 0.8, text
    assert decoder not in DECODERS.pids()[0]


def test_ledger_and_metrics_count_the_protocol_by_key_name(
    server: Server, voices, ledger: Path
) -> None:
    before = server.metric("speechgw_errors_total", protocol="openai", error="unauthorized")
    with voices["coffee"].open("rb") as audio:
        raw = client(server).audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=audio, language="en"
        )
    request_id = raw.headers["x-request-id"]
    (row,) = ledger_rows(
        ledger,
        "SELECT key_name, protocol, backend, task, language, audio_seconds FROM usage "
        "WHERE request_id = ?",
        (request_id,),
    )
    assert row[:5] == ("alice", "openai", "whisper", "transcribe", "en")
    assert row[5] == pytest.approx(speech.duration(voices["coffee"]), abs=0.01)
    with pytest.raises(openai.AuthenticationError) as refused, voices["coffee"].open("rb") as audio:
        client(server, api_key="wrong").audio.transcriptions.create(model="whisper-1", file=audio)
    assert refused.value.status_code == 401
    assert refused.value.body["code"] == "unauthorized"
    after = server.metric("speechgw_errors_total", protocol="openai", error="unauthorized")
    assert after == before + 1


def test_stream_sends_the_text_as_it_is_recognised(
    server: Server, long_speech: tuple[Path, str], ledger: Path
) -> None:
    path, said = long_speech
    with path.open("rb") as audio:
        stream = client(server).audio.transcriptions.create(
            model="whisper-1", file=audio, stream=True
        )
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        request_id = stream.response.headers["x-request-id"]
        first = next(iter(stream))
        # the first window's words are here while the second window is still decoded
        in_flight = server.metric("speechgw_requests_in_flight")
        events = [first, *stream]
    assert in_flight == 1
    *deltas, done = events
    assert [e.type for e in deltas] == ["transcript.text.delta"] * len(deltas)
    assert len(deltas) >= 2 and done.type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == done.text  # the deltas add up to the text
    assert speech.word_recall(said, done.text) > 0.9, done.text
    ((seconds,),) = ledger_rows(
        ledger, "SELECT audio_seconds FROM usage WHERE request_id = ?", (request_id,)
    )
    assert seconds == pytest.approx(speech.duration(path), abs=0.01)


def test_verbose_segments_carry_whispers_decoding_statistics(
    server: Server, long_speech: tuple[Path, str]
) -> None:
    """Tools judge verbose_json segments by Whisper's statistics (dropping those with a high
    no_speech_prob and a low avg_logprob, say): they are the decoder's own, not placeholders,
    and a segment's tokens are its text."""
    from speechgw.backends.whisper import resolve_model
    from tokenizers import Tokenizer

    path, _ = long_speech
    with path.open("rb") as audio:
        verbose = client(server).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    tokenizer = Tokenizer.from_file(str(Path(resolve_model("tiny.en")) / "tokenizer.json"))
    for segment in verbose.segments:
        assert tokenizer.decode(segment.tokens) == segment.text, segment
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1, segment
        assert segment.compression_ratio > 0 and segment.temperature in TEMPERATURES, segment
        assert segment.seek / 100 <= segment.start + 0.02  # its window starts before it
    seeks = [s.seek for s in verbose.segments]
    assert seeks[0] == 0 and seeks == sorted(seeks) and seeks[-1] >= 2000  # the second window
    # each segment's text after its space, as OpenAI writes them: concatenated, they are the text
    assert "".join(s.text for s in verbose.segments).strip() == verbose.text


def test_a_client_that_leaves_a_stream_stops_it_unbilled(
    server: Server, long_speech: tuple[Path, str], ledger: Path, caplog
) -> None:
    path, _ = long_speech
    ok = {"machine_id": "unknown", "task": "transcribe", "status": "ok"}
    answered = server.metric("asr_requests_total", **ok)
    with path.open("rb") as audio:
        stream = client(server).audio.transcriptions.create(
            model="whisper-1", file=audio, stream=True
        )
        request_id = stream.response.headers["x-request-id"]
        assert next(iter(stream)).type == "transcript.text.delta"
        stream.close()  # the user stops it halfway
    wait_for(lambda: f"request={request_id} " in caplog.text)
    (line,) = [r.getMessage() for r in caplog.records if f"request={request_id} " in r.message]
    assert line.endswith("outcome=abandoned"), line
    rows = ledger_rows(ledger, "SELECT COUNT(*) FROM usage WHERE request_id = ?", (request_id,))
    assert rows == [(0,)]
    assert server.metric("asr_requests_total", **ok) == answered
    wait_for(lambda: server.metric("speechgw_requests_in_flight") == 0)


def test_stream_from_a_backend_that_answers_at_once(voices) -> None:
    """A backend without progress reports (here the scripted one) streams its whole text as
    one delta; no words is a done event alone; an outage before any text is a plain 503."""
    wav = voices["coffee"].read_bytes()
    for text, expected in (("scripted words", ["scripted words"]), ("", [])):
        with running_server(AUTH, backends={"null": {"type": "scripted", "text": text}}) as server:
            events = list(
                client(server).audio.transcriptions.create(
                    model="whisper-1", file=("a.wav", wav), stream=True
                )
            )
        assert [e.delta for e in events[:-1]] == expected
        assert events[-1].type == "transcript.text.done" and events[-1].text == text
    failing = {"null": {"type": "scripted", "fail": "unavailable"}}
    with (
        running_server(AUTH, backends=failing) as server,
        pytest.raises(openai.APIStatusError) as failed,
    ):
        client(server).audio.transcriptions.create(
            model="whisper-1", file=("a.wav", wav), stream=True
        )
    assert failed.value.status_code == 503
    assert failed.value.body["code"] == "backend_unavailable"


def test_models_lists_what_may_be_sent_and_needs_the_key(server: Server) -> None:
    # OpenAI's transcription models, so that a tool written for any of them works unchanged
    names = [
        "whisper-1",
        "gpt-transcribe",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o-mini-transcribe-2025-12-15",
    ]
    assert [m.id for m in client(server).models.list()] == names
    assert client(server).models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-4o-transcribe-diarize")
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").models.list()


def test_a_tool_written_for_gpt_4o_transcribe_works_unchanged(server: Server, voices) -> None:
    """OpenAI's quickstart: ``gpt-4o-transcribe`` with ``stream=True`` (its SDK's events)."""
    with voices["children"].open("rb") as audio:
        events = list(
            client(server).audio.transcriptions.create(
                model="gpt-4o-transcribe", file=audio, stream=True
            )
        )
    assert events[-1].type == "transcript.text.done"
    assert speech.words(events[-1].text) == speech.words(CHILDREN)
    # billed as the plain answer is, in the same usage object
    assert events[-1].usage.type == "duration"
    assert events[-1].usage.seconds == pytest.approx(speech.duration(voices["children"]), abs=0.01)


def test_a_tool_written_for_gpt_transcribe_works_unchanged(server: Server, tmp_path: Path) -> None:
    """The SDK's newest model name, with its ``keywords[]`` (names the speaker will say) and
    its answer's ``languages``."""
    speech.require_tools()
    said = "Our new database is called Postgres, and the cache is Valkey."
    audio = speech.speak(said, tmp_path / "names.wav")
    sdk = client(server)
    with audio.open("rb") as upload:
        answer = sdk.audio.transcriptions.create(
            model="gpt-transcribe", file=upload, keywords=["Postgres", "Valkey"]
        )
    # without them tiny.en wrote "Our new NATO base is Gold Coast, because, and the cash is
    # my kid." (base: "...is called PostGun and the cash is my key."); with them, "...called
    # Postgres, and the cash is Malkey."
    assert {"postgres", "valkey"} & set(speech.words(answer.text)), answer.text
    assert [language.code for language in answer.languages] == ["en"]
    # a stream of deltas hears them too
    with audio.open("rb") as upload:
        events = list(
            sdk.audio.transcriptions.create(
                model="gpt-transcribe", file=upload, keywords=["Postgres", "Valkey"], stream=True
            )
        )
    assert {"postgres", "valkey"} & set(speech.words(events[-1].text)), events[-1].text
    assert [language.code for language in events[-1].languages] == ["en"]
    # a recording without words: no language heard
    silent = tmp_path / "silent.wav"
    speech.convert(audio, silent, effects=("vol", "0"))
    with silent.open("rb") as upload:
        nothing = sdk.audio.transcriptions.create(model="gpt-transcribe", file=upload)
    assert nothing.text == "" and nothing.languages == []


def test_request_errors_have_openais_shape(
    server: Server, voices, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sdk = client(server)
    cases = [  # fields, status, code, words of the message, the field named (param)
        (
            {"model": "gpt-4o-transcribe-diarize"},
            400,
            "invalid_request",
            "known: whisper-1",
            "model",
        ),
        ({"response_format": "xml"}, 400, "invalid_request", "is unknown", "response_format"),
        ({"language": "english!"}, 400, "unsupported_language", "ISO 639-1", "language"),
        ({"temperature": 3}, 400, "invalid_request", "temperature", "temperature"),
        (
            {"timestamp_granularities": ["word"]},
            400,
            "invalid_request",
            "verbose_json",
            "timestamp_granularities",
        ),
        ({"stream": True, "response_format": "srt"}, 400, "invalid_request", "stream=", "stream"),
        ({"include": ["tokens"]}, 400, "invalid_request", "'tokens' is unknown", "include"),
        (
            {"include": ["logprobs"], "response_format": "verbose_json"},
            400,
            "invalid_request",
            "needs response_format 'json'",
            "include",
        ),
        (
            {"languages": ["en", "klingon"]},
            400,
            "unsupported_language",
            "'klingon' is not an ISO 639-1 code",
            "languages",
        ),
        (  # tiny.en hears English only
            {"languages": ["de", "fr"]},
            400,
            "unsupported_language",
            "language detection among de, fr is not available for this request",
            "languages",
        ),
        ({"languages": ["German"]}, 400, "unsupported_language", "'de'", "language"),
        (
            {"keywords": ["Kubernetes", "x" * 101]},
            400,
            "invalid_request",
            "longer than 100 characters",
            "keywords",
        ),
        (
            {"keywords": [f"word{n}" for n in range(101)]},
            400,
            "invalid_request",
            "101 keywords[] sent; at most 100",
            "keywords",
        ),
    ]
    for fields, status, code, words, param in cases:
        arguments = {"model": "whisper-1", **fields}
        with pytest.raises(openai.APIStatusError) as failed, voices["coffee"].open("rb") as audio:
            sdk.audio.transcriptions.create(file=audio, **arguments)
        assert failed.value.status_code == status, fields
        assert failed.value.body["code"] == code and words in failed.value.body["message"]
        assert failed.value.body["type"] == "invalid_request_error"
        assert failed.value.param == param, fields  # as OpenAI names the field
        # the request's id, as its access-log line gives it: what a support request quotes
        request_id = failed.value.response.headers["x-request-id"]
        logged = f"request={request_id} "
        wait_for(lambda logged=logged: logged in caplog.text)
        (line,) = [r.getMessage() for r in caplog.records if logged in r.message]
        assert line.endswith(f"outcome={code}"), line
    text = tmp_path / "notes.txt"
    text.write_text("not audio at all")
    # OpenAI's status for a file that is not audio: code written against it catches the SDK's
    # BadRequestError
    with pytest.raises(openai.BadRequestError) as failed, text.open("rb") as notes:
        sdk.audio.transcriptions.create(model="whisper-1", file=notes)
    assert failed.value.status_code == 400
    assert failed.value.body["code"] == "invalid_audio"
    # a header no recording has: refused from the header, not after seconds of resampling
    absurd = tmp_path / "absurd.wav"
    speech.convert(voices["coffee"], absurd, "-b", "16")
    header = bytearray(absurd.read_bytes())
    header[24:28] = (989_871_744).to_bytes(4, "little")  # the fmt chunk's sample rate
    absurd.write_bytes(header)
    with pytest.raises(openai.BadRequestError) as failed, absurd.open("rb") as upload:
        sdk.audio.transcriptions.create(model="whisper-1", file=upload)
    assert failed.value.body["code"] == "invalid_audio"
    assert "sample rate is 989871744 Hz" in failed.value.body["message"]
    # English-only model: no translation
    with (
        pytest.raises(openai.BadRequestError) as failed,
        voices["coffee"].open("rb") as audio,
        pytest.warns(DeprecationWarning),  # the SDK marks the endpoint deprecated
    ):
        sdk.audio.translations.create(model="whisper-1", file=audio)
    assert failed.value.body["code"] == "unsupported_task"


def test_audio_sent_as_a_text_field_is_told_to_come_as_a_file(server: Server, voices) -> None:
    """``curl -F "file=<audio.wav"`` (and form builders given bytes without a name) send the
    file as a text field: a short one was told that 'file' is required, a long one that a
    part exceeded 64KB, neither what to do."""
    wav = voices["coffee"].read_bytes()
    assert len(wav) > 64 * 1024
    for audio in (wav, wav[:20_000]):
        body, content_type = multipart_upload(audio, filename=None)
        status, answer = post(server.http + "/v1/audio/transcriptions", body, content_type, KEY)
        assert status == 400, answer
        assert answer["error"]["code"] == "invalid_request"
        assert "'file' must be sent as a file" in answer["error"]["message"], answer
        assert "curl -F file=@audio.wav" in answer["error"]["message"]
        if len(audio) > 64 * 1024:
            assert answer["error"]["message"].startswith("a text field is over 64 KB; if it is")
    body, content_type = multipart_upload(wav)  # the same with a filename
    status, answer = post(server.http + "/v1/audio/transcriptions", body, content_type, KEY)
    assert status == 200 and "coffee" in answer["text"], answer


def test_a_wrong_path_or_method_gets_openais_invalid_url(server: Server, voices) -> None:
    sdk = client(server)
    with pytest.raises(openai.NotFoundError) as failed:
        sdk.get("/audio/transcriptions", cast_to=object)
    error = failed.value.body
    assert error["message"] == "Invalid URL (GET /v1/audio/transcriptions)"
    assert error["type"] == "invalid_request_error"
    # a trailing slash, upload and all: the same answer, not a redirect that drops the body
    upload, content_type = multipart_upload(voices["coffee"].read_bytes())
    request = urllib.request.Request(
        server.http + "/v1/audio/transcriptions/",
        data=upload,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 404
    error = json.loads(refused.value.read())["error"]
    assert error["message"] == "Invalid URL (POST /v1/audio/transcriptions/)"
    # a method outside HTTP's usual seven: the same JSON, not starlette's plain-text 405
    request = urllib.request.Request(server.http + "/v1/models", method="PROPFIND")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 404
    error = json.loads(refused.value.read())["error"]
    assert error["message"] == "Invalid URL (PROPFIND /v1/models)"
    # a base URL without /v1, a common slip: the SDK shows where the API is
    lost = OpenAI(base_url=server.http, api_key=KEY, max_retries=0)
    _CLIENTS.append(lost)
    with pytest.raises(openai.NotFoundError) as failed:
        lost.models.list()
    assert "the OpenAI-compatible API is under /v1" in failed.value.message
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.http + "/modelsx", timeout=10)
    assert json.loads(refused.value.read())["error"] == "not_found"  # not a path of the API
    with pytest.raises(openai.NotFoundError) as failed:
        lost.audio.transcriptions.create(model="whisper-1", file=voices["coffee"].read_bytes())
    assert "the OpenAI-compatible API is under /v1" in failed.value.message
    with pytest.raises(openai.NotFoundError):
        sdk.delete("/models/whisper-1", cast_to=object)
    with voices["coffee"].open("rb") as audio:
        assert "coffee" in sdk.audio.transcriptions.create(model="whisper-1", file=audio).text


def _raw_upload(port: int, headers: str, body: bytes) -> str:
    """Send a request's head and part of its body, then read the answer without sending the
    rest: an answer proves the server refused the upload before its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
        sock.sendall(body)
        answer = b""
        while b"}}" not in answer and (chunk := sock.recv(65536)):  # to the JSON's end
            answer += chunk
        return answer.decode("latin-1")


def test_a_body_over_the_limit_is_refused_while_it_is_read(voices) -> None:
    limit = 200_000
    with running_server({**AUTH, "limits": {"max_frame_bytes": limit}}) as server:
        sdk = client(server)
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.audio.transcriptions.create(model="whisper-1", file=("big.wav", bytes(3_000_000)))
        assert failed.value.status_code == 413
        assert failed.value.body["code"] == "audio_too_long"
        boundary = "b0undary"
        part = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"'
            "\r\n\r\n"
        ).encode()
        head = (
            f"Authorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        )
        # declared too large: answered at once, before any of the body
        answer = _raw_upload(server.port, head + "Content-Length: 50000000\r\n", part)
        assert answer.startswith("HTTP/1.1 413") and "audio_too_long" in answer
        # chunked, no length: answered once the limit is passed, with the upload unfinished
        body = part + bytes(limit)
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192])
            for i in range(0, len(body), 8192)
        )
        answer = _raw_upload(server.port, head + "Transfer-Encoding: chunked\r\n", chunks)
        assert answer.startswith("HTTP/1.1 413") and "audio_too_long" in answer
        # and the server serves the next client
        with voices["coffee"].open("rb") as audio:
            assert "coffee" in sdk.audio.transcriptions.create(model="whisper-1", file=audio).text


def test_audio_over_the_duration_limit_is_openais_400(voices, tmp_path: Path) -> None:
    """OpenAI answers a recording longer than a model takes with 400, as it does a file that
    is not audio; only a body over the size limit is 413. A WAV is measured from its header,
    an mp3 while FFmpeg decodes it (stopping there)."""
    long = speech.concat([voices["children"]] * 3, tmp_path / "long.wav")
    mp3 = speech.encode(long, tmp_path / "long.mp3", "mp3")
    with running_server({**AUTH, "limits": {"max_audio_seconds": 5}}) as server:
        sdk = client(server)
        for upload in (long, mp3):
            with pytest.raises(openai.BadRequestError) as failed, upload.open("rb") as audio:
                sdk.audio.transcriptions.create(model="whisper-1", file=audio)
            assert failed.value.body["code"] == "audio_too_long", upload.name
            assert "the limit is 5 s" in failed.value.body["message"], upload.name
            assert failed.value.body["type"] == "invalid_request_error"
        with voices["children"].open("rb") as audio:
            text = sdk.audio.transcriptions.create(model="whisper-1", file=audio).text
        assert speech.word_recall(CHILDREN, text) > 0.8, text


@pytest.mark.parametrize(
    "path", ["/v1/audio/transcriptions", "/v1/audio/transcriptions/", "/audio/translations", "/up"]
)
def test_an_upload_refused_early_is_read_to_its_end_before_the_connection_closes(
    server: Server, path: str
) -> None:
    """A wrong key (or a wrong path) is answered from the request's head, while the client is
    still sending its file, as every client does before it reads. The connection stays open
    until the upload ends: closed at once, the client's next write was reset (Node's fetch,
    the official ``openai`` package's: EPIPE, "Connection error" instead of the 401)."""
    size, piece = 1_000_000, 50_000
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer wrong\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {size}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode())
        wait_for(lambda: select.select([sock], [], [], 0)[0])  # answered from the head
        for _ in range(size // piece):
            sock.sendall(bytes(piece))  # BrokenPipe/ConnectionReset here before the fix
            time.sleep(0.02)
        answer = b""
        while chunk := sock.recv(65536):  # to the close, which follows the upload's end
            answer += chunk
    status = 401 if path == "/v1/audio/transcriptions" else 404
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:80]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])
    if path == "/up":  # no API's path: where to go instead
        endpoints = "/health, /metrics, /v1/audio/transcriptions, /v1/audio/translations"
        assert error["message"].endswith(f"there are: {endpoints}, /v1/models"), error
    elif status == 404:
        assert error["error"]["message"].startswith("Invalid URL (POST ")
    else:
        assert error["error"]["code"] == "unauthorized"


def test_a_stalled_upload_times_out_and_others_are_served(voices) -> None:
    overrides = {**AUTH, "limits": {"receive_timeout_seconds": 0.5}}
    with running_server(overrides, backends=SCRIPTED) as server:
        boundary = "b0undary"
        head = (
            f"Authorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 100000\r\n"
        )
        answer = _raw_upload(server.port, head, f"--{boundary}\r\n".encode())
        assert answer.startswith("HTTP/1.1 408") and '"code":"timeout"' in answer
        wav = voices["coffee"].read_bytes()
        text = client(server).audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
        assert text.text == "scripted words"


def test_busy_rate_limited_down_and_crashed_backends_get_their_statuses(voices) -> None:
    slow = {"null": {"type": "scripted", "text": "slow", "delay_seconds": 1.0}}
    overrides = {
        **AUTH,
        "limits": {"max_pending_jobs": 1, "busy_retry_after_seconds": 7},
        "routing": [{"backend": "null"}],
    }
    wav = voices["coffee"].read_bytes()
    with running_server(overrides, backends=slow) as server:
        sdk = client(server)
        started = threading.Event()
        first: list[str] = []

        def occupy() -> None:
            started.set()
            first.append(
                sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav)).text
            )

        holder = threading.Thread(target=occupy)
        holder.start()
        started.wait()
        wait_for(lambda: server.metric("speechgw_requests_in_flight") == 1)
        with pytest.raises(openai.APIStatusError) as busy:
            sdk.audio.transcriptions.create(model="whisper-1", file=("b.wav", wav))
        holder.join()
        assert first == ["slow"]
        assert busy.value.status_code == 503 and busy.value.body["code"] == "server_busy"
        assert busy.value.response.headers["retry-after"] == "7"

    limited = {**AUTH, "limits": {"rate_limit_per_key": 1, "rate_limit_burst": 1}}
    with running_server(limited, backends=SCRIPTED) as server:
        sdk = client(server)
        assert sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav)).text
        with pytest.raises(openai.RateLimitError) as limited_error:
            sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
        assert limited_error.value.body["code"] == "rate_limited"
        assert int(limited_error.value.response.headers["retry-after"]) >= 1

    for fail, status, code in (
        ("unavailable", 503, "backend_unavailable"),
        ("crash", 500, "internal_error"),
    ):
        failing = {"null": {"type": "scripted", "fail": fail}}
        with running_server(AUTH, backends=failing) as server:
            with pytest.raises(openai.APIStatusError) as failed:
                client(server).audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
            assert failed.value.status_code == status and failed.value.body["code"] == code
            if status == 503:
                assert failed.value.response.headers["retry-after"] == "5"


def test_model_names_route_as_the_admin_says(voices) -> None:
    backends = {
        "fast": {"type": "scripted", "text": "from the fast backend"},
        "exact": {"type": "scripted", "text": "from the exact backend"},
    }
    routing = [
        {"backend": "fast", "match": {"model": ["whisper-fast"]}},
        {"backend": "exact", "match": {"model": ["whisper-1", "whisper-exact"]}},
    ]
    wav = voices["coffee"].read_bytes()
    with running_server({**AUTH, "routing": routing}, backends=backends) as server:
        sdk = client(server)
        assert [m.id for m in sdk.models.list()] == ["whisper-1", "whisper-exact", "whisper-fast"]
        for model, text in (
            ("whisper-fast", "from the fast backend"),
            ("whisper-exact", "from the exact backend"),
            ("whisper-1", "from the exact backend"),
        ):
            got = sdk.audio.transcriptions.create(model=model, file=("a.wav", wav)).text
            assert got == text
        with pytest.raises(openai.BadRequestError) as unknown:
            sdk.audio.transcriptions.create(model="large-v3", file=("a.wav", wav))
        assert "known: whisper-1, whisper-exact, whisper-fast" in unknown.value.body["message"]


@pytest.fixture(scope="module")
def multilingual_server() -> Iterator[Server]:
    with running_server(AUTH, backends=BASE) as serving:
        yield serving


def spoken_german(factory: pytest.TempPathFactory, sentence: str, words_per_minute: int) -> Path:
    speech.require_tools()
    folder = factory.mktemp("german")
    return speech.speak(sentence, folder / "de.wav", voice="de", words_per_minute=words_per_minute)


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spoken_german(tmp_path_factory, "Wir fahren morgen mit dem Zug nach Berlin.", 140)


def test_language_is_detected_when_not_given(multilingual_server: Server, german: Path) -> None:
    with german.open("rb") as audio:
        verbose = client(multilingual_server).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    assert verbose.language == "german"
    assert speech.words(verbose.text) == speech.words("Wir fahren morgen mit dem Zug nach Berlin")
    # the language as the answer named it, sent back: a client that detects once, then names it
    with german.open("rb") as audio:
        named = client(multilingual_server).audio.transcriptions.create(
            model="whisper-1", file=audio, language=verbose.language
        )
    assert speech.words(named.text) == speech.words(verbose.text)


@pytest.mark.parametrize("batch_size", [None, 4])
def test_languages_sent_are_the_ones_detection_chooses_among(
    multilingual_server: Server,
    tmp_path_factory: pytest.TempPathFactory,
    batch_size: int | None,
) -> None:
    """``languages[]``: a short Swedish sentence, which base left to itself hears as another
    language (Spanish at 0.17, Swedish 0.01, in-process at espeak-ng's default speed; Polish
    batched), is heard and written as Swedish when the client says it is Swedish, Norwegian or
    Danish. Batching (with the CUDA default, a recording cut at its pauses), the detections
    go to the model in batches and come back each to its own job."""
    speech.require_tools()
    folder = tmp_path_factory.mktemp("swedish")
    swedish = speech.speak("Vi ses i morgon.", folder / "sv.wav", voice="sv")
    stack = contextlib.ExitStack()
    server = multilingual_server
    if batch_size is not None:
        options = {**BASE["whisper"], "batch_size": batch_size, "segment_times": "sentences"}
        server = stack.enter_context(running_server(AUTH, backends={"whisper": options}))
    with stack:
        _swedish_among(client(server), swedish)


def _swedish_among(sdk: OpenAI, swedish: Path) -> None:
    with swedish.open("rb") as audio:
        answer = sdk.audio.transcriptions.create(
            model="gpt-transcribe", file=audio, languages=["sv", "no", "da"]
        )
    assert [language.code for language in answer.languages] == ["sv"]
    assert speech.word_recall("Vi ses i morgon.", answer.text) >= 0.75, answer.text
    with swedish.open("rb") as audio:
        verbose = sdk.audio.transcriptions.create(
            model="gpt-transcribe",
            file=audio,
            languages=["Swedish", "Norwegian", "Danish"],  # names as verbose_json writes them
            response_format="verbose_json",
        )
    assert verbose.language == "swedish" and verbose.text == answer.text
    # all of them: what base hears by itself (not Swedish)
    with swedish.open("rb") as audio:
        alone = sdk.audio.transcriptions.create(model="gpt-transcribe", file=audio)
    assert [language.code for language in alone.languages] != ["sv"]


def test_silence_in_no_named_language_is_answered_in_english(
    multilingual_server: Server, tmp_path: Path
) -> None:
    """No words, and no language to hear in them: base heard 10 s of silence as Welsh. The
    answer is empty and in English, as a recording cut at its pauses (the CUDA default) is
    answered."""
    silence = speech.made_sound(tmp_path / "silence.wav", 10)
    with silence.open("rb") as audio:
        verbose = client(multilingual_server).audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    assert (verbose.text, verbose.segments, verbose.language) == ("", [], "english")


MINUTES = (
    "The committee met on Monday morning to review the budget for the coming year. Several "
    "members asked whether the new library could open before the winter, and the treasurer "
    "explained that the builders needed three more months. After a short break, the group "
    "discussed the summer festival, the repairs to the old bridge, and the plan to plant trees "
    "along the river. Everyone agreed to meet again next week. The meeting closed at noon, and "
    "the minutes will be sent to every member by email before Friday."
)
EVENING = (
    "Am Abend gingen wir gemeinsam in die Stadt. Das Wetter war schön, und wir tranken Kaffee "
    "auf dem Marktplatz. Danach fuhren wir mit dem Zug nach Hause."
)


TWO_SENTENCES = MINUTES[: MINUTES.index("After a short break")].strip()


SAID = {  # what is said, in order, and in which voice
    "English, German in the second window": [(MINUTES, "en"), (EVENING, "de")],
    "English, then German, in one window": [(TWO_SENTENCES, "en"), (EVENING, "de")],
    "German, then English, in one window": [(EVENING, "de"), (TWO_SENTENCES, "en")],
}


@pytest.fixture(scope="module", params=list(SAID))
def two_languages(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, list[str]]:
    """English and German, the English said, and the languages in the order said. Over 30 s
    of English puts the German in Whisper's second window, which may begin on the last
    English words; 13 s of English and 10 s of German are one window, heard as English at
    0.76 (0.77 the other way round)."""
    speech.require_tools()
    folder = tmp_path_factory.mktemp("two-languages")
    parts = [
        speech.speak(text, folder / f"{i}.wav", voice=voice, words_per_minute=150)
        for i, (text, voice) in enumerate(SAID[request.param])
    ]
    english = next(text for text, voice in SAID[request.param] if voice == "en")
    assert (speech.duration(parts[0]) > 30.0) == (english == MINUTES)
    voices = [voice for _, voice in SAID[request.param]]
    return speech.concat(parts, folder / "both.wav"), english, voices


@pytest.mark.parametrize(
    ("batch_size", "segment_times"), [(None, None), (4, None), (4, "sentences")]
)
def test_a_recording_that_changes_language_is_written_in_each(
    multilingual_server: Server,
    two_languages: tuple[Path, str, list[str]],
    batch_size: int | None,
    segment_times: str | None,
) -> None:
    """No language named: each 30 s window is heard for its own. Decoded on the English
    window's text, the German came back translated ("we drank coffee at the market place");
    in a window that held both, heard as English, as English sounds ("I'm armed gang" for
    "Am Abend gingen"): such a window is decoded again, up to where the language changes, in
    its first part's language, and the next begins there. Batching, the windows' language
    detections go to the model in batches. With ``segment_times: sentences`` (the CUDA
    default: windows cut at pauses, decoded as text alone) a window heard unsurely is decoded
    with timestamps, so that the change is found the same way (as text alone, the German was
    left out). Words are timed too (faster-whisper times a window's words as it splits it)."""
    recording, english, voices = two_languages
    with contextlib.ExitStack() as stack:
        server = multilingual_server
        if batch_size is not None:
            options = {**BASE["whisper"], "batch_size": batch_size}
            if segment_times is not None:
                options["segment_times"] = segment_times
            server = stack.enter_context(running_server(AUTH, backends={"whisper": options}))
        with recording.open("rb") as audio:
            verbose = client(server).audio.transcriptions.create(
                model="whisper-1",
                file=audio,
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
            )
    heard = set(speech.words(verbose.text))
    assert speech.word_recall(english, verbose.text) > 0.8, verbose.text
    assert speech.words(" ".join(w.word for w in verbose.words)) == speech.words(verbose.text)
    assert speech.word_recall(EVENING, verbose.text) > 0.6, verbose.text
    assert not heard & {"coffee", "market", "evening", "train"}, verbose.text
    assert heard & {"abend", "gingen", "gemeinsam", "stadt"}, verbose.text  # its first sentence
    assert verbose.language in ("english", "german")  # the first window's (OpenAI has one)
    # gpt-transcribe's field names both, in the order heard
    assert [language["code"] for language in verbose.languages] == voices, verbose.languages


def test_a_recording_in_one_language_decodes_the_same_named_or_not(
    multilingual_server: Server, tmp_path: Path
) -> None:
    """Each window is heard for its language, but the English windows keep the text before
    them as their prompt: the words are those of the language named."""
    speech.require_tools()
    english = speech.speak(MINUTES, tmp_path / "en.wav", words_per_minute=150)
    sdk = client(multilingual_server)
    texts = []
    for language in ("en", openai.NOT_GIVEN):
        with english.open("rb") as audio:
            texts.append(
                sdk.audio.transcriptions.create(model="whisper-1", file=audio, language=language)
            )
    assert texts[0].text == texts[1].text
    assert speech.word_recall(MINUTES, texts[1].text) > 0.8, texts[1].text


@pytest.fixture(scope="module")
def german_coffee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence that base translates at temperature 0 (average log-probability -0.88), so
    the same English every time. The train to Berlin decodes at -1.07, under Whisper's -1.0
    threshold: its translation falls back to sampling, seeded per worker thread, and one
    server process in many answered with other words."""
    return spoken_german(tmp_path_factory, "Ich trinke jeden Morgen eine Tasse Kaffee.", 160)


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_translation_to_english_in_each_format(
    multilingual_server: Server, german_coffee: Path
) -> None:
    sdk = client(multilingual_server)
    answers = {}
    for kind in ("json", "text", "srt", "vtt", "verbose_json"):
        with german_coffee.open("rb") as audio:
            answers[kind] = sdk.audio.translations.create(
                model="whisper-1", file=audio, response_format=kind
            )
    german_words = {"ich", "trinke", "jeden", "morgen", "eine", "tasse", "kaffee"}
    texts = {
        "json": answers["json"].text,
        "verbose_json": answers["verbose_json"].text,
        **{kind: answers[kind] for kind in ("text", "srt", "vtt")},
    }
    for kind, text in texts.items():
        words = set(speech.words(text))
        assert "coffee" in words and not words & german_words, (kind, text)
    # one decode at temperature 0, whatever the format
    spoken = speech.words(texts["json"])
    assert all(speech.words(_cue_text(texts[k])) == spoken for k in ("srt", "vtt")), texts
    assert speech.words(texts["text"]) == speech.words(texts["verbose_json"]) == spoken
    assert answers["srt"].startswith("1\n00:00:00,")
    assert answers["vtt"].startswith("WEBVTT\n\n00:00:00.")
    verbose = answers["verbose_json"]
    assert verbose.language == "english"  # what OpenAI's API says of a translation
    assert verbose.task == "translate"


def _cue_text(subtitles: str) -> str:
    """The words of SRT or VTT cues, without the numbers and times."""
    return " ".join(
        line
        for line in subtitles.splitlines()
        if line and "-->" not in line and not line.isdigit() and line != "WEBVTT"
    )
