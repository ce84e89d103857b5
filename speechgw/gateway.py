"""The Gateway: whole operations that every protocol adapter calls, and nothing else.

Two operations, each one call:

- :meth:`Gateway.run_recording` runs a recording request from credentials to a settled, billed
  result: admission, the key, the request's fields, routing (before any audio, so that an
  unsupported language costs the client no upload), decoding in a worker thread, recognition
  with fallback, post-processing, the ledger row, metrics and the access log. The adapter
  supplies a :class:`RecordingExchange` (how to read credentials, fields and audio off its
  wire) and renders the :class:`RecordingResult` or the typed error.
- :meth:`Gateway.live_stream` admits a live stream (connection, key, stream place) and hands
  the adapter a :class:`StreamSession`, which opens the :class:`~speechgw.stream.Stream` once
  the stream's settings are known.

The order of checks is the same for every protocol and lives only here: connection place ->
key -> key's rate and connections -> fields -> route -> audio. A client without a valid key
learns nothing but ``unauthorized``. The core knows no transport: errors are raised, typed, and
each adapter says them in its own terms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from . import silero
from .accounting import Accounting, Books
from .admission import Admission
from .audio import to_16k_mono
from .auth import Keyring
from .backend import Backend
from .config import Config
from .errors import (
    AudioTooLong,
    ClientGone,
    InternalError,
    ServerBusy,
    SpeechGWError,
    StartupError,
    start_failure,
)
from .execution import run_route
from .jobs import SAMPLE_RATE, AudioJob, Caller, JobRequest, JobSpec, Transcript
from .media import DECODERS
from .metrics import GatewayMetrics
from .postprocess import OFF as POSTPROCESS_OFF
from .postprocess import Postprocessor, PostprocessResult
from .progress import OnSegment, SegmentRelay
from .router import Router
from .shutdown import GraceCut
from .store import Store, StoreUnavailable
from .stream import OnError, OnInterim, OnTranscript, Stream
from .turns import TurnTaking

__all__ = ["Gateway", "RecordingExchange", "RecordingResult", "StreamSession"]

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


class RecordingExchange(Protocol):
    """An adapter's side of one recording request: how to read it off the adapter's wire.

    Each method may raise a :class:`~speechgw.errors.SpeechGWError` (the client sent something
    wrong, or too late) or :class:`~speechgw.errors.ClientGone`.
    """

    async def credentials(self) -> object:
        """The API key the client presented (None when it sent none)."""
        ...

    async def request(self) -> JobRequest:
        """The request's fields, validated; called only once the key is accepted."""
        ...

    async def audio(self) -> bytes:
        """The encoded recording; called once the request is known to be routable."""
        ...

    def decode(self, data: bytes) -> tuple[np.ndarray, int]:
        """``data`` as mono float32 samples and their rate; runs in a worker thread.

        Raises:
            InvalidAudio: the recording cannot be decoded.
        """
        ...

    def progress(self, request_id: str) -> OnSegment | None:
        """Where the request's segments go as they are recognised, for a client that asked
        for the text as it comes (called once the request is read, on the event loop; the
        callable is then called there too); None: the client waits for the whole."""
        ...


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What a recording request produced: settled and billed before the adapter sees it."""

    request_id: str
    transcript: Transcript
    corrected: PostprocessResult
    audio_seconds: float


class Gateway:
    """The shared layer: admission, keys, routing, execution and accounting for every protocol."""

    def __init__(
        self,
        config: Config,
        backends: Mapping[str, Backend],
        keyring: Keyring,
        metrics: GatewayMetrics,
        store: Store | None = None,
        postprocessor: Postprocessor | None = None,
    ) -> None:
        self.config = config
        self.backends = dict(backends)
        self.keyring = keyring
        self.metrics = metrics
        # read at each scrape, so a reload's new backends show up
        metrics.watch_batches(lambda: ((b.name, b.batch_stats) for b in self.backends.values()))
        metrics.watch_backends(lambda: ((b.name, b.waiting) for b in self.backends.values()))
        self.store = store
        self.accounting = Accounting(
            metrics, store, lambda: self.config.limits.busy_retry_after_seconds
        )
        self.postprocessor = postprocessor or Postprocessor(config.postprocess)
        self.router = Router(config.routing, self.backends)
        self.admission = Admission(
            lambda: self.config.limits,
            fleet=store.limits if store is not None else None,
            on_fallback=lambda limit: metrics.limit_fallbacks.labels(limit).inc(),
        )
        self._readers: set[asyncio.Task[Any]] = set()
        self.grace = GraceCut(lambda: self.config.limits.busy_retry_after_seconds)
        self._retired: list[Backend] = []
        self.draining = False
        self.startup_error: StartupError | None = None

    # --- a recording ------------------------------------------------------------------------

    async def run_recording(self, protocol: str, exchange: RecordingExchange) -> RecordingResult:
        """Run one recording request from credentials to a settled, billed result.

        Raises:
            SpeechGWError: why the request failed (already counted and logged).
            ClientGone: the client left (logged as abandoned once the request was known).
            CancelledError: the adapter gave up on it (its client left while it ran); logged
                as abandoned, like ClientGone, unless it was being settled: billing, once
                begun, is finished first, so that the ledger and the log agree.
        """
        books = Books(protocol)
        try:
            # stopped by the shutdown's cut (then answered server_busy with a retry hint, in
            # its protocol's terms) rather than dropped by the server as its grace ends
            async with self.grace.guard("recording"):
                transcript = await self._recognise_recording(books, exchange)
            corrected = await self._postprocess(books, transcript)
            await _to_the_end(self.accounting.settle(books, transcript))
        except (ClientGone, anyio.get_cancelled_exc_class()):
            if books.spec is not None and not books.closed:
                self.accounting.close(books, uncounted="abandoned")
            raise
        except SpeechGWError as exc:
            exc.request_id = books.request_id
            self.accounting.close(books, exc)
            raise
        except Exception:
            _LOGGER.exception("request %s: unexpected failure", books.request_id)
            error = InternalError("internal server error")
            error.request_id = books.request_id
            self.accounting.close(books, error)
            raise error from None
        return RecordingResult(books.request_id, transcript, corrected, books.audio_seconds)

    async def _recognise_recording(self, books: Books, exchange: RecordingExchange) -> Transcript:
        async with contextlib.AsyncExitStack() as held:
            held.enter_context(self.admission.connection())
            key_name, keys_enabled = await self._authenticate(await exchange.credentials())
            await held.enter_async_context(self.admission.key(key_name, keys_enabled))
            asked = await exchange.request()
            books.spec = self._spec(asked, books.protocol, key_name, books.request_id)
            route = self.router.route(books.spec)
            on_segment = exchange.progress(books.request_id)
            data = await exchange.audio()
            books.start_clock()
            with self.admission.job():
                # abandoned on cancel: a client that left, or the shutdown's cut, does not wait
                # for a long file's decode (the thread finishes it; the result is dropped)
                audio = await anyio.to_thread.run_sync(
                    self._decode, exchange.decode, data, abandon_on_cancel=True
                )
                books.audio_seconds = len(audio) / SAMPLE_RATE
                job = AudioJob(books.spec, audio)
                relay = SegmentRelay(on_segment) if on_segment is not None else None
                transcript = await run_route(job, route, books, self.accounting, relay)
        return transcript

    def _decode(self, decode: Callable[[bytes], tuple[np.ndarray, int]], data: bytes) -> np.ndarray:
        """Decode, refuse what is over ``limits.max_audio_seconds`` before resampling it."""
        samples, rate = decode(data)
        seconds = len(samples) / rate
        limit = self.config.limits.max_audio_seconds
        if seconds > limit:
            raise AudioTooLong(f"the audio lasts {seconds:.1f} s; the limit is {limit:g} s")
        return to_16k_mono(samples, rate)

    @staticmethod
    def _spec(asked: JobRequest, protocol: str, key_name: str, request_id: str) -> JobSpec:
        return JobSpec(
            language=asked.language,
            locale=asked.locale,
            task=asked.task,
            protocol=protocol,
            caller=Caller(key_name=key_name, machine_id=asked.machine_id),
            postprocess=asked.postprocess,
            request_id=request_id,
            prompt=asked.prompt,
            model=asked.model,
            temperature=asked.temperature,
            word_timestamps=asked.word_timestamps,
            word_probabilities=asked.word_probabilities,
            languages=asked.languages,
            keywords=asked.keywords,
        )

    async def _postprocess(self, books: Books, transcript: Transcript) -> PostprocessResult:
        """LLM correction when the request (or the server default) wants it; never raises."""
        spec = books.spec
        if spec is None or not self.postprocessor.wanted(spec.postprocess):
            return POSTPROCESS_OFF
        result = await self.postprocessor.correct(
            transcript.text, spec.language or transcript.language, spec.keywords
        )
        self.accounting.postprocessed(spec, result.milliseconds / 1000)
        if result.error:
            _LOGGER.warning(
                "request %s: post-processing failed: %s", books.request_id, result.error
            )
        return result

    async def _authenticate(self, presented: object) -> tuple[str, bool]:
        """The keyring's answer; a store that cannot be asked refuses the request as busy
        (keys fail closed: a revoked key must not work while the store is away)."""
        try:
            return await self.keyring.authenticate(presented)
        except StoreUnavailable as exc:
            self.metrics.store_errors.labels("keys").inc()
            retry = self.config.limits.busy_retry_after_seconds
            raise ServerBusy.retry_in("the key store is unreachable", retry) from exc

    async def models(self, protocol: str, presented_key: object) -> tuple[str, ...]:
        """The model names a client may ask for, once its key is accepted.

        Raises:
            Unauthorized: a missing or wrong key (counted).
            ServerBusy: the key store is unreachable (counted).
        """
        try:
            await self._authenticate(presented_key)
        except SpeechGWError as exc:
            self.accounting.refused(protocol, exc)
            raise
        return self.router.models

    # --- a live stream ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def live_stream(
        self, protocol: str, presented_key: object, stream_id: str
    ) -> AsyncIterator[StreamSession]:
        """Admit a live stream for the duration of the block.

        Raises (on entering, counted):
            Unauthorized: a missing or wrong key.
            RetryLater: a connection, key or stream limit is reached.
        """
        held = contextlib.AsyncExitStack()
        try:
            held.enter_context(self.admission.connection())
            key_name, keys_enabled = await self._authenticate(presented_key)
            await held.enter_async_context(self.admission.key(key_name, keys_enabled))
            held.enter_context(self.admission.stream())
        except SpeechGWError as exc:
            await held.aclose()
            self.accounting.refused(protocol, exc)
            raise
        async with held:
            self.metrics.active_streams.inc()
            try:
                yield StreamSession(self, protocol, Caller(key_name=key_name), stream_id)
            finally:
                self.metrics.active_streams.dec()

    def track_reader(self, task: asyncio.Task[Any]) -> None:
        """A long-lived connection's reading loop: :meth:`drain` cancels it at shutdown."""
        if self.draining:
            task.cancel()
            return
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    def drain(self, grace_seconds: float) -> None:
        """Shutdown has begun: stop reading live streams so that they flush and close, and
        answer the recordings and stream flushes still running shortly before the server's
        grace period ends with ``server_busy`` (:class:`~speechgw.shutdown.GraceCut`)."""
        self.grace.schedule(grace_seconds)
        self.draining = True
        if self._readers:
            _LOGGER.info("shutting down: closing %d open streams", len(self._readers))
        for task in list(self._readers):
            task.cancel()

    # --- configuration and life-cycle -------------------------------------------------------

    def reconfigure(
        self, config: Config, backends: Mapping[str, Backend], keyring: Keyring
    ) -> None:
        """Switch to a reloaded config in one step (the event loop runs nothing in between).
        Backends no longer configured are closed at shutdown, not now: requests in flight may
        still be using them."""
        retired = [b for b in self.backends.values() if b not in backends.values()]
        self._retired.extend(retired)
        self.config = config
        self.backends = dict(backends)
        self.keyring = keyring
        self.router = Router(config.routing, self.backends)
        self.postprocessor = Postprocessor(config.postprocess)
        for backend in self.backends.values():
            self.metrics.backend_ready.labels(backend.name).set(1 if backend.ready else 0)

    async def start(self) -> None:
        """Open the store and start every backend (load the models).

        Raises:
            StartupError: a backend could not start; also kept as :attr:`startup_error`,
                since the server's lifespan reports it only inside its own error.
        """
        if self.store is not None:
            await self.store.open()
        DECODERS.start()  # the first compressed upload should not wait for its process
        if self.config.streaming.silero_vad_after_seconds is not None:
            await anyio.to_thread.run_sync(silero.load)
        for backend in self.backends.values():
            try:
                await backend.start()
            except Exception as exc:
                self.startup_error = StartupError(start_failure(backend.name, exc))
                raise self.startup_error from exc
            self.metrics.backend_ready.labels(backend.name).set(1 if backend.ready else 0)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.aclose()
        for backend in [*self.backends.values(), *self._retired]:
            try:
                await backend.close()
            except Exception:
                _LOGGER.exception("backend %r failed to close", backend.name)
            self.metrics.backend_ready.labels(backend.name).set(0)

    @property
    def ready(self) -> bool:
        return all(b.ready for b in self.backends.values())


