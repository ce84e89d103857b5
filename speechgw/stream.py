"""One live stream through the gateway: resample, recognise utterance by utterance, deliver
the results in order.

Two ways to recognise, chosen by the route's first backend:

- *native*: a backend that recognises streams itself (``Capabilities.streaming``) reads the
  audio from a :class:`~speechgw.live_audio.LiveAudio` buffer and decides where utterances end;
  each final transcript it yields becomes one reply. If it gives up mid-stream, the audio it
  had not answered for goes, with the rest of the stream, to the route's fallback backends;
- *utterances*: webrtcvad cuts the stream into utterances and each is a job for the route, as a
  recording would be (with fallback per utterance). A backend that computes locally starts an
  utterance's final while the pause that will end it still runs (``streaming.early_finals``):
  the samples are known from ``end_padding_ms`` on, so the reply is ready when the pause is.

Both paths fall back by the one rule of :mod:`speechgw.execution` and settle each utterance
through :class:`~speechgw.accounting.Accounting`, which decides what is billed.

Protocol-free: an adapter feeds native-rate samples (int16 PCM or float32) and gets each
utterance's transcript (or error) through callbacks, and, when it asks, interim results: the
words so far of the utterance still being spoken (decoded again every
``streaming.interim_interval_ms`` when the backend has room, or a native backend's own).
Memory is bounded per stream: audio waits in buffers capped in seconds, and when they are
full :meth:`Stream.feed` waits, so the adapter stops reading the socket and TCP pushes back on
the client. Audio is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import typing
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import numpy as np

from .accounting import Accounting, Books
from .audio import from_pcm16
from .backend import Backend, InterimSkipped
from .config import StreamingConfig
from .errors import InternalError, ShuttingDown, SpeechGWError
from .execution import as_outage, run_route
from .jobs import SAMPLE_RATE, AudioJob, JobSpec, Transcript
from .live_audio import FullBufferLog, LiveAudio
from .router import Route
from .segmenter import Segmenter, StreamResampler
from .shutdown import GraceCut
from .text import hesitation_only, join_text
from .turns import ClientTurns, TurnTaking

__all__ = ["Stream"]

_LOGGER = logging.getLogger(__name__)

_PIECE_SECONDS = 8
"""Audio fed at once beyond this much is taken a piece at a time, the event loop free for other
connections between pieces: a client that sends a whole recording in one message (22 minutes,
54 MiB) otherwise held every other client of the server for the segmenter's 0.7 s."""

OnTranscript = Callable[[Transcript], Awaitable[None]]
OnError = Callable[[SpeechGWError], Awaitable[None]]
OnInterim = Callable[[str], Awaitable[None]]

_FIRST_INTERIM_SECONDS = 0.5
"""An utterance's first interim is decoded once it holds this much audio (its 0.3 s lead-in
and the first 0.2 s of speech); the next ones every ``interim_interval_ms`` of audio, or
0.3 s later when the last one heard no words yet. Where the backend is busy (not
:attr:`~speechgw.backend.Backend.idle`: a local model decoding a recording, which lets interims
only a share of its time), both wait ``interim_interval_ms``: an interim there is spent on
audio likely to hold words, not on the first 0.2 s of speech, whose decode (1.4 s on a slow
2-vCPU machine) left a 10 s utterance no share for one that shows any."""
_FIRST_INTERIM_SAMPLES = int(_FIRST_INTERIM_SECONDS * SAMPLE_RATE)
_INTERIM_RETRY_SAMPLES = int(0.3 * SAMPLE_RATE)
_INTERIM_HOLD_SAMPLES = int(0.1 * SAMPLE_RATE)
"""An interim due while the utterance ends in this much silence waits for the next speech:
gaps between words are shorter, and a pause that goes on wants the utterance's final 0.2 s
later (an early final, at ``end_padding_ms``), whose first model call would wait for the
interim's (on a machine where Whisper's encoder takes a second, most of that second) to send
words the final sends a moment later."""


