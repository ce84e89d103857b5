"""Google Cloud Speech-to-Text (v1) through the official ``google-cloud-speech`` client.

Whole recordings of up to 60 s go through ``Recognize``; longer ones through
``StreamingRecognize``, in sessions of at most 240 s of audio (Google ends a stream at about
305 s). Live streams go through ``StreamingRecognize`` too, with Google's own endpointing: each
final result is one utterance. A live session is restarted at the first final after
``session_seconds``, and the audio Google had not finalised is sent again to the new session,
so a restart loses and repeats nothing.

Transient gRPC failures (UNAVAILABLE, DEADLINE_EXCEEDED) are retried with exponential backoff;
anything that still fails becomes ``BackendUnavailable``, which the gateway answers with the
route's fallback backend. Google does not translate, so the backend declares ``transcribe``
only and the router keeps ``translate`` jobs away from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from speechgw.audio import to_pcm16
from speechgw.backend import Backend, Capabilities
from speechgw.config import NonNegative, Positive, Range
from speechgw.errors import BackendUnavailable, ConfigError
from speechgw.jobs import SAMPLE_RATE, JobSpec, Segment, Transcript, Word
from speechgw.languages import BATCH_LANGUAGES, DEFAULT_REGION, from_bcp47, to_bcp47
from speechgw.live_audio import LiveAudio, Reader
from speechgw.text import join_text

__all__ = ["GoogleBackend", "GoogleOptions"]

_LOGGER = logging.getLogger(__name__)
_MAX_ALTERNATIVES = 3
"""``alternative_language_codes``: Google takes up to three besides ``language_code``."""
_RECOGNIZE_LIMIT_SECONDS = 60.0
_STREAM_CHUNK_SAMPLES = SAMPLE_RATE // 10  # 100 ms per StreamingRecognizeRequest, Google's advice
_STREAM_LIMIT_SECONDS = 305.0  # Google ends a stream here
_FINAL_WAIT_SECONDS = 40.0  # after session_seconds, how long a live session waits for a final
_IDLE_SECONDS = 5.0  # a live session idle this long is closed (Google aborts idle streams)
_UNFINALISED_LIMIT_SECONDS = 60.0  # a live session this far behind its last final is closed
_SESSION_LIMIT_SECONDS = _STREAM_LIMIT_SECONDS - _FINAL_WAIT_SECONDS  # longest session_seconds


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
        session_seconds: audio per StreamingRecognize session: a long recording is sent in
            sessions this long; a live stream's session is restarted at the first final
            result after this long (at most 265: Google ends a stream at 305 s).
        native_streaming: live streams go through StreamingRecognize with Google's
            endpointing; false: the gateway cuts them into utterances (webrtcvad) and sends
            each through Recognize.
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
    timeout_seconds: Annotated[float, Positive] = 30.0
    retry_seconds: Annotated[float, NonNegative] = 10.0
    backoff_seconds: Annotated[float, Positive] = 0.25
    session_seconds: Annotated[float, Range(gt=0, le=_SESSION_LIMIT_SECONDS)] = 240.0
    native_streaming: bool = True
    languages: tuple[str, ...] = (*BATCH_LANGUAGES, "ja", "ko", "zh")

    def validate(self, path: str) -> None:
        """What would only show at start, as a config error for ``speechgw check`` and a
        reload: at start the server serves on without this backend (falling back from it)
        and logs why, which a missing key file should not need a log reader to find."""
        if self.insecure and not self.endpoint:
            raise ConfigError(f"{path}.insecure: true needs an endpoint (host:port)")
        if self.credentials_file is None:
            return
        from google.oauth2 import service_account  # only here: google-auth loads on use

        file = self.credentials_file
        try:
            service_account.Credentials.from_service_account_file(file)
        except OSError as exc:
            raise ConfigError(
                f"{path}.credentials_file: cannot read {file!r} ({exc.strerror})"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            # google-auth: "Service account info was not in the expected format, missing
            # fields client_email", or a key that does not parse; a binary file: not UTF-8
            reason = str(exc) if not isinstance(exc, KeyError) else f"no {exc} field"
            raise ConfigError(
                f"{path}.credentials_file: {file!r} is not a service-account JSON key "
                f"({reason[:160]})"
            ) from None


class GoogleBackend(Backend):
    Options = GoogleOptions
    options: GoogleOptions

    def __init__(self, name: str, options: GoogleOptions) -> None:
        super().__init__(name, options)
        self._client = None
        self._channel = None
        self._capabilities = Capabilities(
            languages=frozenset(options.languages),
            tasks=frozenset({"transcribe"}),
            streaming=options.native_streaming,
            word_timestamps=True,
            # language_code and alternative_language_codes (at most 3)
            detects_among=1 + _MAX_ALTERNATIVES,
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

    def _config(self, spec: JobSpec, **extra):  # -> speech.RecognitionConfig
        from google.cloud import speech

        opts = self.options
        # a job in no named language names those it may be in: Google is told them all
        candidates = self._capabilities.among(spec.languages) if spec.language is None else ()
        return speech.RecognitionConfig(
            **extra,
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=SAMPLE_RATE,
            audio_channel_count=1,
            language_code=_language_code(spec, candidates),
            alternative_language_codes=[to_bcp47(code) for code in candidates[1:]],
            enable_automatic_punctuation=opts.enable_automatic_punctuation,
            profanity_filter=opts.profanity_filter,
            use_enhanced=opts.use_enhanced,
            model=opts.model or "",
            # the client's words to listen for, as phrase hints
            speech_contexts=[speech.SpeechContext(phrases=list(spec.keywords))]
            if spec.keywords
            else [],
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

        pcm = to_pcm16(audio)
        try:
            if len(pcm) <= _RECOGNIZE_LIMIT_SECONDS * SAMPLE_RATE:
                segments, heard = await self._recognize(pcm, spec)
            else:
                segments, heard = await self._recognize_long(pcm, spec)
        except exceptions.GoogleAPICallError as exc:
            raise BackendUnavailable(f"Google Speech failed: {_describe(exc)}") from None
        except exceptions.RetryError as exc:
            raise BackendUnavailable(
                f"Google Speech kept failing for {self.options.retry_seconds:g} s: "
                f"{_describe(exc.cause)}"
            ) from None
        return Transcript(
            text=join_text(s.text for s in segments),
            segments=tuple(segments),
            # nothing heard in no named language: the first it may be in
            language=heard or spec.language or self._capabilities.among(spec.languages)[0],
            backend=self.name,
        )

    def _recording_config(self, spec: JobSpec):  # -> speech.RecognitionConfig
        """A recording's config: its words timed (and rated) only when the client asked,
        since Google bills no more for them but they make every answer longer."""
        return self._config(
            spec,
            enable_word_time_offsets=spec.word_timestamps or spec.word_probabilities,
            enable_word_confidence=spec.word_probabilities,
        )

    async def _recognize(self, pcm: np.ndarray, spec: JobSpec) -> tuple[list[Segment], str | None]:
        from google.cloud import speech

        response = await self._client.recognize(  # type: ignore[union-attr]
            config=self._recording_config(spec),
            audio=speech.RecognitionAudio(content=pcm.tobytes()),
            retry=self._retry(),
            timeout=self.options.timeout_seconds,
        )
        segments = _segments(response.results, 0.0, len(pcm) / SAMPLE_RATE, spec)
        return segments, _heard(response.results, spec)

    async def _recognize_long(
        self, pcm: np.ndarray, spec: JobSpec
    ) -> tuple[list[Segment], str | None]:
        """StreamingRecognize in sessions of ``session_seconds``; each session's results are
        timed from its own start, so they are shifted by where it began. A session that fails
        transiently is sent again whole, from a fresh request stream."""
        from google.cloud import speech

        session = int(self.options.session_seconds * SAMPLE_RATE)
        streaming_config = speech.StreamingRecognitionConfig(config=self._recording_config(spec))
        send_session = self._retry()(self._stream_session)
        segments: list[Segment] = []
        heard = None
        for start in range(0, len(pcm), session):
            part = pcm[start : start + session]
            finals = await send_session(part, streaming_config)
            segments += _segments(finals, start / SAMPLE_RATE, len(part) / SAMPLE_RATE, spec)
            heard = heard or _heard(finals, spec)
        return segments, heard

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

    # --- live streams ---------------------------------------------------------------------

    async def stream(self, audio: LiveAudio, spec: JobSpec) -> AsyncGenerator[Transcript, None]:
        """Recognise a live stream in StreamingRecognize sessions; see the module docstring.

        A failed session is retried (after a backoff, replaying from the last final) while
        failures are transient and for at most ``retry_seconds`` since the last success.
        """
        if self._client is None:
            raise BackendUnavailable(f"backend {self.name!r} has no Google Speech client")
        from google.api_core import exceptions
        from google.cloud import speech

        streaming_config = speech.StreamingRecognitionConfig(
            config=self._config(spec, enable_word_time_offsets=True),
            interim_results=spec.interim_results,
        )
        opts = self.options
        failing_since: float | None = None
        delay = opts.backoff_seconds
        while await audio.wait_for_audio():  # an idle client holds no session open
            session = self._live_session(audio, streaming_config, spec)
            try:
                async with contextlib.aclosing(session):
                    async for transcript in session:
                        failing_since, delay = None, opts.backoff_seconds
                        yield transcript
                failing_since, delay = None, opts.backoff_seconds
            except exceptions.GoogleAPICallError as exc:
                if not isinstance(exc, _transient_in_streams()):
                    raise BackendUnavailable(f"Google Speech failed: {_describe(exc)}") from None
                now = time.monotonic()
                failing_since = failing_since or now
                if now + delay - failing_since > opts.retry_seconds:
                    raise BackendUnavailable(
                        f"Google Speech kept failing for {opts.retry_seconds:g} s: {_describe(exc)}"
                    ) from None
                _LOGGER.warning(
                    "stream %s: Google session failed (%s); resuming from the last final in %.2f s",
                    spec.request_id,
                    _describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _live_session(
        self, audio: LiveAudio, streaming_config, spec: JobSpec
    ) -> AsyncGenerator[Transcript, None]:
        """One StreamingRecognize call, from the last committed sample on.

        It ends by half-closing (Google then finalises everything it was sent) when the
        client's audio ends, after ``_IDLE_SECONDS`` without audio, when nothing has been
        final for ``_UNFINALISED_LIMIT_SECONDS``, or ``_FINAL_WAIT_SECONDS`` after
        ``session_seconds``; and by cancelling at the first final after ``session_seconds``:
        the next session replays what came after that final.
        """
        from google.cloud import speech

        reader = audio.reader()
        opened = time.monotonic()
        restart_at = self.options.session_seconds
        hard_limit = restart_at + _FINAL_WAIT_SECONDS

        def age() -> float:
            return max(reader.seconds, time.monotonic() - opened)

        async def requests() -> AsyncIterator:
            yield speech.StreamingRecognizeRequest(streaming_config=streaming_config)
            while age() < hard_limit:
                if (reader.position - audio.committed) / SAMPLE_RATE > _UNFINALISED_LIMIT_SECONDS:
                    return
                try:
                    async with asyncio.timeout(_IDLE_SECONDS):
                        pcm = await reader.read(_STREAM_CHUNK_SAMPLES)
                except TimeoutError:
                    return
                if pcm is None:
                    return
                yield speech.StreamingRecognizeRequest(audio_content=pcm.tobytes())

        responses = await self._client.streaming_recognize(  # type: ignore[union-attr]
            requests=requests(),
            retry=None,  # a half-sent stream cannot be re-sent by the library: see stream()
            timeout=hard_limit + self.options.timeout_seconds,
        )
        previous = reader.start
        try:
            async for response in responses:
                interim = _interim(response.results, spec, self.name)
                if interim is not None:
                    yield interim
                finals = [r for r in response.results if r.is_final and r.alternatives]
                for result in finals:
                    # untimed, a final covers the audio Google has consumed so far
                    timed = result.result_end_time
                    end = reader.start + _samples(timed) if timed else reader.position
                    end = min(max(end, previous), reader.position)
                    transcript = _final(result, reader, previous, end, spec, self.name)
                    audio.commit(end)
                    previous = end
                    if transcript.text:
                        yield transcript
                if finals and age() >= restart_at:
                    _LOGGER.info(
                        "stream %s: Google session restarted after %.0f s",
                        spec.request_id,
                        reader.seconds,
                    )
                    return
            audio.commit(reader.position)  # half-closed: everything sent is final
        finally:
            responses.cancel()


def _transient_in_streams() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions

    # INTERNAL too: grpc's asyncio client reports a status that races a write as INTERNAL
    # "Internal error from Core" (grpc/grpc#36066), so an UNAVAILABLE can arrive as INTERNAL
    return (
        exceptions.ServiceUnavailable,
        exceptions.DeadlineExceeded,
        exceptions.InternalServerError,
    )


def _samples(offset) -> int:  # a datetime.timedelta from the proto-plus message
    return round(offset.total_seconds() * SAMPLE_RATE) if offset else 0


def _interim(results, spec: JobSpec, backend: str) -> Transcript | None:
    """Google's interim hypothesis of the utterance being spoken, when the client asked.

    Google splits it into results of falling stability (the settled words, then the guess at
    the last ones); together they are what it has heard so far, and the next interim replaces
    them all, so they are joined and passed on unfiltered.
    """
    if not spec.interim_results:
        return None
    parts = [r.alternatives[0].transcript for r in results if not r.is_final and r.alternatives]
    text = "".join(parts).strip()
    if not text:
        return None
    return Transcript(text, (), spec.language or "", backend, interim=True)


def _final(result, reader: Reader, previous: int, end: int, spec: JobSpec, backend: str):
    """A final result as a transcript timed from the stream's start: from its first word
    (when Google timed the words) or the previous final, to its end."""
    alternative = result.alternatives[0]
    start = previous
    if alternative.words:
        start = min(max(reader.start + _samples(alternative.words[0].start_time), previous), end)
    text = alternative.transcript.strip()
    segments = (Segment(text, start / SAMPLE_RATE, end / SAMPLE_RATE),) if text else ()
    return Transcript(text=text, segments=segments, language=spec.language, backend=backend)


_REGIONAL = re.compile(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?-([A-Z]{2}|[0-9]{3})$")
"""language[-Script]-Region, the shape of every code in Google's list of languages."""


