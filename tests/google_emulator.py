"""A local Google Cloud Speech v1 server for the tests: a real gRPC server that implements
``google.cloud.speech.v1.Speech`` (Recognize and StreamingRecognize) with the
``google-cloud-speech`` package's own protobuf messages.

It enforces the rules a client can break (the config comes first in a stream, 60 s of audio
per Recognize, about 305 s per stream), answering with Google's status codes and messages, and
injects faults on demand: queue ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``PERMISSION_DENIED``,
``SLOW`` (answers after ``slow_seconds``) or ``ABORT`` (a stream cut midway) in ``faults``;
each call takes the next one. Transcripts come from ``recognizer(pcm, language_code)`` (for
example a real faster-whisper model) or are the scripted ``text``.
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
from google.cloud import speech
from google.protobuf import duration_pb2

SERVICE = "google.cloud.speech.v1.Speech"
SYNC_LIMIT_SECONDS = 60
STREAM_LIMIT_SECONDS = 305


@dataclass
class Call:
    method: str
    config: Any
    audio: bytes


@dataclass
class SpeechEmulator:
    text: str = "hello from the emulator"
    recognizer: Callable[[bytes, str], str] | None = None
    slow_seconds: float = 3.0
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
            messages = {
                "UNAVAILABLE": "The service is currently unavailable.",
                "DEADLINE_EXCEEDED": "Deadline Exceeded",
                "PERMISSION_DENIED": "Cloud Speech-to-Text API has not been used in this project",
            }
            context.abort(getattr(grpc.StatusCode, fault), messages[fault])
        if fault == "SLOW":
            time.sleep(self.slow_seconds)
        return fault

    def _transcript(self, pcm: bytes, config: Any) -> str:
        if self.recognizer is not None:
            return self.recognizer(pcm, config.language_code)
        return self.text

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
        # a stream's fault is answered once its requests are read: failing while the client
        # still writes makes grpc report INTERNAL instead of the status sent
        fault = self._take_fault()
        if fault == "SLOW":
            self._fault(context, fault)
        audio = bytearray()
        for request in requests:
            if request.HasField("streaming_config"):
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Malordered Data Received. Send exactly one config.",
                )
            audio += request.audio_content
            if fault == "ABORT" and len(audio) > 16000:
                context.abort(grpc.StatusCode.ABORTED, "The stream was aborted.")
            if self._seconds(bytes(audio), config) > STREAM_LIMIT_SECONDS:
                context.abort(
                    grpc.StatusCode.OUT_OF_RANGE,
                    "Exceeded maximum allowed stream duration of 305 seconds.",
                )
        if fault != "SLOW":
            self._fault(context, fault)
        self.calls.append(Call("StreamingRecognize", config, bytes(audio)))
        response = self._response(bytes(audio), config, speech.StreamingRecognizeResponse)
        yield speech.StreamingRecognizeResponse.pb(response)

    def _response(self, pcm: bytes, config: Any, kind: type) -> Any:
        seconds = self._seconds(pcm, config)
        end = duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))
        text = self._transcript(pcm, config)
        if not text:
            return kind(results=[])
        result = {"alternatives": [{"transcript": text, "confidence": 0.9}], "result_end_time": end}
        if kind is speech.StreamingRecognizeResponse:
            result["is_final"] = True
        return kind(results=[result])


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