class _UtteranceQueue:
    """FIFO of utterances bounded by their total length in samples."""

    def __init__(self, limit: int, stream_id: str) -> None:
        self._items: deque[np.ndarray] = deque()
        self._samples = 0
        self._limit = limit
        self._closed = False
        self._changed = asyncio.Condition()
        self._full_log = FullBufferLog(_LOGGER, stream_id, "queued")

    @property
    def samples(self) -> int:
        return self._samples

    async def put(self, utterance: np.ndarray) -> None:
        """Queue an utterance; waits while the queue is full (:class:`FullBufferLog`)."""
        async with self._changed:
            if self._has_room(utterance):
                self._full_log.room()
            else:
                self._full_log.full(self._samples / SAMPLE_RATE)
                await self._changed.wait_for(lambda: self._has_room(utterance))
            self._items.append(utterance)
            self._samples += len(utterance)
            self._changed.notify_all()

    def _has_room(self, utterance: np.ndarray) -> bool:
        return not self._items or self._samples + len(utterance) <= self._limit

    def put_nowait(self, utterance: np.ndarray) -> None:
        """Queue over the limit: for the consumer itself, which must not wait on its own
        queue (audio handed over from a failed streaming backend, bounded by that buffer)."""
        self._items.append(utterance)
        self._samples += len(utterance)

    async def get(self) -> np.ndarray | None:
        """The next utterance, or None once the queue is closed and empty."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._items or self._closed)
            if not self._items:
                return None
            utterance = self._items.popleft()
            self._samples -= len(utterance)
            self._changed.notify_all()
            return utterance

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


@dataclasses.dataclass(eq=False)
class _EarlyFinal:
    """An utterance's final being decoded while the pause that may end it runs."""

    number: int
    """The utterance (the segmenter's ``utterances_started`` when it was open)."""
    length: int
    """Its samples, if the pause goes on to end it."""
    backend: str
    run: asyncio.Task[Transcript | None]
    """The decode; None when the backend had no free worker."""
    started: float = dataclasses.field(default_factory=time.monotonic)
    utterance: np.ndarray | None = None
    """The closed utterance it answers, once the pause has ended it."""


def _skipped(run: asyncio.Task[Transcript | None]) -> bool:
    """Whether an early final's decode found no free worker."""
    return run.done() and not run.cancelled() and run.exception() is None and run.result() is None


def _forget(run: asyncio.Task[Transcript | None]) -> None:
    """Retrieve a dropped decode's outcome, so that asyncio does not log it as unheard."""
    if not run.cancelled():
        run.exception()


async def _decode_early(backend: Backend, audio: np.ndarray, spec: JobSpec) -> Transcript | None:
    try:
        return await backend.transcribe(audio, spec)
    except InterimSkipped:
        return None


_RETAINED_SECONDS = 330.0
"""Most audio a native streaming backend may leave unanswered before the client is paused;
streaming recognition APIs end a session after about five minutes anyway."""


def _context(context: str, text: str, limit: int) -> str:
    """``context`` followed by ``text``, keeping the last ``limit`` characters from a word on."""
    if limit <= 0:
        return ""
    joined = join_text((context, text))
    if len(joined) <= limit:
        return joined
    cut = joined[-limit:]
    if joined[-limit - 1] == " ":  # the cut falls between two words
        return cut
    space = cut.find(" ")
    return cut[space + 1 :] if 0 <= space < len(cut) - 1 else cut


