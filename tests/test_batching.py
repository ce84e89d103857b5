"""The call batcher: calls that jobs make together run as one batch, the most urgent first;
one bad call fails alone; a cancelled job's calls are dropped; and a lone job does not wait
for company. Then the Whisper backend batching through it, with the real model: the texts,
word timings and detected languages of the unbatched backend, and the batch sizes in
``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from speechgw.backends.whisper import WhisperBackend, WhisperOptions

from speechgw.batching import BatchCancelled, CallBatcher, JobContext, Priority, PriorityGate
from speechgw.jobs import Caller, JobSpec
from tests import speech
from tests.client import multipart_upload, post, transcribe
from tests.serving import running_server
from tests.streaming_client import assert_sentences, read_pcm16, stream_pcm
from tests.waiting import wait_for


class Recorder:
    """A batch function: doubles each item, records each batch; ``gate`` holds the first
    batch until released, so that the next calls queue behind it."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[tuple[Any, list[Any]]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.gate.set()

    def __call__(self, kind: Any, items: Sequence[Any]) -> list[Any]:
        self.batches.append((kind, list(items)))
        self.started.set()
        self.gate.wait(30)
        if "bad" in items:
            raise ValueError("cannot double a bad item")
        return [item * 2 for item in items]


def run_jobs(batcher: CallBatcher, jobs: list[tuple[Any, Any, int]]) -> dict[Any, Any]:
    """Each (kind, item, priority) as a job in its own thread; item -> result or error."""
    results: dict[Any, Any] = {}
    barrier = threading.Barrier(len(jobs))

    def job(kind: Any, item: Any, priority: int) -> None:
        with batcher.job(JobContext(priority=priority)):
            barrier.wait()
            try:
                results[item] = batcher.call(kind, item)
            except Exception as exc:
                results[item] = exc

    threads = [threading.Thread(target=job, args=spec) for spec in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_calls_made_together_run_as_one_batch_and_get_their_own_results() -> None:
    recorder = Recorder()
    batcher = CallBatcher(recorder, batch_size=8, window=5.0)
    results = run_jobs(batcher, [("decode", n, Priority.RECORDING) for n in (1, 2, 3, 4)])
    batcher.close()
    assert results == {1: 2, 2: 4, 3: 6, 4: 8}
    # all four jobs were waiting, so the batch left at once, not after the 5 s window
    assert [sorted(items) for _, items in recorder.batches] == [[1, 2, 3, 4]]


def test_a_lone_job_does_not_wait_for_the_window() -> None:
    batcher = CallBatcher(Recorder(), batch_size=8, window=30.0)
    started = time.monotonic()
    with batcher.job(JobContext()):
        assert batcher.call("decode", 21) == 42
    assert time.monotonic() - started < 5  # not the 30 s window
    batcher.close()


def test_batches_hold_one_kind_and_at_most_batch_size_calls() -> None:
    recorder = Recorder()
    batcher = CallBatcher(recorder, batch_size=2, window=5.0)
    jobs = [("a", 1, 2), ("a", 2, 2), ("a", 3, 2), ("b", 10, 2), ("b", 20, 2)]
    results = run_jobs(batcher, jobs)
    batcher.close()
    assert results == {1: 2, 2: 4, 3: 6, 10: 20, 20: 40}
    assert all(len(items) <= 2 for _, items in recorder.batches)
    for kind, items in recorder.batches:
        assert all((kind == "a") == (item < 10) for item in items)


def test_the_most_urgent_calls_go_first() -> None:
    recorder = Recorder(hold_first=True)
    batcher = CallBatcher(recorder, batch_size=2, window=0.0)
    blocker = threading.Thread(target=run_jobs, args=(batcher, [("decode", 0, 2)]))
    blocker.start()
    assert recorder.started.wait(10)  # the one worker is busy with the first batch
    queued = [
        ("decode", 1, Priority.RECORDING),
        ("decode", 2, Priority.RECORDING),
        ("decode", 3, Priority.FINAL),
        ("decode", 4, Priority.INTERIM),
    ]
    waiting = threading.Thread(target=lambda: results.update(run_jobs(batcher, queued)))
    results: dict[Any, Any] = {}
    waiting.start()
    while batcher.waiting < 4:  # all four have queued
        time.sleep(0.01)
    recorder.gate.set()
    waiting.join(30)
    blocker.join(30)
    batcher.close()
    assert [sorted(items) for _, items in recorder.batches] == [[0], [3, 4], [1, 2]]
    assert results == {1: 2, 2: 4, 3: 6, 4: 8}


def test_a_shorter_recordings_calls_join_the_next_batch_first() -> None:
    """Recordings' calls waiting for a full batch: the shorter recordings' go first, whatever
    came first (a short request beside long ones waits for one batch)."""
    recorder = Recorder(hold_first=True)
    batcher = CallBatcher(recorder, batch_size=2, window=0.0)
    blocker = threading.Thread(target=run_jobs, args=(batcher, [("decode", 0, 2)]))
    blocker.start()
    assert recorder.started.wait(10)  # the one worker is busy with the first batch
    results: dict[Any, Any] = {}

    def job(item: int, seconds: float) -> None:
        with batcher.job(JobContext(priority=Priority.RECORDING, seconds=seconds)):
            results[item] = batcher.call("decode", item)

    lengths = {1: 1800.0, 2: 1740.0, 3: 5.0, 4: 60.0}  # item -> its recording's seconds
    threads = []
    for n, (item, seconds) in enumerate(lengths.items(), 1):
        threads.append(threading.Thread(target=job, args=(item, seconds)))
        threads[-1].start()
        while batcher.waiting < n:  # each has come, in this order
            time.sleep(0.01)
    recorder.gate.set()
    for thread in [blocker, *threads]:
        thread.join(30)
    batcher.close()
    assert [sorted(items) for _, items in recorder.batches] == [[0], [3, 4], [1, 2]]
    assert results == {1: 2, 2: 4, 3: 6, 4: 8}


def test_a_failing_call_does_not_fail_its_batch_mates() -> None:
    recorder = Recorder()
    batcher = CallBatcher(recorder, batch_size=8, window=5.0)
    results = run_jobs(batcher, [("decode", x, 2) for x in ("ok", "bad", "fine")])
    batcher.close()
    assert results["ok"] == "okok" and results["fine"] == "finefine"
    assert isinstance(results["bad"], ValueError)
    assert batcher.stats.retried_alone == 3
    assert len(recorder.batches[0][1]) == 3  # they were one batch first


def test_a_cancelled_jobs_waiting_call_is_dropped() -> None:
    recorder = Recorder(hold_first=True)
    batcher = CallBatcher(recorder, batch_size=4, window=0.0)
    blocker = threading.Thread(target=run_jobs, args=(batcher, [("decode", 0, 2)]))
    blocker.start()
    assert recorder.started.wait(10)
    context = JobContext()
    outcome: list[Any] = []

    def job() -> None:
        with batcher.job(context):
            try:
                outcome.append(batcher.call("decode", 5))
            except BatchCancelled as exc:
                outcome.append(exc)

    waiting = threading.Thread(target=job)
    waiting.start()
    while not batcher.waiting:
        time.sleep(0.01)
    context.cancelled.set()  # the client left while its call waited
    recorder.gate.set()
    waiting.join(30)
    blocker.join(30)
    batcher.close()
    assert len(outcome) == 1 and isinstance(outcome[0], BatchCancelled)
    assert [items for _, items in recorder.batches] == [[0]]  # 5 never ran
    with batcher.job(context), pytest.raises(BatchCancelled):
        batcher.call("decode", 6)  # and its later calls do not start


def gated_job(
    gate: PriorityGate,
    priority: int,
    name: str,
    ran: list[str],
    hold: threading.Event | None = None,
    go: threading.Event | None = None,
    context: JobContext | None = None,
) -> threading.Thread:
    """A job in its own thread that makes one model call through ``gate`` (after ``go``, when
    given): the call notes ``name`` in ``ran``, then blocks until ``hold`` is set, if given."""
    context = context or JobContext(priority=priority)

    def call() -> None:
        ran.append(name)
        if hold is not None:
            hold.wait(30)

    def job() -> None:
        with gate.job(context):
            if go is not None:
                go.wait(30)
            try:
                gate.run(call)
            except BatchCancelled:
                ran.append(f"{name} cancelled")

    thread = threading.Thread(target=job)
    thread.start()
    return thread


def test_the_gate_runs_the_most_urgent_waiting_call_first() -> None:
    """Without batching, one model call at a time: a stream's final before an interim before
    the recordings, which keep the order they came in."""
    gate, ran, hold = PriorityGate(1), [], threading.Event()
    threads = [gated_job(gate, Priority.RECORDING, "running", ran, hold)]
    wait_for(lambda: ran == ["running"])
    queued = [
        ("first recording", Priority.RECORDING),
        ("second recording", Priority.RECORDING),
        ("interim", Priority.INTERIM),
        ("final", Priority.FINAL),
    ]
    for n, (name, priority) in enumerate(queued, 1):
        threads.append(gated_job(gate, priority, name, ran))
        wait_for(lambda n=n: gate.waiting == n)  # each has come, in this order
    hold.set()
    for thread in threads:
        thread.join(30)
    assert ran == ["running", "final", "interim", "first recording", "second recording"]


def test_the_gate_runs_a_shorter_recordings_call_first() -> None:
    """Recordings' calls take turns, the shorter recording's first, whatever came first: a
    short request waits for one call of a long recording under way, not for the recording."""
    gate, ran, hold = PriorityGate(1), [], threading.Event()
    long = JobContext(priority=Priority.RECORDING, seconds=1800.0)
    threads = [gated_job(gate, Priority.RECORDING, "long, running", ran, hold, context=long)]
    wait_for(lambda: ran == ["long, running"])
    for n, (name, seconds) in enumerate([("long", 1740.0), ("middle", 60.0), ("short", 5.0)], 1):
        context = JobContext(priority=Priority.RECORDING, seconds=seconds)
        threads.append(gated_job(gate, Priority.RECORDING, name, ran, context=context))
        wait_for(lambda n=n: gate.waiting == n)
    hold.set()
    for thread in threads:
        thread.join(30)
    assert ran == ["long, running", "short", "middle", "long"]


class SteadyShortRequests:
    """Three clients that send one short recording after another for as long as the test
    runs: one model call each, so that with one slot a short call always waits when one ends."""

    def __init__(self, run_call: Callable[[JobContext], None]) -> None:
        self.answered = 0
        self.stop = threading.Event()
        self._run_call = run_call
        self._threads = [threading.Thread(target=self._client) for _ in range(3)]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        while not self.stop.is_set():
            self._run_call(JobContext(priority=Priority.RECORDING, seconds=5.0))
            self.answered += 1

    def __enter__(self) -> SteadyShortRequests:
        wait_for(lambda: self.answered >= 6)  # the flow is steady
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)


