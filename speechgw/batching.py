"""Batching: model calls that jobs make at about the same time run as one batched call.

Each job runs its own recognition algorithm in its own worker thread, unchanged; only the calls
it makes into the model go through a :class:`CallBatcher`, which holds them for a moment
(``window``, or until ``batch_size`` calls of one kind wait, or until every job in flight is
waiting, so that nobody waits for company that cannot come) and runs them together. So a job's
result is what it would be alone (the same algorithm, the same calls), while an accelerator
sees one call for many jobs.

- **Priority**: each job says how urgent it is (:class:`JobContext`): a batch is formed around
  the most urgent waiting call (a stream's final before an interim before a recording, a
  shorter recording before a longer one, for a while: see :func:`passed_over_limit`), then
  filled with calls of the same kind in that order.
- **Failure isolation**: when a batched call raises, its calls are run again one by one, so
  only the call that fails gets the error.
- **Cancellation**: a job whose client left is marked cancelled; its waiting calls are dropped
  and it gets :class:`BatchCancelled` at its next call, freeing its place in the next batch.
- **Back-pressure**: a job makes one call at a time, so waiting calls never outnumber the jobs
  in flight, which the backend bounds.

It is thread-based (the callers are worker threads; the batches run on ``workers`` dispatcher
threads), so nothing here touches the event loop.

Without batching, :class:`PriorityGate` keeps the same order of urgency: each model call of a
job waits for one of the model's ``slots`` and the most urgent waiting call takes the next one,
so a stream's final waits for the one call of a long recording under way, not for the whole
recording (which makes one call per 30 s window).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LONGEST_PASSED_OVER",
    "PASSED_OVER_PER_AUDIO_SECOND",
    "BatchCancelled",
    "BatchStats",
    "CallBatcher",
    "JobContext",
    "Priority",
    "PriorityGate",
    "passed_over_limit",
]

_LOGGER = logging.getLogger(__name__)


class Priority:
    """Lower goes first."""

    FINAL = 0
    """A live stream's utterance: someone is waiting for each word."""
    INTERIM = 1
    """A glimpse of an utterance still open."""
    RECORDING = 2
    """A whole recording (batch protocol, HTTP upload)."""


PASSED_OVER_PER_AUDIO_SECOND = 0.01
"""How long a job's model call may be passed over by calls of shorter jobs of its priority,
per second of its job's audio: a 5-minute recording's call 3 s, a 5-second request's 0.05 s."""
INTERIM_SHARE = 0.2
"""Of the model's time while recordings are under way, the most that interims take (without
batching): a live stream beside a long upload still shows its words as they are said, and the
upload takes at most a quarter longer for them (``bench/beside_long_upload.py --live``)."""
INTERIM_CREDIT_CAP = 1.0
"""Seconds of model time interims may save up beside recordings: so many come at once at most."""
LONGEST_PASSED_OVER = 10.0
"""...and at most this long (a recording of 1,000 s and up)."""


def passed_over_limit(seconds: float, longest: float = LONGEST_PASSED_OVER) -> float:
    """How long a call of a job of ``seconds`` of audio may wait for calls of shorter jobs.

    Calls of one priority go in order of their *due* time, their arrival plus this: a short
    request's call comes before the next call of a long recording under way (it waits for one
    call, not for the recording), as shortest-first would have it; but a call that has waited
    its limit is passed over by no call that comes after, so a long recording beside a steady
    flow of short requests still advances, by at least one 30 s window per ``longest`` seconds
    and a call (under shortest-first alone it waited until the flow stopped: a 29-minute
    upload could wait for ever and its client give up)."""
    return min(seconds * PASSED_OVER_PER_AUDIO_SECOND, longest)


class BatchCancelled(Exception):
    """The job was cancelled (its client left) while it waited for a batch or for its turn at
    the model."""


@dataclass(slots=True)
class JobContext:
    """What the batcher knows of the job a worker thread is running."""

    priority: int = Priority.RECORDING
    cancelled: threading.Event = field(default_factory=threading.Event)
    seconds: float = 0.0
    """The job's audio: among waiting calls of one priority, the gate lets the shorter job's
    call go first (a short request between the calls of a long recording), until the longer
    one's has waited :func:`passed_over_limit`."""


@dataclass(slots=True)
class BatchStats:
    """How full the batches have been (the metrics and the benchmarks read it)."""

    calls: int = 0
    """Calls handed to the model in batches (one retried alone counts again)."""
    batches: int = 0
    largest: int = 0
    retried_alone: int = 0
    """Calls run again one by one because their batch failed."""
    sizes: dict[int, int] = field(default_factory=dict)
    """Batch size -> how many batches had it."""
    waiting: int = 0
    """Calls waiting for a batch when the snapshot was taken."""

    @property
    def mean_size(self) -> float:
        return self.calls / self.batches if self.batches else 0.0


