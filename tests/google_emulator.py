"""A local Google Cloud Speech v1 server for the tests: a real gRPC server that implements
``google.cloud.speech.v1.Speech`` (Recognize and StreamingRecognize) with the
``google-cloud-speech`` package's own protobuf messages.

It enforces the rules a client can break (the config comes first in a stream, 60 s of audio
per Recognize, 25 KB of audio per streaming request, 305 s per stream), answering with
Google's status codes and messages, and injects faults on demand: queue ``UNAVAILABLE``,
``DEADLINE_EXCEEDED``, ``PERMISSION_DENIED``, ``SLOW`` (answers after ``slow_seconds``) or
``ABORT`` (a stream cut after 0.5 s of audio) in ``faults``; each call takes the next one. A
stream's fault is answered once the client has half-closed, or, written ``UNAVAILABLE@2.5``,
as soon as 2.5 s of audio have arrived.

StreamingRecognize endpoints as Google does: webrtcvad finds speech, and after
``endpoint_seconds`` of silence the utterance gets one final result (its words timed when the
config asks for word offsets), while the client is still sending. Transcripts come from
``recognizer(pcm, language_code)`` (for example a real faster-whisper model) or are the
scripted ``text``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import webrtcvad
from google.cloud import speech
from google.protobuf import duration_pb2

SERVICE = "google.cloud.speech.v1.Speech"
SYNC_LIMIT_SECONDS = 60
STREAM_LIMIT_SECONDS = 305
STREAM_REQUEST_BYTES = 25 * 1024  # audio per StreamingRecognizeRequest


@dataclass
class Call:
    """One call as the emulator saw it; a stream's audio and finals grow as they arrive."""

    method: str
    config: Any
    audio: bytes | bytearray
    finals: list[str] = field(default_factory=list)
    interims: list[str] = field(default_factory=list)
    status: str = "open"
    """``open`` while a stream runs, then ``ok``, ``cancelled`` or the code it failed with."""