def a_long_recording_beside(run_call: Callable[[JobContext], None], calls: int) -> float:
    """The seconds a 30-minute recording's ``calls`` model calls take beside a steady flow of
    short requests; fails if they are not done within 15 s while the flow goes on."""
    long = JobContext(priority=Priority.RECORDING, seconds=1800.0)
    done = threading.Event()

    def recording() -> None:
        for _ in range(calls):
            run_call(long)
        done.set()

    with SteadyShortRequests(run_call) as short:
        started = time.monotonic()
        thread = threading.Thread(target=recording)
        thread.start()
        finished = done.wait(15)
        took = time.monotonic() - started
        answered = short.answered
    thread.join(30)  # the flow has stopped: its calls run now if they had not
    assert finished, "the long recording's calls waited for as long as short requests came"
    assert answered > 2 * calls  # the short requests went on meanwhile
    return took


def test_a_long_recording_beside_a_steady_flow_of_short_requests_still_advances() -> None:
    """Shortest first alone starved it: each of its calls waited for as long as short requests
    kept coming. Now a call that has waited its limit (0.3 s here; 10 s for a long recording
    by default) goes before the calls that come after it."""
    gate = PriorityGate(1, longest_passed_over=0.3)

    def run_call(context: JobContext) -> None:
        with gate.job(context):
            gate.run(time.sleep, 0.02)  # one model call

    took = a_long_recording_beside(run_call, calls=5)
    assert took < 5 * (0.3 + 0.2) + 2, took  # each call waited its limit and a few calls more