def _language_code(spec: JobSpec, candidates: tuple[str, ...] = ()) -> str:
    """What Google is asked to hear: the client's own tag where it names a region
    (``pt-BR``, ``es-419``, ``cmn-Hans-CN``: Google has a model for each),
    else the language's usual region (``de`` -> ``de-DE``), since Google wants one; for a job
    in no named language, the first of the ``candidates`` it may be in."""
    if spec.language is None:
        return to_bcp47(candidates[0])
    if spec.locale is not None and _REGIONAL.match(spec.locale):
        return spec.locale
    return to_bcp47(spec.language)


def _heard(results, spec: JobSpec) -> str | None:
    """The language a job named, or for one that named only those it may be in, the one
    Google heard (each result says which of them it heard: ``"sv-se"``) in the first result
    with words; None where it heard no words."""
    if spec.language is not None:
        return spec.language
    for result in results:
        if result.alternatives and result.alternatives[0].transcript.strip():
            return from_bcp47(result.language_code) if result.language_code else None
    return None


def _describe(exc: BaseException | None) -> str:
    """``UNAVAILABLE: The service is currently unavailable.``"""
    code = getattr(exc, "grpc_status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    return f"{code.name}: {message}" if code is not None else message


def _segments(results, offset: float, duration: float, spec: JobSpec) -> list[Segment]:
    """A segment per result, with its words when Google timed them, on the recording's clock
    (``offset``: where this audio began in it): a result runs from the previous one's end, or
    from its first word, to its own end."""
    segments, previous = [], 0.0
    for result in results:
        if not result.alternatives:
            continue
        end_time = result.result_end_time
        end = end_time.total_seconds() if end_time else duration
        end = min(max(end, previous), duration)
        alternative = result.alternatives[0]
        text = alternative.transcript.strip()
        if text:
            start, stop = round(offset + previous, 3), round(offset + end, 3)
            words = _words(alternative.words, offset, spec)
            if words:  # timed words: the segment starts at the first, not after the last result
                start = min(max(start, words[0].start), stop)
            segments.append(Segment(text, start, stop, words=words))
        previous = end
    return segments


def _words(words, offset: float, spec: JobSpec) -> tuple[Word, ...]:
    """Google's timed words on the recording's clock; its confidence in each only when
    asked for (``enable_word_confidence``: otherwise Google sends 0.0, which is no rating)."""
    return tuple(
        Word(
            text=w.word,
            start=round(offset + w.start_time.total_seconds(), 3),
            end=round(offset + w.end_time.total_seconds(), 3),
            probability=w.confidence if spec.word_probabilities else None,
        )
        for w in words
        if w.word
    )