@dataclass
class SpeechEmulator:
    text: str = "hello from the emulator"
    recognizer: Callable[[bytes, str], str] | None = None
    hears: Callable[[bytes, list[str]], str] | None = None
    """Which of the languages a config names (``language_code``, then
    ``alternative_language_codes``) the audio is in, which each result then says in its
    ``language_code`` (lower case, as Google writes it) and ``recognizer`` is given; None:
    the first."""
    slow_seconds: float = 3.0
    endpoint_seconds: float = 0.5
    untimed: bool = False
    """Finals without ``result_end_time`` or word times (the API leaves them out at times)."""
    faults: deque[str] = field(default_factory=deque)
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _take_fault(self) -> str | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def _fault(self, context: grpc.ServicerContext, fault: str | None = "next") -> str | None:
        if fault == "next":
            fault = self._take_fault()
        if fault in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "PERMISSION_DENIED"):
            context.abort(getattr(grpc.StatusCode, fault), _MESSAGES[fault])
        if fault == "SLOW":
            time.sleep(self.slow_seconds)
        return fault

    def _transcript(self, pcm: bytes, config: Any) -> str:
        if self.recognizer is not None:
            return self.recognizer(pcm, self._language(pcm, config))
        return self.text

    def _language(self, pcm: bytes, config: Any) -> str:
        named = [config.language_code, *config.alternative_language_codes]
        return self.hears(pcm, named) if self.hears is not None else named[0]

    @staticmethod
    def _seconds(pcm: bytes, config: Any) -> float:
        return len(pcm) / 2 / (config.sample_rate_hertz or 16000)

    def recognize(self, request: Any, context: grpc.ServicerContext) -> Any:
        config, pcm = request.config, request.audio.content
        self.calls.append(Call("Recognize", config, pcm))
        self._fault(context)
        if self._seconds(pcm, config) > SYNC_LIMIT_SECONDS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Sync input too long. For audio longer than 1 min use "
                "LongRunningRecognize with a 'uri' parameter.",
            )
        return speech.RecognizeResponse.pb(self._response(pcm, config, speech.RecognizeResponse))

    def streaming_recognize(self, requests: Iterator[Any], context: grpc.ServicerContext):
        first = next(requests, None)
        if first is None or not first.HasField("streaming_config"):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Malordered Data Received. Send exactly one config, followed by audio data.",
            )
        config = first.streaming_config.config
        call = Call("StreamingRecognize", config, bytearray())
        self.calls.append(call)
        context.add_callback(lambda: _ended(call, context))
        fault, at = self._take_stream_fault()
        if fault == "SLOW":
            time.sleep(self.slow_seconds)
        rate = config.sample_rate_hertz or 16000
        endpointer = Endpointer(rate, self.endpoint_seconds)
        interims = first.streaming_config.interim_results
        last_interim = 0
        for request in requests:
            if request.HasField("streaming_config"):
                self._abort(
                    call,
                    context,
                    "INVALID_ARGUMENT",
                    "Malordered Data Received. Send exactly one config.",
                )
            if len(request.audio_content) > STREAM_REQUEST_BYTES:
                self._abort(
                    call,
                    context,
                    "INVALID_ARGUMENT",
                    "Request audio can be a maximum of 25600 bytes.",  # Google's limit, our words
                )
            call.audio += request.audio_content
            if at is not None and self._seconds(call.audio, config) >= at:
                self._abort(call, context, fault)
            if self._seconds(call.audio, config) > STREAM_LIMIT_SECONDS:
                self._abort(
                    call,
                    context,
                    "OUT_OF_RANGE",
                    "Exceeded maximum allowed stream duration of 305 seconds.",
                )
            for utterance in endpointer.feed(request.audio_content):
                yield self._final(call, config, utterance)
            # as Google does when asked: the utterance so far, about twice a second
            if interims and endpointer.speaking and endpointer.position - last_interim >= rate / 2:
                last_interim = endpointer.position
                yield self._interim(call, config, endpointer.open_since)
        # a fault without a time is answered once the client has half-closed: failing
        # while it still writes often reaches grpc's asyncio client as INTERNAL
        # (grpc/grpc#36066), which these faults are not about
        if fault not in (None, "", "SLOW"):
            self._abort(call, context, fault)
        for utterance in endpointer.flush():
            yield self._final(call, config, utterance)
        call.status = "ok"

    def _take_stream_fault(self) -> tuple[str | None, float | None]:
        fault = self._take_fault()
        if fault == "ABORT":
            return "ABORTED", 0.5
        if fault and "@" in fault:
            name, at = fault.split("@")
            return name, float(at)
        return fault, None

    def _abort(self, call: Call, context: grpc.ServicerContext, code: str, message: str = ""):
        call.status = code
        message = message or _MESSAGES.get(code, "")
        context.abort(getattr(grpc.StatusCode, code), message)

    def _interim(self, call: Call, config: Any, begin: int) -> Any:
        """An interim result (two, as Google splits them: stable words, then the rest) for the
        utterance open since sample ``begin``."""
        text = self._transcript(bytes(call.audio[begin * 2 :]), config)
        call.interims.append(text)
        words = text.split()
        settled, guess = " ".join(words[:-1]), (" " + words[-1]) if words else ""
        results = [
            {"alternatives": [{"transcript": settled}], "is_final": False, "stability": 0.9},
            {"alternatives": [{"transcript": guess}], "is_final": False, "stability": 0.1},
        ]
        return speech.StreamingRecognizeResponse.pb(
            speech.StreamingRecognizeResponse(results=results)
        )

    def _final(self, call: Call, config: Any, utterance: tuple[int, int, int]) -> Any:
        """The final result for speech ``[start, end)`` (in samples) that began after the
        previous final's end ``begin``."""
        begin, start, end = utterance
        pcm = bytes(call.audio[begin * 2 : end * 2])
        text = self._transcript(pcm, config)
        rate = config.sample_rate_hertz or 16000
        alternative: dict[str, Any] = {"transcript": text, "confidence": 0.9}
        if not self.untimed:
            alternative["words"] = _words(text, start / rate, end / rate, config)
        call.finals.append(text)
        result = {
            "alternatives": [alternative],
            "is_final": True,
            "language_code": self._language(pcm, config).lower(),
        }
        if not self.untimed:
            result["result_end_time"] = _duration(end / rate)
        return speech.StreamingRecognizeResponse.pb(
            speech.StreamingRecognizeResponse(results=[result])
        )

    def _response(self, pcm: bytes, config: Any, kind: type) -> Any:
        seconds = self._seconds(pcm, config)
        text = self._transcript(pcm, config)
        if not text:
            return kind(results=[])
        alternative = {
            "transcript": text,
            "confidence": 0.9,
            "words": [] if self.untimed else _words(text, *_voiced(pcm, config), config),
        }
        result = {
            "alternatives": [alternative],
            "result_end_time": _duration(seconds),
            "language_code": self._language(pcm, config).lower(),
        }
        return kind(results=[result])


_MESSAGES = {
    "UNAVAILABLE": "The service is currently unavailable.",
    "DEADLINE_EXCEEDED": "Deadline Exceeded",
    "PERMISSION_DENIED": "Cloud Speech-to-Text API has not been used in this project",
    "ABORTED": "The stream was aborted.",
}


def _voiced(pcm: bytes, config: Any) -> tuple[float, float]:
    """Where the speech in ``pcm`` starts and ends, in seconds, as the endpointer hears it
    (Google times words where they are said, not from the start of the audio); all of it
    when it hears none."""
    rate = config.sample_rate_hertz or 16000
    endpointer = Endpointer(rate, 0.5)
    spans = endpointer.feed(pcm) + endpointer.flush()
    if not spans:
        return 0.0, len(pcm) / 2 / rate
    return spans[0][1] / rate, spans[-1][2] / rate