@dataclass(slots=True)
class _Call:
    kind: Hashable
    item: Any
    priority: int
    seq: int
    context: JobContext
    arrived: float
    due: float
    """Its place among calls of its priority: ``arrived`` plus :func:`passed_over_limit`."""
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def _urgency(call: _Call) -> tuple[int, float, int]:
    """A waiting call's place: its job's priority, then its due time (a short recording's call
    before a long one's, until the long one's has waited its limit), then its arrival."""
    return call.priority, call.due, call.seq


RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]
"""``run(kind, items)``: one result per item, in order (raises to fail the whole batch)."""


class CallBatcher:
    """Merges the model calls of concurrent jobs into batched calls."""

    def __init__(
        self,
        run: RunBatch,
        *,
        batch_size: int,
        window: float,
        workers: int = 1,
        name: str = "batcher",
        longest_passed_over: float = LONGEST_PASSED_OVER,
    ) -> None:
        self._run = run
        self._longest_passed_over = longest_passed_over
        self.batch_size = batch_size
        self.window = window
        self.stats = BatchStats()
        self._local = threading.local()
        self._lock = threading.Condition()
        self._waiting: list[_Call] = []
        self._active_jobs = 0
        self._seq = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._dispatch, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        """Calls waiting for a batch now."""
        with self._lock:
            return len(self._waiting)

    def snapshot(self) -> BatchStats:
        """A copy of the counts, taken at once (the dispatchers keep counting)."""
        with self._lock:
            s = self.stats
            return BatchStats(
                s.calls, s.batches, s.largest, s.retried_alone, dict(s.sizes), len(self._waiting)
            )

    # --- the jobs' side (worker threads) ----------------------------------------------------

    @contextmanager
    def job(self, context: JobContext) -> Iterator[None]:
        """Run a job in this thread: its calls carry ``context``, and while it runs the
        batcher counts it among the jobs that may still make a call."""
        self._local.context = context
        with self._lock:
            self._active_jobs += 1
        try:
            yield
        finally:
            with self._lock:
                self._active_jobs -= 1
                self._lock.notify_all()
            self._local.context = None

    def call(self, kind: Hashable, item: Any) -> Any:
        """Run ``item`` in the next batch of ``kind`` and return its result (blocking).

        Raises:
            BatchCancelled: the job was cancelled.
            Exception: what the batched run raised for this item.
        """
        context: JobContext = getattr(self._local, "context", None) or JobContext()
        if context.cancelled.is_set():
            raise BatchCancelled
        now = time.monotonic()
        due = now + passed_over_limit(context.seconds, self._longest_passed_over)
        call = _Call(kind, item, context.priority, next(self._seq), context, now, due)
        with self._lock:
            if self._closed:
                raise BatchCancelled
            self._waiting.append(call)
            self._lock.notify_all()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    # --- the dispatchers --------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                batch = self._next_batch()
                if batch is None:
                    return
            self._execute(batch)

    def _next_batch(self) -> list[_Call] | None:
        """Wait (holding the lock) until a batch is due, and take it; None when closed."""
        while True:
            self._drop_cancelled()
            if self._closed and not self._waiting:
                return None
            if not self._waiting:
                self._lock.wait()
                continue
            head = min(self._waiting, key=_urgency)
            same = [c for c in self._waiting if c.kind == head.kind]
            window_ends = head.arrived + self.window
            # every job in flight is waiting here: no one else can join this batch
            everyone = len(self._waiting) >= self._active_jobs
            now = time.monotonic()
            if len(same) >= self.batch_size or everyone or now >= window_ends or self._closed:
                same.sort(key=_urgency)
                batch = same[: self.batch_size]
                taken = {id(c) for c in batch}
                self._waiting = [c for c in self._waiting if id(c) not in taken]
                self._count(batch)
                return batch
            self._lock.wait(timeout=window_ends - now)

    def _drop_cancelled(self) -> None:
        for call in [c for c in self._waiting if c.context.cancelled.is_set()]:
            self._waiting.remove(call)
            call.error = BatchCancelled()
            call.done.set()

    def _count(self, batch: list[_Call]) -> None:
        """Count a batch about to run (holding the lock)."""
        stats, size = self.stats, len(batch)
        stats.calls += size
        stats.batches += 1
        stats.largest = max(stats.largest, size)
        stats.sizes[size] = stats.sizes.get(size, 0) + 1

    def _execute(self, batch: list[_Call]) -> None:
        kind = batch[0].kind
        try:
            results = self._run(kind, [c.item for c in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return
            # one bad item must not fail its batch-mates: each runs again alone
            _LOGGER.warning(
                "a batch of %d calls failed (%s); running them one by one", len(batch), exc
            )
            with self._lock:
                self.stats.retried_alone += len(batch)
                for call in batch:
                    self._count([call])
            for call in batch:
                self._execute([call])
            return
        for call, result in zip(batch, results, strict=True):
            call.result = result
            call.done.set()

    def close(self) -> None:
        """Run what waits, then stop the dispatchers."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)


class PriorityGate:
    """At most ``slots`` model calls at once (the model's workers), taken in order of urgency:
    by the job's priority, then the call's due time (its arrival plus
    :func:`passed_over_limit` of its job's length: the shorter job first, for a while), then
    the job's arrival. So a stream's final goes before every recording's call, and a short
    recording's calls before those of a long one under way: it waits for one call of the long
    one (a 30 s window), not for all of it; a call that has waited its limit goes before
    every call that comes after it (so two long recordings take turns, a call each).

    A more urgent job keeps a slot free for itself between its calls (while it computes its
    features or reads what a call returned): a recording's call then starts only on a slot no
    such job may need, so that a final's next call never waits behind a recording's.

    A call runs in its job's own thread (nothing is batched or deferred): a job's results are
    what they would be alone. :meth:`wake` lets the jobs cancelled meanwhile stop waiting; a
    cancelled job stops at its next call, its turn or not.

    While recordings are under way, interims take at most :data:`INTERIM_SHARE` of the
    model's time (:attr:`room_for_interim`): each recording call earns them credit in
    proportion, each interim call spends its own time.
    """

    def __init__(self, slots: int, longest_passed_over: float = LONGEST_PASSED_OVER) -> None:
        self._free = slots
        self._longest_passed_over = longest_passed_over
        self._lock = threading.Condition()
        self._waiting: list[tuple[int, float, int, int]] = []  # (priority, due, job, call)
        self._between_calls: dict[int, int] = {}  # job -> its priority, while it holds no slot
        self._jobs = itertools.count()
        self._calls = itertools.count()
        self._local = threading.local()
        self._recordings = 0  # jobs of recordings under way
        self._interim_credit = 0.0  # model seconds interims may still take beside them

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        with self._lock:
            return len(self._waiting)

    @property
    def room_for_interim(self) -> bool:
        """Whether an interim may start now: no recording is under way, or interims have taken
        less than their share of the model's time beside the recordings."""
        with self._lock:
            return not self._recordings or self._interim_credit > 0

    @contextmanager
    def job(self, context: JobContext) -> Iterator[None]:
        """Run a job in this thread: its calls carry ``context`` and its place in arrival."""
        arrival = next(self._jobs)
        self._local.job = (context, arrival)
        recording = context.priority == Priority.RECORDING
        with self._lock:
            self._between_calls[arrival] = context.priority
            if recording:
                if not self._recordings:
                    self._interim_credit = 0.0  # earned anew beside each run of recordings
                self._recordings += 1
        try:
            yield
        finally:
            self._local.job = None
            with self._lock:
                del self._between_calls[arrival]
                self._recordings -= recording
                self._lock.notify_all()  # a slot it kept may be free for others now

    def run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` once a slot is this call's (blocking).

        Raises:
            BatchCancelled: the job was cancelled before the call.
        """
        job = getattr(self._local, "job", None)
        context, arrival = job if job is not None else (JobContext(), next(self._jobs))
        due = time.monotonic() + passed_over_limit(context.seconds, self._longest_passed_over)
        ticket = (context.priority, due, arrival, next(self._calls))
        with self._lock:
            heapq.heappush(self._waiting, ticket)
            try:
                while True:
                    if context.cancelled.is_set():
                        raise BatchCancelled
                    if self._my_turn(ticket):
                        break
                    self._lock.wait()
            except BaseException:
                self._waiting.remove(ticket)
                heapq.heapify(self._waiting)
                self._lock.notify_all()  # the head may have changed
                raise
            heapq.heappop(self._waiting)
            self._free -= 1
            self._between_calls.pop(arrival, None)
            if self._free and self._waiting:
                self._lock.notify_all()  # the next head may take the next free slot
        started = time.monotonic()
        try:
            return call(*args, **kwargs)
        finally:
            took = time.monotonic() - started
            with self._lock:
                self._free += 1
                if job is not None:
                    self._between_calls[arrival] = context.priority
                if context.priority == Priority.RECORDING:
                    earned = took * INTERIM_SHARE / (1 - INTERIM_SHARE)
                    self._interim_credit = min(INTERIM_CREDIT_CAP, self._interim_credit + earned)
                elif context.priority == Priority.INTERIM and self._recordings:
                    self._interim_credit -= took
                self._lock.notify_all()

    def _my_turn(self, ticket: tuple[int, float, int, int]) -> bool:
        """Whether ``ticket`` heads the queue and a slot is free that no more urgent job
        between its calls keeps (holding the lock)."""
        if self._waiting[0] != ticket or not self._free:
            return False
        priority, _, arrival, _ = ticket
        kept = sum(1 for job, p in self._between_calls.items() if p < priority and job != arrival)
        return self._free > kept

    def wake(self) -> None:
        """Let waiting calls look again whether their job was cancelled."""
        with self._lock:
            self._lock.notify_all()
