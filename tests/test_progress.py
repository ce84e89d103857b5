"""What ``stream=true`` rests on in the core: the segment relay (every stretch of audio once,
in order, whichever backend reports it and from whichever thread), and a request cancelled by
its leaving client while it is being billed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from speechgw.gateway import _to_the_end
from speechgw.jobs import Segment, Transcript
from speechgw.progress import SegmentRelay


def _transcript(*segments: Segment) -> Transcript:
    return Transcript(" ".join(s.text for s in segments), segments, "en")


def test_a_fallback_backend_adds_only_what_the_client_has_not_seen() -> None:
    async def scenario() -> list[Segment]:
        got: list[Segment] = []
        relay = SegmentRelay(got.append)
        relay(Segment("One two.", 0.0, 5.0))
        relay(Segment("", 5.0, 6.0))  # no words: nothing to send
        relay(Segment("Three four.", 6.0, 10.0))
        # the first backend fails here; the next one hears the recording from the start,
        # with its own segment times, and finishes it
        relay.finish(
            _transcript(
                Segment("One, two.", 0.0, 5.2),
                Segment("Three, four.", 5.2, 9.8),
                Segment("Five six.", 9.8, 15.0),
            )
        )
        relay(Segment("Late.", 15.0, 16.0))  # after the end: dropped
        return got

    got = asyncio.run(scenario())
    assert [s.text for s in got] == ["One two.", "Three four.", "Five six."]


def test_segments_reported_from_a_worker_thread_arrive_on_the_loop_in_order() -> None:
    async def scenario() -> tuple[list[str], set[int]]:
        got: list[str] = []
        threads: set[int] = set()

        def deliver(segment: Segment) -> None:
            threads.add(threading.get_ident())
            got.append(segment.text)

        relay = SegmentRelay(deliver)
        segments = [Segment(f"s{i}", i, i + 1.0) for i in range(50)]

        def worker() -> None:
            for segment in segments:
                relay(segment)

        await asyncio.get_running_loop().run_in_executor(None, worker)
        relay.finish(_transcript(*segments))  # all reported already: nothing more
        return got, threads

    got, threads = asyncio.run(scenario())
    assert got == [f"s{i}" for i in range(50)]
    assert threads == {threading.get_ident()}


def test_a_settlement_under_way_finishes_before_the_cancellation_is_raised() -> None:
    """A client that leaves while its request is billed: the ledger row is being committed by
    a writer thread, so the settlement runs to its end (billed and logged as answered), and
    only then is the cancellation raised."""

    async def scenario() -> list[str]:
        steps: list[str] = []
        committing = asyncio.Event()
        commit = asyncio.Event()

        async def settle() -> None:
            committing.set()
            await commit.wait()
            steps.append("committed")

        request = asyncio.ensure_future(_to_the_end(settle()))
        await committing.wait()
        request.cancel()  # the client is gone
        await asyncio.sleep(0)
        steps.append("cancel delivered")
        commit.set()
        with pytest.raises(asyncio.CancelledError):
            await request
        return steps

    assert asyncio.run(scenario()) == ["cancel delivered", "committed"]