WORD_CONFIDENCE = 0.9
"""Each word's confidence, when the config asks for it (Google sends 0 when not asked)."""


def _words(text: str, start: float, end: float, config: Any) -> list[dict[str, Any]]:
    """``text``'s words spread evenly over ``[start, end)`` seconds, when the config asks for
    word offsets or confidence (Google sends no words otherwise)."""
    words = text.split()
    if not words or not (config.enable_word_time_offsets or config.enable_word_confidence):
        return []
    step = (end - start) / len(words)
    confidence = WORD_CONFIDENCE if config.enable_word_confidence else 0.0
    return [
        {
            "word": word,
            "start_time": _duration(start + i * step),
            "end_time": _duration(start + (i + 1) * step),
            "confidence": confidence,
        }
        for i, word in enumerate(words)
    ]


def _ended(call: Call, context: grpc.ServicerContext) -> None:
    """Runs once the call is over, when grpc knows whether the client cancelled it."""
    if call.status == "open" or (call.status == "ok" and _client_cancelled(context)):
        call.status = "cancelled"


def _client_cancelled(context: grpc.ServicerContext) -> bool:
    """Whether the client cancelled the call, read when it is over.

    grpc's sync server can end a cancelled call's request iterator as if the client had
    half-closed (the pending read comes back empty before the cancellation is seen), so the
    servicer may finish it as ``ok``. The sync context has no ``cancelled()`` (grpc.aio's
    has); once the call is over, its state says ``cancelled`` exactly when grpc core reported
    the close as a cancellation.
    """
    return getattr(getattr(context, "_state", None), "client", None) == "cancelled"


def _duration(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))


class Endpointer:
    """Google-like endpointing: an utterance is final after ``silence_seconds`` without voice.

    :meth:`feed` takes 16-bit PCM and returns ``(begin, start, end)`` sample positions per
    finished utterance: ``begin`` is where the previous one ended, ``[start, end)`` the voiced
    part. Voice needs 3 voiced 30 ms frames out of 5 to start (clicks are not speech).
    """

    def __init__(self, rate: int, silence_seconds: float) -> None:
        self._vad = webrtcvad.Vad(2)
        self._rate = rate
        self._frame = rate * 30 // 1000
        self._silence_frames = max(1, round(silence_seconds / 0.03))
        self._pending = bytearray()
        self._position = 0  # samples framed so far
        self._begin = 0
        self._start: int | None = None
        self._end = 0
        self._recent: list[bool] = []
        self._quiet = 0

    def feed(self, pcm: bytes) -> list[tuple[int, int, int]]:
        self._pending += pcm
        done: list[tuple[int, int, int]] = []
        size = self._frame * 2
        while len(self._pending) >= size:
            frame = bytes(self._pending[:size])
            del self._pending[:size]
            voiced = self._vad.is_speech(frame, self._rate)
            self._position += self._frame
            self._recent = [*self._recent[-4:], voiced]
            if self._start is None:
                if sum(self._recent) >= 3:
                    self._start = self._position - self._frame * 5
                    self._start = max(self._start, self._begin)
                    self._end, self._quiet = self._position, 0
                continue
            if voiced:
                self._end, self._quiet = self._position, 0
            else:
                self._quiet += 1
                if self._quiet >= self._silence_frames:
                    done.append((self._begin, self._start, self._end))
                    self._begin, self._start, self._recent = self._end, None, []
        return done

    @property
    def speaking(self) -> bool:
        return self._start is not None

    @property
    def position(self) -> int:
        return self._position

    @property
    def open_since(self) -> int:
        """Where the utterance in progress began (the previous one's end)."""
        return self._begin

    def flush(self) -> list[tuple[int, int, int]]:
        if self._start is None:
            return []
        self._end = self._position + len(self._pending) // 2
        return [(self._begin, self._start, self._end)]


@contextmanager
def running_emulator(emulator: SpeechEmulator | None = None) -> Iterator[SpeechEmulator]:
    emulator = emulator or SpeechEmulator()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Recognize": grpc.unary_unary_rpc_method_handler(
            emulator.recognize,
            request_deserializer=speech.RecognizeRequest.pb().FromString,
            response_serializer=speech.RecognizeResponse.pb().SerializeToString,
        ),
        "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
            emulator.streaming_recognize,
            request_deserializer=speech.StreamingRecognizeRequest.pb().FromString,
            response_serializer=speech.StreamingRecognizeResponse.pb().SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    emulator.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield emulator
    finally:
        server.stop(grace=None).wait()