class Stream:
    """A live stream's pipeline. Run :meth:`run` in a task; :meth:`feed`; then :meth:`end`."""

    def __init__(
        self,
        accounting: Accounting,
        spec: JobSpec,
        route: Route,
        rate: int,
        config: StreamingConfig,
        max_seconds: float | None,
        on_transcript: OnTranscript,
        on_error: OnError,
        on_interim: OnInterim | None,
        grace: GraceCut,
        turns: TurnTaking | None = None,
    ) -> None:
        """With ``turns``, the client follows its turns: it is told where each utterance
        began and ended (before the utterance's interims and its answer), every utterance kept
        is answered once (its transcript, empty when it held no words, or its error), and the
        gateway cuts the utterances itself whatever the backend (turns a natively streaming
        backend kept to itself could not be reported); the client may end a turn
        (:meth:`commit`) or take it back (:meth:`clear`)."""
        self._accounting = accounting
        # the shutdown's end: finals still being recognised then are answered server_busy
        self._grace = grace
        self._told_of_the_cut = False  # the client has had its one server_busy of the cut
        self.spec = spec
        self.route = route
        self.config = config
        self.rate = rate
        self._resampler = StreamResampler(rate)
        buffer_samples = int(config.buffer_seconds * SAMPLE_RATE)
        self._live: LiveAudio | None = None
        self._on_speech = None if turns is None else turns.on_speech
        if route[0].capabilities.streaming and turns is None:
            retained = int(_RETAINED_SECONDS * SAMPLE_RATE)
            self._live = LiveAudio(buffer_samples, retained, spec.request_id)
        self._live_closed = False  # end() has told the streaming backend there is no more
        # the utterance pipeline: from the start, or after a streaming backend gave up
        self._utterance_spec = dataclasses.replace(spec, segmented=True)
        self._segmenter: Segmenter | ClientTurns = (
            ClientTurns(config)
            if turns is not None and turns.client_ends_turns
            else Segmenter(config, record_edges=turns is not None)
        )
        self._queue = _UtteranceQueue(buffer_samples, spec.request_id)
        self._on_transcript = on_transcript
        self._on_error = on_error
        self._on_interim = on_interim
        # set when the open utterance's next interim is due: checked where that can change
        # (audio fed, a final finished), so that no stream wakes on a timer to look
        self._interim_wake = asyncio.Event() if on_interim is not None else None
        # (utterance number, its length in samples) at which its next interim is due
        self._interim_due = (0, _FIRST_INTERIM_SAMPLES)
        self._interim_every = config.interim_interval_ms * SAMPLE_RATE // 1000
        # the interim being decoded, and its utterance: stopped once that utterance closes
        self._interim_call: tuple[int, asyncio.Task[Transcript]] | None = None
        # the last replies, for the next utterance's prompt: at first, the client's own
        self._context = spec.prompt or ""
        self._final_running = False  # an utterance's final is being recognised
        self._backlog: deque[np.ndarray] = deque()  # closed utterances not yet queued
        self._early: _EarlyFinal | None = None  # the open or next utterance's final, ahead
        # input samples the stream may still take (limits.max_stream_seconds)
        self._samples_left = float("inf") if max_seconds is None else max_seconds * rate
        self._piece_samples = _PIECE_SECONDS * rate

    async def feed(self, *chunks: np.ndarray) -> bool:
        """Take native-rate samples (int16 PCM, or float32 in [-1, 1]), in one or more
        consecutive chunks (a large input decoded in pieces); waits while the stream's
        buffer is full (back-pressure). 16 kHz int16 goes to the segmenter or the live buffer
        as it is: both work on int16, so it is never converted there and back. Audio beyond
        ``_PIECE_SECONDS`` is taken a piece at a time, other connections running between.

        Returns False, taking nothing, when they would carry the stream past
        ``limits.max_stream_seconds``: the stream is over and only :meth:`end` remains.
        """
        self._samples_left -= len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))
        if self._samples_left < 0:
            return False
        piece = self._piece_samples
        if len(chunks) == 1 and len(chunks[0]) <= piece:  # every chunk of a live client
            await self._take(chunks[0])
            return True
        for chunk in chunks:
            for start in range(0, len(chunk), piece):
                await self._take(chunk[start : start + piece])
                await asyncio.sleep(0)  # the other connections' turn
        return True

    async def _take(self, samples: np.ndarray) -> None:
        if self.rate != SAMPLE_RATE:
            samples = self._resampler.feed(from_pcm16(samples))
        if self._live is not None:
            try:
                taken = await self._live.put(samples)
            except asyncio.CancelledError:
                # a shutdown stops the reader while it waits for room: the samples it holds
                # are the stream's all the same, recognised with the rest by end()
                self._live.put_nowait(samples)
                raise
            if taken:
                return
        await self._segment(samples)

    async def end(self) -> None:
        """No more input: recognise what is buffered, then let :meth:`run` finish."""
        tail = self._resampler.flush()
        if self._live is not None and await self._live.put(tail):
            self._live.close()
            self._live_closed = True
            return
        await self._segment(tail)
        self._cut(None)
        await self._report_edges()
        await self._enqueue_backlog()
        await self._queue.close()

    async def commit(self) -> None:
        """End the utterance in progress now, as a pause would have (the client's turn is
        over); it is recognised and answered as any other."""
        self._cut(None)
        await self._report_edges()
        await self._enqueue_backlog()
        self._start_early_final()

    def clear(self) -> None:
        """Forget the utterance in progress (the client takes it back): it is neither
        recognised nor answered, and its interim or early final stops. Utterances already
        ended are not touched."""
        if self._interim_call is not None:
            self._interim_call[1].cancel()
        self._drop_early("discarded")
        self._segmenter.discard()
        self._segmenter.edges.clear()

    async def _report_edges(self) -> None:
        """Tell the client where utterances began and ended since the last time."""
        edges = self._segmenter.edges
        if self._on_speech is None or not edges:
            return
        taken = edges[:]
        edges.clear()
        for edge in taken:
            await self._on_speech(edge)

    async def _enqueue_backlog(self) -> None:
        # An utterance leaves the backlog only once it is in the queue: if the wait for room
        # is cancelled (a shutdown stops the reader), it is still here for end() to queue.
        while self._backlog:
            await self._queue.put(self._backlog[0])
            self._backlog.popleft()

    async def _segment(self, samples: np.ndarray) -> None:
        if len(samples):
            self._cut(samples)
            await self._report_edges()
        await self._enqueue_backlog()
        self._wake_interims()
        self._start_early_final()

    def _cut(self, samples: np.ndarray | None) -> None:
        """Feed the segmenter (None: the stream ends), put the utterances that closed in the
        backlog, and keep the early final in step: matched to its utterance when the pause
        ended it as foreseen, dropped when the speaker went on."""
        segmenter = self._segmenter
        open_number = segmenter.utterances_started if segmenter.speaking else None
        closed = segmenter.feed(samples) if samples is not None else segmenter.flush()
        self._backlog.extend(closed)
        if closed and self._interim_call is not None:
            number, call = self._interim_call
            if not segmenter.speaking or segmenter.utterances_started != number:
                call.cancel()  # its words come in the final: it stops at its next model call
        early = self._early
        if early is None or early.utterance is not None:
            return
        if closed and open_number == early.number and len(closed[0]) == early.length:
            early.utterance = closed[0]
        elif (
            closed
            or segmenter.utterances_started != early.number
            or segmenter.closing_length() != early.length
        ):
            self._drop_early("discarded")

    def _start_early_final(self) -> None:
        """Decode the open utterance's final ahead when its closing pause has begun
        (``streaming.early_finals``), if no other final of this stream is waiting or running
        (its reply would change the context) and the backend can do it on idle capacity
        alone; while the backend has no free worker it waits, and the next audio tries again."""
        early = self._early
        if early is not None:
            if early.utterance is not None or not _skipped(early.run):
                return
            self._early = None
        backend = self.route[0]
        if (
            not self.config.early_finals
            or not backend.capabilities.early_finals
            or self._final_running
            or self._queue.samples
            or self._backlog
            or not backend.idle
        ):
            return
        audio = self._segmenter.closing_utterance()
        if audio is None:
            return
        # the context is the final's: no other final of this stream can settle before it
        spec = dataclasses.replace(
            self._utterance_spec, prompt=self._context or None, early_final=True
        )
        self._early = _EarlyFinal(
            number=self._segmenter.utterances_started,
            length=len(audio),
            backend=backend.name,
            run=asyncio.ensure_future(_decode_early(backend, audio, spec)),
        )

    def _drop_early(self, outcome: str | None) -> asyncio.Task[Transcript | None] | None:
        """Forget the early final, stopping its decode (with batching, at its next model
        call); counted under ``outcome`` unless it never got a worker. Returns its decode, for
        a caller that must wait until the worker is let go."""
        early, self._early = self._early, None
        if early is None:
            return None
        run = early.run
        if outcome is not None and not _skipped(run):
            self._accounting.early_final(outcome)
        run.cancel()
        run.add_done_callback(_forget)
        return run

    async def run(self) -> None:
        """Recognise until :meth:`end` and everything buffered is answered."""
        if self._live is not None and await self._run_native(self._live):
            return
        interims = None
        if self._on_interim is not None:
            interims = asyncio.create_task(self._run_interims())
        try:
            await self._run_utterances()
        finally:
            if interims is not None:
                interims.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await interims
            early = self._drop_early("discarded")
            if early is not None:
                # its worker thread lets go before the stream is over
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(early, return_exceptions=True)

    def _interim_ready(self) -> bool:
        """Whether the utterance still being spoken has grown to its next interim, and no
        final waits, runs or is being decoded ahead (finals go first)."""
        segmenter = self._segmenter
        if not segmenter.speaking or self._final_running or self._queue.samples or self._backlog:
            return False
        if self._early is not None:  # the pause has begun: its final is on the way
            return False
        if segmenter.trailing_silence >= _INTERIM_HOLD_SAMPLES:  # a pause may be beginning
            return False
        number, length = self._interim_due
        if number != segmenter.utterances_started:
            length = _FIRST_INTERIM_SAMPLES if self.route[0].idle else self._interim_every
        return segmenter.buffered_samples >= length

    def _wake_interims(self) -> None:
        wake = self._interim_wake
        if wake is not None and not wake.is_set() and self._interim_ready():
            wake.set()

    async def _run_interims(self) -> None:
        """Each time the utterance still being spoken has grown by ``interim_interval_ms`` of
        audio, decode it again and send its words so far, unless a final is waiting or running
        (finals go first) or the backend has no free worker (it skips the interim rather than
        delay anyone's final; the next audio tries again). One due in a pause of
        :data:`_INTERIM_HOLD_SAMPLES` or more waits for the speaker to go on.

        An interim is sent only while its utterance is still open, so it can never arrive
        after that utterance's final, and one still being decoded when its utterance closes
        is stopped (at its next model call): its words come in the final. It goes to the
        route's first backend, with the same context as a final, and failures are only
        logged: the final will say what it heard.
        """
        assert self._on_interim is not None and self._interim_wake is not None
        every = self._interim_every
        spec = dataclasses.replace(self._utterance_spec, interim=True)
        backend = self.route[0]
        wake = self._interim_wake
        while True:
            await wake.wait()
            wake.clear()
            if not self._interim_ready() or not backend.room_for_interim:
                continue
            segmenter = self._segmenter
            number = segmenter.utterances_started
            audio = segmenter.open_utterance()
            assert audio is not None
            job_spec = dataclasses.replace(spec, prompt=self._context or None)
            call = asyncio.ensure_future(backend.transcribe(audio, job_spec))
            self._interim_call = (number, call)
            try:
                await asyncio.wait([call])
            except asyncio.CancelledError:  # the stream is over
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)  # its worker let go
                raise
            finally:
                self._interim_call = None
            if call.cancelled():  # its utterance closed meanwhile
                continue
            try:
                transcript = call.result()
            except InterimSkipped:
                continue
            except Exception as exc:
                _LOGGER.debug("stream %s: interim failed: %r", self.spec.request_id, exc)
                self._interim_due = (number, len(audio) + _INTERIM_RETRY_SAMPLES)
                continue
            text = transcript.text if self._repliable(transcript.text) else ""
            # nothing heard yet (a word just begun): look again soon, not a whole interval
            # later, unless interims are scarce (a busy backend)
            grow = every if text or not backend.idle else _INTERIM_RETRY_SAMPLES
            self._interim_due = (number, len(audio) + grow)
            still_open = self._segmenter.speaking and self._segmenter.utterances_started == number
            if text and still_open:
                self._accounting.interim(self.spec.protocol)
                await self._on_interim(text)
            self._wake_interims()  # audio that came during the decode may already be due
            self._start_early_final()  # the pause may have begun while this held the worker

    # --- native: the backend recognises the stream ------------------------------------------

    async def _run_native(self, live: LiveAudio) -> bool:
        """Deliver the streaming backend's finals; False if it gave up and the utterance
        pipeline takes over."""
        backend = self.route[0]
        try:
            async with contextlib.aclosing(backend.stream(live, self.spec)) as finals:
                while True:
                    # the shutdown's cut stops the wait for the next result, never a delivery:
                    # a final once recognised is billed and sent whole
                    async with self._grace.guard("stream"):
                        transcript = await anext(finals, None)
                    if transcript is None:
                        break
                    if transcript.interim:
                        await self._deliver_interim(transcript)
                    else:
                        await self._deliver_final(backend.name, live, transcript)
            return True
        except Exception as exc:
            # an outage goes to the fallback; an error about the request is the answer
            outage = as_outage(exc, self.spec.request_id, backend.name)
            error = outage if outage is not None else typing.cast(SpeechGWError, exc)
        pending = live.abandon()
        self._live = None
        _LOGGER.warning(
            "stream %s: streaming backend %r gave up (%s) with %.1f s unanswered",
            self.spec.request_id,
            backend.name,
            error.message,
            len(pending) / SAMPLE_RATE,
        )
        spares = self.route[1:]
        if spares and outage is not None:
            self._accounting.fallback(self.spec.request_id, backend.name, spares[0].name, error)
            self.route = spares
            # the unanswered audio goes first, before anything the client sends next (no
            # other feed runs until this returns)
            self._cut(pending)
            self._queue_backlog_now()
        else:
            # nobody else can answer for that audio: the client hears of it once, and the
            # rest of the stream goes to the same route utterance by utterance
            books = self._books(backend.name)
            books.audio_seconds = len(pending) / SAMPLE_RATE
            self._accounting.close(books, error)
            await self._tell(error)
        if self._live_closed:  # the client had finished: nothing more will come
            self._cut(None)
            self._queue_backlog_now()
            await self._queue.close()
        return False

    def _queue_backlog_now(self) -> None:
        while self._backlog:
            self._queue.put_nowait(self._backlog.popleft())

    def _books(self, backend: str) -> Books:
        return Books(self.spec.protocol, spec=self.spec, backend=backend, utterance=True)

    async def _deliver_interim(self, transcript: Transcript) -> None:
        """A natively streaming backend's interim: passed on (not billed) when asked for."""
        if self._on_interim is not None and self._repliable(transcript.text):
            self._accounting.interim(self.spec.protocol)
            await self._on_interim(transcript.text)

    async def _deliver_final(self, backend: str, live: LiveAudio, transcript: Transcript) -> None:
        books = self._books(backend)
        # billed: the speech the backend timed (an utterance with its pauses, not the
        # silence between utterances); latency counts from the arrival of its last sample
        books.audio_seconds = sum(s.end - s.start for s in transcript.segments)
        end = transcript.segments[-1].end if transcript.segments else 0.0
        books.start_clock(at=live.arrival(round(end * SAMPLE_RATE)))
        self._accounting.backend_time(backend, books.elapsed)
        await self._settle(books, transcript)

    def _repliable(self, text: str) -> bool:
        """Whether ``text`` is worth sending the client: words, and unless
        ``hesitation_replies``, not hesitations alone ("Um.")."""
        return bool(text) and (self.config.hesitation_replies or not hesitation_only(text))

    async def _settle(self, books: Books, transcript: Transcript) -> bool:
        """Bill and count an utterance, then reply (an utterance without words gets none, nor
        one of hesitations alone unless ``hesitation_replies``). True when the client was
        answered."""
        if not self._repliable(transcript.text):
            transcript = dataclasses.replace(transcript, text="", segments=())
        try:
            answered = await self._accounting.settle(books, transcript)
        except SpeechGWError as exc:
            self._accounting.close(books, exc)
            await self._on_error(exc)
            return False
        if answered or self._on_speech is not None:  # a client following turns hears of each
            await self._on_transcript(transcript)
        return answered

    # --- utterances: webrtcvad cuts, the route transcribes ----------------------------------

    async def _run_utterances(self) -> None:
        """Transcribe queued utterances in order until :meth:`end` and the queue is drained.

        Each utterance goes with the stream's last replies as its context (``prompt``), so
        that a fragment cut off by a pause is decoded knowing what came before it. Only what
        the client was sent becomes context: noise, failures and dropped text never do.
        """
        first = True
        while (utterance := await self._queue.get()) is not None:
            books = self._books("-")
            books.start_clock()
            # the spec bills the audio the client sent: not the lead-in silence added to the
            # stream's first utterance
            synthetic = self._segmenter.lead_in_padding if first else 0
            first = False
            books.audio_seconds = (len(utterance) - synthetic) / SAMPLE_RATE
            self._final_running = True
            try:
                async with self._grace.guard("stream"):
                    spec = dataclasses.replace(self._utterance_spec, prompt=self._context or None)
                    transcript = await self._early_transcript(utterance, books)
                    if transcript is None:
                        transcript = await run_route(
                            AudioJob(spec, utterance), self.route, books, self._accounting
                        )
            except Exception as exc:
                self._final_running = False
                self._wake_interims()
                self._start_early_final()
                error = exc if isinstance(exc, SpeechGWError) else None
                if error is None:
                    _LOGGER.exception("stream %s: utterance failed", self.spec.request_id)
                    error = InternalError("internal server error")
                self._accounting.close(books, error)
                await self._tell(error)
                continue
            try:
                if await self._settle(books, transcript):
                    self._context = _context(
                        self._context, transcript.text, self.config.context_chars
                    )
            finally:
                self._final_running = False
                self._wake_interims()
                self._start_early_final()

    async def _tell(self, error: SpeechGWError) -> None:
        """Send the client an utterance's error; the shutdown's, once: the utterances still
        queued when it came all fail alike, and one message says it."""
        if isinstance(error, ShuttingDown):
            if self._told_of_the_cut:
                return
            self._told_of_the_cut = True
        await self._on_error(error)

    async def _early_transcript(self, utterance: np.ndarray, books: Books) -> Transcript | None:
        """The utterance's final decoded ahead, if there is one for it (waiting for it to
        finish, if need be); None to decode it now."""
        early = self._early
        if early is None or early.utterance is not utterance:
            return None
        self._early = None
        try:
            with self._accounting.running():  # in flight from the close, as any final
                transcript = await early.run
        except Exception as exc:
            # the final goes its own way (to the fallbacks, if the backend is out)
            _LOGGER.debug("stream %s: early final failed: %r", self.spec.request_id, exc)
            self._accounting.early_final("failed")
            return None
        if transcript is None:  # no free worker when it began
            return None
        self._accounting.early_final("used")
        self._accounting.backend_time(early.backend, time.monotonic() - early.started)
        books.backend = early.backend
        return transcript
