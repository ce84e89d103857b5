"""Google Cloud Speech-to-Text (v1) through the official ``google-cloud-speech`` client.

Whole recordings of up to 60 s go through ``Recognize``; longer ones through
``StreamingRecognize``, in sessions of at most 240 s of audio (Google ends a stream at about
305 s). Transient gRPC failures (UNAVAILABLE, DEADLINE_EXCEEDED) are retried with exponential
backoff by the client library's own ``AsyncRetry``; anything that still fails becomes
``BackendUnavailable``, which the router answers with the rule's fallback backend. Google does
not translate, so the backend declares ``transcribe`` only and the router keeps ``translate``
jobs away from it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from speechgw.backend import Backend, Capabilities
from speechgw.errors import BackendUnavailable
from speechgw.jobs import SAMPLE_RATE, JobSpec, Segment, Transcript
from speechgw.languages import BATCH_LANGUAGES, DEFAULT_REGION, to_bcp47

__all__ = ["GoogleBackend", "GoogleOptions"]

_LOGGER = logging.getLogger(__name__)
_RECOGNIZE_LIMIT_SECONDS = 60.0
_STREAM_CHUNK_SAMPLES = SAMPLE_RATE // 10  # 100 ms per StreamingRecognizeRequest


@dataclass(frozen=True, slots=True)
class GoogleOptions:
    """YAML settings of a ``type: google`` backend.

    Args:
        endpoint: ``host:port`` of the Speech API (default: Google's own).
        insecure: plaintext gRPC without credentials, for a local emulator only.
        credentials_file: a service-account JSON key; without it, the standard application
            default credentials chain (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, metadata).
        model: Google's recognition model (``latest_long``, ``phone_call``, ...).
        use_enhanced, enable_automatic_punctuation, profanity_filter: as in RecognitionConfig.
        timeout_seconds: deadline of one call.
        retry_seconds: total time spent retrying UNAVAILABLE and DEADLINE_EXCEEDED.
        backoff_seconds: the first retry's delay; it doubles each time.
        session_seconds: audio per StreamingRecognize session for long recordings.
        languages: ISO 639-1 codes this backend accepts (default: the batch protocol's 25 and
            ja, ko, zh).
    """

    endpoint: str | None = None
    insecure: bool = False
    credentials_file: str | None = None
    model: str | None = None
    use_enhanced: bool = False
    enable_automatic_punctuation: bool = True
    profanity_filter: bool = False
    timeout_seconds: float = 30.0
    retry_seconds: float = 10.0
    backoff_seconds: float = 0.25
    session_seconds: float = 240.0
    languages: tuple[str, ...] = (*BATCH_LANGUAGES, "ja", "ko", "zh")


class GoogleBackend(Backend):
    Options = GoogleOptions
    options: GoogleOptions

    def __init__(self, name: str, options: GoogleOptions) -> None:
        super().__init__(name, options)
        self._client = None
        self._channel = None
        self._capabilities = Capabilities(
            languages=frozenset(options.languages), tasks=frozenset({"transcribe"})
        )
        unknown = [code for code in options.languages if code not in DEFAULT_REGION]
        if unknown:
            _LOGGER.info("backend %r: no default region for %s; sent as is", name, unknown)

    @property
    def ready(self) -> bool:
        return self._client is not None

    async def start(self) -> None:
        from google.cloud import speech
        from google.cloud.speech_v1.services.speech.transports import SpeechGrpcAsyncIOTransport

        opts = self.options
        try:
            if opts.insecure:
                import grpc

                if not opts.endpoint:
                    raise ValueError("insecure: true needs an endpoint")
                self._channel = grpc.aio.insecure_channel(opts.endpoint)
                transport = SpeechGrpcAsyncIOTransport(channel=self._channel)
                self._client = speech.SpeechAsyncClient(transport=transport)
            else:
                credentials = None
                if opts.credentials_file:
                    from google.oauth2 import service_account

                    credentials = service_account.Credentials.from_service_account_file(
                        opts.credentials_file
                    )
                client_options = {"api_endpoint": opts.endpoint} if opts.endpoint else None
                self._client = speech.SpeechAsyncClient(
                    credentials=credentials, client_options=client_options
                )
        except Exception as exc:  # no credentials: serve the rest, fall back from this one
            _LOGGER.error("backend %r cannot reach Google Speech: %s", self.name, exc)
            self._client = None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._client = None

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def _config(self, spec: JobSpec):  # -> speech.RecognitionConfig
        from google.cloud import speech

        opts = self.options
        return speech.RecognitionConfig(
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=SAMPLE_RATE,
            audio_channel_count=1,
            language_code=to_bcp47(spec.language),
            enable_automatic_punctuation=opts.enable_automatic_punctuation,
            profanity_filter=opts.profanity_filter,
            use_enhanced=opts.use_enhanced,
            model=opts.model or "",
        )

    def _retry(self):  # -> AsyncRetry
        from google.api_core import exceptions
        from google.api_core.retry_async import AsyncRetry, if_exception_type

        return AsyncRetry(
            predicate=if_exception_type(exceptions.ServiceUnavailable, exceptions.DeadlineExceeded),
            initial=self.options.backoff_seconds,
            multiplier=2.0,
            maximum=max(self.options.backoff_seconds, 5.0),
            timeout=self.options.retry_seconds,
        )

    async def transcribe(self, audio: np.ndarray, spec: JobSpec) -> Transcript:
        if self._client is None:
            raise BackendUnavailable(f"backend {self.name!r} has no Google Speech client")
        from google.api_core import exceptions

        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        try:
            if len(pcm) <= _RECOGNIZE_LIMIT_SECONDS * SAMPLE_RATE:
                pieces = await self._recognize(pcm, spec)
            else:
                pieces = await self._recognize_long(pcm, spec)
        except exceptions.GoogleAPICallError as exc:
            raise BackendUnavailable(f"Google Speech failed: {_describe(exc)}") from None
        except exceptions.RetryError as exc:
            raise BackendUnavailable(
                f"Google Speech kept failing for {self.options.retry_seconds:g} s: "
                f"{_describe(exc.cause)}"
            ) from None
        segments = tuple(
            Segment(text, round(start, 3), round(end, 3)) for text, start, end in pieces if text
        )
        return Transcript(
            text=" ".join(s.text for s in segments),
            segments=segments,
            language=spec.language,
            backend=self.name,
        )

    async def _recognize(self, pcm: np.ndarray, spec: JobSpec) -> list[tuple[str, float, float]]:
        from google.cloud import speech

        response = await self._client.recognize(  # type: ignore[union-attr]
            config=self._config(spec),
            audio=speech.RecognitionAudio(content=pcm.tobytes()),
            retry=self._retry(),
            timeout=self.options.timeout_seconds,
        )
        return _pieces(response.results, offset=0.0, duration=len(pcm) / SAMPLE_RATE)

    async def _recognize_long(
        self, pcm: np.ndarray, spec: JobSpec
    ) -> list[tuple[str, float, float]]:
        """StreamingRecognize in sessions of ``session_seconds``; each session's results are
        timed from its own start, so they are shifted by where it began. A session that fails
        transiently is sent again whole, from a fresh request stream."""
        from google.cloud import speech

        session = int(self.options.session_seconds * SAMPLE_RATE)
        streaming_config = speech.StreamingRecognitionConfig(config=self._config(spec))
        send_session = self._retry()(self._stream_session)
        pieces: list[tuple[str, float, float]] = []
        for start in range(0, len(pcm), session):
            part = pcm[start : start + session]
            finals = await send_session(part, streaming_config)
            pieces += _pieces(finals, offset=start / SAMPLE_RATE, duration=len(part) / SAMPLE_RATE)
        return pieces

    async def _stream_session(self, part: np.ndarray, streaming_config) -> list:
        from google.cloud import speech

        async def requests() -> AsyncIterator:
            yield speech.StreamingRecognizeRequest(streaming_config=streaming_config)
            for i in range(0, len(part), _STREAM_CHUNK_SAMPLES):
                chunk = part[i : i + _STREAM_CHUNK_SAMPLES].tobytes()
                yield speech.StreamingRecognizeRequest(audio_content=chunk)

        responses = await self._client.streaming_recognize(  # type: ignore[union-attr]
            requests=requests(),
            # the library's default retry would re-send a half-consumed request stream for up
            # to 5000 s; the session is retried whole by the caller instead
            retry=None,
            timeout=self.options.timeout_seconds + len(part) / SAMPLE_RATE,
        )
        finals = []
        async for response in responses:
            finals.extend(r for r in response.results if r.is_final)
        return finals


def _describe(exc: BaseException | None) -> str:
    """``UNAVAILABLE: The service is currently unavailable.``"""
    code = getattr(exc, "grpc_status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    return f"{code.name}: {message}" if code is not None else message


def _pieces(results, offset: float, duration: float) -> list[tuple[str, float, float]]:
    """(text, start, end) per result: a result runs from the previous one's end to its own."""
    pieces, previous = [], 0.0
    for result in results:
        if not result.alternatives:
            continue
        end_time = result.result_end_time
        end = end_time.total_seconds() if end_time else duration
        end = min(max(end, previous), duration)
        pieces.append((result.alternatives[0].transcript.strip(), offset + previous, offset + end))
        previous = end
    return pieces