def test_a_long_recordings_batched_calls_advance_beside_short_requests() -> None:
    """The same with batching (batches of one call: with one dispatcher, a short call is
    always waiting for the next)."""
    batcher = CallBatcher(
        lambda kind, items: [time.sleep(0.02) for _ in items],
        batch_size=1,
        window=0.0,
        longest_passed_over=0.3,
    )

    def run_call(context: JobContext) -> None:
        with batcher.job(context):
            batcher.call("decode", None)

    try:
        took = a_long_recording_beside(run_call, calls=5)
    finally:
        batcher.close()
    assert took < 5 * (0.3 + 0.2) + 2, took


@pytest.mark.parametrize("slots", [1, 2])
def test_a_final_between_its_calls_keeps_a_slot_from_recordings(slots: int) -> None:
    """A stream's final computing between its calls keeps a slot: a recording's call that
    comes meanwhile waits for the final to end (one model worker), or takes another slot."""
    gate, ran, go = PriorityGate(slots), [], threading.Event()
    final = gated_job(gate, Priority.FINAL, "final", ran, go=go)
    wait_for(lambda: gate._between_calls)  # the final is in flight, between its calls
    recording = gated_job(gate, Priority.RECORDING, "recording", ran)
    wait_for(lambda: ran or gate.waiting)  # the recording's call ran, or waits
    go.set()
    final.join(30)
    recording.join(30)
    assert ran == (["final", "recording"] if slots == 1 else ["recording", "final"])


def test_a_cancelled_jobs_call_stops_waiting_for_its_turn() -> None:
    gate, ran, hold = PriorityGate(1), [], threading.Event()
    running = gated_job(gate, Priority.RECORDING, "running", ran, hold)
    wait_for(lambda: ran == ["running"])
    context = JobContext(priority=Priority.RECORDING)
    waiting = gated_job(gate, Priority.RECORDING, "waiting", ran, context=context)
    wait_for(lambda: gate.waiting == 1)
    context.cancelled.set()  # its client left
    gate.wake()
    waiting.join(30)
    assert ran == ["running", "waiting cancelled"] and gate.waiting == 0
    hold.set()
    running.join(30)
    after = gated_job(gate, Priority.RECORDING, "after", ran)  # the slot is free again
    after.join(30)
    assert ran[-1] == "after"


def test_interims_beside_recordings_take_at_most_their_share_of_the_model() -> None:
    """With no recording under way an interim may always start; beside one, only while
    interims have taken less than a fifth of the model's time: each call of a recording earns
    them a quarter of its own, each interim call spends its own (measured, not estimated)."""
    gate = PriorityGate(1)
    calls: queue.Queue[float | None] = queue.Queue()
    made = threading.Semaphore(0)

    def recording() -> None:  # under way until told to end, a call of the given length each
        with gate.job(JobContext(priority=Priority.RECORDING)):
            made.release()
            while (seconds := calls.get()) is not None:
                gate.run(time.sleep, seconds)
                made.release()

    def interim_call(seconds: float) -> None:
        def job() -> None:
            with gate.job(JobContext(priority=Priority.INTERIM)):
                gate.run(time.sleep, seconds)

        thread = threading.Thread(target=job)
        thread.start()
        thread.join(30)

    assert gate.room_for_interim  # nothing under way
    interim_call(0.3)
    assert gate.room_for_interim  # interims alone cost nothing
    thread = threading.Thread(target=recording)
    thread.start()
    assert made.acquire(timeout=30)
    assert not gate.room_for_interim  # a recording under way has earned nothing yet
    calls.put(0.4)
    assert made.acquire(timeout=30)
    assert gate.room_for_interim  # 0.1 s earned
    interim_call(0.3)
    assert not gate.room_for_interim  # 0.2 s owed
    calls.put(0.4)
    assert made.acquire(timeout=30)
    assert not gate.room_for_interim  # 0.1 s still owed
    calls.put(0.8)
    assert made.acquire(timeout=30)
    assert gate.room_for_interim  # 0.1 s earned again
    calls.put(None)
    thread.join(30)
    assert gate.room_for_interim