async def _to_the_end(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile, then raise the
    cancellation. For steps that must not stop halfway: a ledger row is committed by a writer
    thread, so a settlement interrupted while it waits would bill a request that the log and
    the metrics call abandoned."""
    task = asyncio.ensure_future(work)
    cancelled: BaseException | None = None
    with anyio.CancelScope(shield=True):  # an anyio scope's cancellation waits here...
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError as exc:  # ...and a task's own is held until the end
                cancelled = exc
    if cancelled is not None:
        raise cancelled
    return task.result()


class StreamSession:
    """An admitted live stream, before and while it runs."""

    def __init__(self, gateway: Gateway, protocol: str, caller: Caller, stream_id: str) -> None:
        self._gateway = gateway
        self.protocol = protocol
        self.caller = caller
        self.stream_id = stream_id

    def start(
        self,
        asked: JobRequest,
        rate: int,
        on_transcript: OnTranscript,
        on_error: OnError,
        on_interim: OnInterim | None = None,
        turns: TurnTaking | None = None,
    ) -> Stream:
        """Route the stream and open its pipeline for ``rate`` Hz audio, as the client
        ``asked``: its language (None: detected) and BCP-47 locale, and, where its protocol has
        them, the model, prompt (the first utterances' context), keywords and candidate
        languages; with ``on_interim``, the client also gets interim results (words so far);
        ``turns``: the client follows its turns (:class:`~speechgw.stream.Stream`).

        Raises:
            UnsupportedLanguage: no routed backend recognises the language.
            InvalidRequest: an unknown model.
        """
        gateway = self._gateway
        spec = JobSpec(
            language=asked.language,
            locale=asked.locale,
            task="transcribe",
            protocol=self.protocol,
            caller=self.caller,
            request_id=self.stream_id,
            interim_results=on_interim is not None,
            model=asked.model,
            prompt=asked.prompt,
            keywords=asked.keywords,
            languages=asked.languages,
        )
        route = gateway.router.route(spec)
        config = gateway.config.streaming
        return Stream(
            gateway.accounting,
            spec,
            route,
            rate,
            config if turns is None else turns.applied_to(config),
            gateway.config.limits.max_stream_seconds,
            on_transcript,
            on_error,
            on_interim,
            gateway.grace,
            turns,
        )

    def refused(self, error: SpeechGWError) -> None:
        """Count a message of this stream that was refused (the stream goes on)."""
        self._gateway.accounting.refused(self.protocol, error)