def batched_tiny(**options: object) -> dict:
    """A server's backends: tiny.en batching up to 4 calls, with these options."""
    whisper = {"type": "whisper", "model": "tiny.en", "cpu_threads": 2, "batch_size": 4}
    return {"whisper": {**whisper, **options}}


def test_batched_whisper_gives_the_unbatched_texts(voices, tiny_server, tmp_path) -> None:
    """The real model, batch_size 4: six recordings at once come back as they do one by one
    from an unbatched server, and they did share batches. A stream on the same server (its
    utterances carry their context as a prompt) is heard as well."""
    wavs = {name: path.read_bytes() for name, path in voices.items()}
    alone = {name: transcribe(tiny_server.ws, wav).reply["text"] for name, wav in wavs.items()}
    # the stream below: its contexts cut to one length
    with running_server(backends=batched_tiny(prompt_tokens=8)) as server:
        together: dict[str, str] = {}
        start = threading.Barrier(len(wavs))

        def client(name: str) -> None:
            start.wait()
            together[name] = transcribe(server.ws, wavs[name]).reply["text"]

        threads = [threading.Thread(target=client, args=(name,)) for name in wavs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert together == alone
        # the operator sees it in /metrics: calls in batches, some batches of two or more
        batches = server.metric("speechgw_batch_size_count", backend="whisper")
        calls = server.metric("speechgw_batch_size_sum", backend="whisper")
        singles = server.metric("speechgw_batch_size_bucket", backend="whisper", le="1.0")
        assert calls >= len(wavs) and batches > singles, (calls, batches, singles)
        # nothing left waiting once every reply is in (the sample is there, and it is 0)
        metrics = server.get("/metrics")[1]
        assert 'speechgw_batch_waiting{backend="whisper"} 0.0' in metrics
        assert 'speechgw_backend_waiting{backend="whisper"} 0.0' in metrics

        names = ["market", "window", "coffee"]
        three = speech.concat([voices[n] for n in names], tmp_path / "3.wav", silence_seconds=1.0)
        pcm, rate = read_pcm16(three)
        assert_sentences(stream_pcm(server.ws, pcm, rate), names)


def test_batched_word_timestamps_and_detection_match_unbatched(voices) -> None:
    """Word timing (``align``, which takes the deferred features) and language detection go
    through the batched model too, and give what the unbatched backend gives."""
    audio = [speech.samples_16k(voices[n]) for n in ("children", "train")]
    specs = [
        JobSpec("en", "transcribe", "openai", Caller("k"), word_timestamps=True),
        JobSpec(None, "transcribe", "openai", Caller("k")),
    ]

    async def run(batch_size: int) -> list[tuple[str, str, list[tuple[str, float]]]]:
        backend = WhisperBackend(
            "w", WhisperOptions(model="tiny.en", cpu_threads=1, batch_size=batch_size)
        )
        await backend.start()
        try:
            done = await asyncio.gather(
                *(backend.transcribe(a, s) for a, s in zip(audio, specs, strict=True))
            )
        finally:
            await backend.close()
        return [(t.language, t.text, [(w.text, w.start) for w in t.words]) for t in done]

    alone, batched = asyncio.run(run(1)), asyncio.run(run(2))
    assert batched == alone
    assert alone[0][2][:2] == [("The", 0.0), ("children", pytest.approx(0.16, abs=0.3))]
    assert alone[1][0] == "en"


def test_word_timing_calls_of_concurrent_jobs_share_a_batch(voices) -> None:
    """Three jobs' ``align`` calls (word timing, the pass ``segment_times: sentences`` makes
    per window) made at once run as one batched call of the real model, and each job gets the
    alignment it gets alone: the same token-to-frame path (what word times come from)."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage
    from speechgw.backends.whisper_batching import BatchedWhisperModel, run_batch
    from speechgw.backends.whisper_languages import WindowLanguageModel
    from speechgw.backends.whisper_models import resolve_model

    whisper = WindowLanguageModel(resolve_model("tiny.en"), cpu_threads=1)
    model = whisper.model
    sot = Tokenizer(whisper.hf_tokenizer, False, task="transcribe", language="en").sot_sequence
    names = ("children", "train", "coffee")
    windows = []
    for name in names:
        mel = whisper.feature_extractor(speech.samples_16k(voices[name]))
        text = whisper.hf_tokenizer.encode(" " + speech.SENTENCES[name], add_special_tokens=False)
        windows.append((pad_or_trim(mel)[None], text.ids, mel.shape[-1]))
    alone = [
        model.align(get_ctranslate2_storage(mel), sot, [tokens], frames)[0]
        for mel, tokens, frames in windows
    ]

    kinds: list[tuple[Any, int]] = []

    def batch(kind: Any, items: Sequence[Any]) -> list[Any]:
        kinds.append((kind[0], len(items)))
        return run_batch(model, kind, items)

    # a long window, so that calls made first wait for the last of the three threads'
    batcher = CallBatcher(batch, batch_size=8, window=5.0)
    batched = BatchedWhisperModel(model, batcher)
    results: dict[str, Any] = {}
    start = threading.Barrier(len(names))

    def job(name: str, mel: Any, tokens: list[int], frames: int) -> None:
        with batcher.job(JobContext()):
            start.wait()
            storage = get_ctranslate2_storage(mel)
            results[name] = batched.align(storage, sot, [tokens], frames, median_filter_width=7)

    threads = [
        threading.Thread(target=job, args=(name, *window))
        for name, window in zip(names, windows, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    batcher.close()
    assert kinds == [("align", 3)]
    for name, mine in zip(names, alone, strict=True):
        (theirs,) = results[name]
        assert theirs.alignments == mine.alignments, name
        assert theirs.text_token_probs == pytest.approx(mine.text_token_probs, abs=0.05), name


def test_a_job_that_keeps_its_encodings_encodes_each_window_once(voices) -> None:
    """With word timing a window is used twice (``generate``, then ``align``). Deferred, each
    call took the mel features and encoded them again; a job that keeps its encodings has its
    window encoded in a batch of encodes, and both calls take that encoder output. The words
    and their times are faster-whisper's alone, either way."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage
    from speechgw.backends.whisper_batching import BatchedWhisperModel, run_batch
    from speechgw.backends.whisper_languages import WindowLanguageModel
    from speechgw.backends.whisper_models import resolve_model

    whisper = WindowLanguageModel(resolve_model("tiny.en"), cpu_threads=1)
    model = whisper.model
    audio = speech.samples_16k(voices["children"])

    def words() -> list[tuple[str, float, float]]:
        segments, _ = whisper.transcribe(audio, language="en", word_timestamps=True)
        return [(w.word, w.start, w.end) for s in segments for w in s.words]

    alone = words()
    calls: list[tuple[str, tuple[int, ...]]] = []

    def batch(kind: Any, items: Sequence[Any]) -> list[Any]:
        calls.append((kind[0], kind[-1]))  # the call, and what it was given: its form
        return run_batch(model, kind, items)

    batcher = CallBatcher(batch, batch_size=4, window=0.0)
    batched = BatchedWhisperModel(model, batcher)
    whisper.model = batched
    made: dict[bool, list[tuple[str, tuple[int, ...]]]] = {}
    try:
        for keep in (True, False):
            with batcher.job(JobContext()), batched.encodings_kept(keep):
                assert words() == alone, keep
            made[keep], calls[:] = list(calls), []
        # a call that passes the batcher by (no text to align) takes a kept output too
        with batcher.job(JobContext()), batched.encodings_kept():
            window = get_ctranslate2_storage(pad_or_trim(whisper.feature_extractor(audio))[None])
            sot = Tokenizer(whisper.hf_tokenizer, False, task="transcribe", language="en")
            assert len(batched.align(batched.encode(window), sot.sot_sequence, [[]], 300)) == 1
    finally:
        whisper.model = model
        batcher.close()
    mel, encoded = (80, 3000), (1500, 384)  # tiny.en's window before and after its encoder
    kept = made[True]
    assert kept[0] == ("encode", mel) and {"generate", "align"} <= {c for c, _ in kept}
    assert all(form == encoded for call, form in kept if call != "encode"), kept
    assert sum(call == "encode" for call, _ in kept) == sum(c == "generate" for c, _ in kept)
    assert made[False] and all(form == mel for _, form in made[False]), made[False]
    assert "encode" not in {c for c, _ in made[False]}


@pytest.mark.parametrize("recording", ["one window", "two windows"])
def test_a_recording_in_no_named_language_encodes_each_window_once(
    voices, long_speech, recording: str
) -> None:
    """faster-whisper hears a recording's language from its first window's encoder output,
    then encodes that window again to decode it (0.45 s of base's 0.6-1.4 s on a short
    request on two CPU cores), and the gateway heard it once more, as it hears each window.
    The window heard is kept for its decoding: one encoder pass and one hearing per window,
    and the segments and language of faster-whisper alone."""
    from faster_whisper import WhisperModel
    from speechgw.backends.whisper_batching import BatchedWhisperModel, run_batch
    from speechgw.backends.whisper_languages import WindowLanguageModel
    from speechgw.backends.whisper_models import resolve_model

    audio = speech.samples_16k(voices["garden"] if recording == "one window" else long_speech[0])
    windows = 1 if recording == "one window" else 2
    assert -(-len(audio) // (30 * 16000)) == windows

    def heard(whisper: WhisperModel) -> tuple[list[tuple[str, float, float]], str, float]:
        segments, info = whisper.transcribe(audio, beam_size=5)
        each = getattr(whisper, "hearing_each_window", contextlib.nullcontext)
        with each():  # as the gateway decodes: each window heard for its own language
            timed = [(s.text, s.start, s.end) for s in segments]
        return timed, info.language, info.language_probability

    path = resolve_model("base")
    alone = heard(WhisperModel(path, cpu_threads=2))  # faster-whisper's own
    whisper = WindowLanguageModel(path, cpu_threads=2)
    model = whisper.model
    calls: list[tuple[str, tuple[int, ...]]] = []

    def batch(kind: Any, items: Sequence[Any]) -> list[Any]:
        calls.append((kind[0], kind[-1]))
        return run_batch(model, kind, items)

    batcher = CallBatcher(batch, batch_size=4, window=0.0)
    batched = BatchedWhisperModel(model, batcher)
    whisper.model = batched
    try:
        with batcher.job(JobContext()), batched.encodings_kept():
            ours = heard(whisper)
    finally:
        whisper.model = model
        batcher.close()
    assert ours[:2] == alone[:2], (ours, alone)
    # heard on the window as decoded: its audio less the features' one frame past its end
    assert ours[2] == pytest.approx(alone[2], abs=0.02)
    said = speech.SENTENCES["garden"] if windows == 1 else long_speech[1]
    assert alone[1] == "en" and speech.word_recall(said, " ".join(t for t, _, _ in ours[0])) > 0.9
    mel, encoded = (80, 3000), (1500, 512)  # base's window before and after its encoder
    made = [call for call, _ in calls]
    assert made.count("encode") == windows and made.count("detect") == windows, calls
    assert calls[:2] == [("encode", mel), ("detect", encoded)], calls
    assert all(form == encoded for call, form in calls if call != "encode"), calls


def test_a_long_recording_split_at_pauses_keeps_its_words_and_times(voices, tmp_path) -> None:
    """``batch_split_recordings``: a 40 s recording is cut at its pauses into windows that are
    decoded together; every sentence comes back, timed on the recording's clock. Asked for
    progress (``stream=true``), the windows' segments are reported in the recording's order."""
    names = list(speech.SENTENCES)
    path = speech.concat([voices[n] for n in names], tmp_path / "long.wav", silence_seconds=3.0)
    audio = speech.samples_16k(path)
    assert len(audio) / 16000 > 35
    starts, at = [], 0.0
    for name in names:
        starts.append(at)
        at += speech.duration(voices[name]) + 3.0

    async def run(split: bool) -> tuple:
        # a long window: both windows' calls wait for each other (their features take longer
        # than the default 10 ms to compute on a CPU); nothing waits once both are there
        options = WhisperOptions(
            model="tiny.en",
            cpu_threads=1,
            batch_size=4 if split else 1,
            batch_window_ms=10_000,
            batch_split_recordings=split,
        )
        backend = WhisperBackend("w", options)
        await backend.start()
        try:
            spec = JobSpec("en", "transcribe", "openai", Caller("k"))
            transcript = await backend.transcribe_progressive(audio, spec, reported.append)
            return transcript, backend.batch_stats
        finally:
            await backend.close()

    reported: list = []
    whole, _ = asyncio.run(run(split=False))
    assert reported == list(whole.segments)
    reported.clear()
    transcript, stats = asyncio.run(run(split=True))
    assert reported == list(transcript.segments)
    assert stats is not None and stats.largest >= 2  # the windows shared batches
    # the words of the unbatched, unsplit decode, but for what a window decoded without the
    # text before it hears differently: tiny.en mishears one sentence either way, and the
    # first window's last sentence (its speech ends 50 ms before the window, at 28.9 s) starts
    # "And remember" for "My grandmother" in the split, as when that window is decoded alone,
    # unbatched (recall 0.89 here, measured; it was over 0.9 with the packages of 2026-11-30)
    assert speech.word_recall(whole.text, transcript.text) >= 0.85, (whole.text, transcript.text)
    for name, start in zip(names, starts, strict=True):  # each sentence where it was said
        timed = [seg for seg in transcript.segments if abs(seg.start - start) < 1.5]
        assert timed, (name, start, transcript.segments)
        assert speech.word_recall(speech.SENTENCES[name], timed[0].text) >= 0.5, timed
    assert [s.start for s in transcript.segments] == sorted(s.start for s in transcript.segments)
    # each segment's seek is its window's start on the whole recording's clock, as for `whole`
    seeks = [s.decoding.seek for s in transcript.segments]
    assert seeks == sorted(seeks) and len(set(seeks)) >= 2, seeks
    assert all(s.decoding.seek / 100 <= s.start + 0.02 for s in transcript.segments)


@pytest.fixture(scope="module")
def sentences_3s_apart(voices, tmp_path_factory) -> tuple[bytes, list[str], list[tuple]]:
    """40 s: the six sentences, each followed by 3 s of silence; the WAV, the names in order,
    and each sentence's (start, end) in s."""
    names = list(speech.SENTENCES)
    folder = tmp_path_factory.mktemp("apart")
    path = speech.concat([voices[n] for n in names], folder / "long.wav", silence_seconds=3.0)
    spans, at = [], 0.0
    for name in names:
        spans.append((at, at + speech.duration(voices[name])))
        at += speech.duration(voices[name]) + 3.0
    return path.read_bytes(), names, spans


def segment_times_server(mode: str):
    return running_server(backends=batched_tiny(segment_times=mode))


def words_asked(server, wav: bytes) -> dict:
    """The OpenAI API's answer with word timestamps asked for."""
    body, content_type = multipart_upload(
        wav, response_format="verbose_json", **{"timestamp_granularities[]": "word"}
    )
    status, verbose = post(server.http + "/v1/audio/transcriptions", body, content_type)
    assert status == 200, verbose
    return verbose


def first_word(words: list[dict], word: str) -> dict:
    """The first of the OpenAI API's ``words`` that is ``word`` (any case or punctuation)."""
    found = [w for w in words if speech.words(w["word"]) == [word]]
    assert found, (word, words)
    return found[0]


def test_segments_timed_by_pauses_each_cover_a_window_of_speech(
    voices, sentences_3s_apart, tmp_path
) -> None:
    """``segment_times: pauses`` (the GPU's batching setting): a 40 s recording of sentences 3 s
    apart comes back as one segment per window of speech (up to 30 s, cut at a pause), each
    running from its window's first speech to its last, holding the words said there; every
    sentence is heard. Words asked for come once each, where they were said, and nothing after
    them. The same recording 60 dB quieter is heard too (until session 43 Silero, asked where
    the pauses are, heard it as recorded, found no speech, and the reply was empty). A stream
    on the same server is heard as well."""
    wav, names, spans = sentences_3s_apart
    loud = tmp_path / "loud.wav"
    loud.write_bytes(wav)
    # 16-bit still: sox dithers, so the quiet speech is a few steps of the samples under hiss
    quiet = speech.convert(loud, tmp_path / "quiet.wav", effects=("vol", "-60dB")).read_bytes()
    with segment_times_server("pauses") as server:
        reply = transcribe(server.ws, wav).reply
        segments = reply["segments"]
        # 40 s of speech: more than one window, far fewer segments than sentences
        assert 2 <= len(segments) < len(names), segments
        assert " ".join(s["text"] for s in segments).split() == reply["text"].split()
        said = " ".join(speech.SENTENCES[n] for n in names)
        assert speech.word_recall(said, reply["text"]) >= 0.85, reply["text"]
        for segment in segments:
            assert segment["end"] - segment["start"] <= 30.0, segment
            # it starts as a sentence starts and ends as one ends (espeak-ng's own quiet at
            # either end of a sentence is trimmed), and holds those sentences' words
            inside = [
                n
                for n, (a, b) in zip(names, spans, strict=True)
                if a >= segment["start"] - 0.6 and b <= segment["end"] + 0.6
            ]
            assert inside and abs(spans[names.index(inside[0])][0] - segment["start"]) < 0.6
            assert abs(spans[names.index(inside[-1])][1] - segment["end"]) < 0.6, segment
            words = " ".join(speech.SENTENCES[n] for n in inside)
            assert speech.word_recall(words, segment["text"]) >= 0.8, (inside, segment)
        covered = sum(
            any(a >= s["start"] - 0.6 and b <= s["end"] + 0.6 for s in segments) for a, b in spans
        )
        assert covered == len(names), (spans, segments)

        # the words of the same text, each once (faster-whisper, left alone, would decode the
        # rest of a window again after its last word), each sentence's first where it starts
        verbose = words_asked(server, wav)
        timed = [w["word"] for w in verbose["words"]]
        assert speech.words(" ".join(timed)) == speech.words(reply["text"]), timed
        for word, start in (("we", spans[1][0]), ("open", spans[2][0]), ("my", spans[4][0])):
            first = first_word(verbose["words"], word)
            assert abs(first["start"] - start) < 0.6, (first, start)

        said_quietly = transcribe(server.ws, quiet).reply
        assert speech.word_recall(said, said_quietly["text"]) >= 0.8, said_quietly
        assert len(said_quietly["segments"]) >= 2, said_quietly

        # one sentence alone: faster-whisper left alone wrote "Thank you very much." after it
        window = speech.words(words_asked(server, voices["window"].read_bytes())["text"])
        assert "thank" not in window and len(window) <= len(
            speech.words(speech.SENTENCES["window"])
        )
        assert speech.word_recall(speech.SENTENCES["window"], " ".join(window)) >= 0.8, window

        three = ["market", "window", "coffee"]
        short = speech.concat([voices[n] for n in three], tmp_path / "3.wav", silence_seconds=1.0)
        pcm, rate = read_pcm16(short)
        assert_sentences(stream_pcm(server.ws, pcm, rate), three)


def test_segments_timed_by_sentences_each_hold_one_sentence(sentences_3s_apart) -> None:
    """``segment_times: sentences``: the same windows, each cut into its sentences by the
    times of its words: one segment per sentence said, starting as it starts, no words in the
    reply unless asked for. Words asked for through the OpenAI API come on the recording's
    clock."""
    wav, names, spans = sentences_3s_apart
    with segment_times_server("sentences") as server:
        reply = transcribe(server.ws, wav).reply
        segments = reply["segments"]
        assert len(segments) == len(names), segments
        said = " ".join(speech.SENTENCES[name] for name in names)
        assert speech.word_recall(said, reply["text"]) >= 0.8, reply["text"]
        for name, (start, end), segment in zip(names, spans, segments, strict=True):
            assert abs(segment["start"] - start) < 0.6, (name, start, segment)
            # Whisper's last word of a sentence tends to run on into the pause after it
            assert end - 0.6 < segment["end"] < end + 1.5, (name, end, segment)
            # each segment holds its sentence, however tiny.en heard it: "I will die cut off
            # coffee with sugar please." on the machine and packages of 2026-12-05 (recall 0.5)
            assert speech.word_recall(speech.SENTENCES[name], segment["text"]) >= 0.5, segment
        body, content_type = multipart_upload(
            wav, response_format="verbose_json", **{"timestamp_granularities[]": "segment"}
        )
        status, verbose = post(server.http + "/v1/audio/transcriptions", body, content_type)
        assert status == 200 and len(verbose["segments"]) == len(names), verbose
        assert "words" not in verbose, verbose  # not asked for
        words = words_asked(server, wav)["words"]
        assert speech.words(" ".join(w["word"] for w in words)) == speech.words(reply["text"])
        train = first_word(words, "train")  # "The train to London ...", the last sentence
        assert abs(train["start"] - spans[-1][0] - 0.36) < 0.6, (train, spans[-1])


def test_a_sentence_ends_at_its_stop_not_at_a_title_or_an_initial() -> None:
    """How ``segment_times: sentences`` groups a window's words (faster-whisper's, each with its
    leading space): "Mr." and "U.S." and "J." end no sentence, "I." and a quoted stop do."""
    from types import SimpleNamespace

    from speechgw.backends.whisper import _sentences

    text = 'Mr. Smith went to the U.S. today. Neither do I. Then J. Doe said "yes." Done'
    words = [SimpleNamespace(word=" " + w) for w in text.split()]
    groups = [" ".join(w.word.strip() for w in group) for group in _sentences(words)]
    assert groups == [
        "Mr. Smith went to the U.S. today.",
        "Neither do I.",
        'Then J. Doe said "yes."',
        "Done",
    ]


@pytest.mark.parametrize(
    ("device", "asked", "resolved"),
    [
        ("cpu", {}, (1, "tokens")),
        ("cuda", {}, (32, "sentences")),
        ("cuda", {"segment_times": "tokens"}, (8, "tokens")),
        ("cuda", {"segment_times": "pauses"}, (32, "pauses")),
        ("cuda", {"batch_size": 1}, (1, "sentences")),
        ("cpu", {"segment_times": "sentences"}, (1, "sentences")),
        ("cpu", {"batch_size": 8, "segment_times": "pauses"}, (8, "pauses")),
    ],
)
def test_decoding_defaults_follow_the_device(device: str, asked: dict, resolved: tuple) -> None:
    """What an admin leaves out is the device's measured best (on CUDA: sentences, batches of
    32; 8 with timestamp tokens; on CPU: timestamp tokens, no batching); what they set stays."""
    from speechgw.backends.whisper import decoding_defaults

    assert decoding_defaults(WhisperOptions(**asked), device) == resolved


@pytest.mark.parametrize("model", ["tiny.en", "base"])
def test_the_tokens_suppressed_once_are_faster_whispers_defaults(model: str) -> None:
    """The backend works out the suppressed tokens once per model (faster-whisper would encode
    them again at every call); for every language and task they are what faster-whisper's
    default (``suppress_tokens=[-1]``) suppresses."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    backend = WhisperBackend("w", WhisperOptions(model=model, cpu_threads=1))
    asyncio.run(backend.start())
    try:
        whisper = backend._model
        assert whisper is not None
        multilingual = whisper.model.is_multilingual
        checked = 0
        for language in _LANGUAGE_CODES if multilingual else ["en"]:
            for task in ("transcribe", "translate") if multilingual else ("transcribe",):
                tokenizer = Tokenizer(whisper.hf_tokenizer, multilingual, task, language)
                default = get_suppressed_tokens(tokenizer, [-1])
                assert get_suppressed_tokens(tokenizer, list(backend._suppress_tokens)) == default
                checked += 1
        assert checked == (2 * len(_LANGUAGE_CODES) if multilingual else 1)
    finally:
        asyncio.run(backend.close())


def test_decoding_leaves_the_suppressed_tokens_as_they_were(voices) -> None:
    """faster-whisper appends its special tokens to the ``suppress_tokens`` list it is given:
    the backend's own, shared by every decode, grew by 6 per request (memory, and a sort of the
    whole list per request, without bound). After decodes the words are right and the tokens
    are what they were at the start."""
    backend = WhisperBackend("w", WhisperOptions(model="tiny.en", cpu_threads=1))
    asyncio.run(backend.start())
    try:
        before = tuple(backend._suppress_tokens)
        audio = speech.samples_16k(voices["window"])
        spec = JobSpec(language="en", task="transcribe", protocol="batch")

        async def three() -> list[str]:
            return [(await backend.transcribe(audio, spec)).text for _ in range(3)]

        for text in asyncio.run(three()):
            assert speech.word_recall(speech.SENTENCES["window"], text) >= 0.8
        assert tuple(backend._suppress_tokens) == before
    finally:
        asyncio.run(backend.close())


def test_a_long_prompt_goes_to_the_model_as_its_last_tokens() -> None:
    """``prompt_tokens``: a stream's context longer than N tokens reaches the model as exactly
    its last N tokens (so that streams under way share one prompt length); a shorter one goes
    whole, as faster-whisper would encode its text."""
    backend = WhisperBackend("w", WhisperOptions(model="tiny.en", cpu_threads=1, prompt_tokens=6))
    asyncio.run(backend.start())
    try:
        tokenizer = backend._model.hf_tokenizer  # type: ignore[union-attr]
        context = "the market opens at nine and the coffee is ready by then"
        cut = backend._prompt(context)
        assert isinstance(cut, list) and len(cut) == 6
        assert context.endswith(tokenizer.decode(cut).strip())
        short = backend._prompt("at nine")
        assert short == tokenizer.encode(" at nine", add_special_tokens=False).ids
        assert isinstance(short, list) and len(short) < 6
        assert backend._prompt(None) is None
        # Whisper's special tokens written out in a prompt are left out, not sent as tokens
        assert backend._prompt("<|endoftext|>at nine<|0.00|>") == short
        assert backend._prompt("<|startoftranscript|><|en|>") is None
    finally:
        asyncio.run(backend.close())
