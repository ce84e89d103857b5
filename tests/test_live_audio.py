"""LiveAudio, the buffer between a stream and a backend that recognises streams itself: what a
restarted session replays, what a fallback receives, and how it pushes back."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from speechgw.live_audio import LiveAudio


def ramp(start: int, count: int) -> np.ndarray:
    """Samples whose 16-bit values are their own positions (mod 2**15), to see what moved."""
    return (np.arange(start, start + count) % 32768).astype(np.float32) / 32767.0


def positions(pcm: np.ndarray) -> list[int]:
    return pcm.astype(int).tolist()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=10))


def test_a_new_reader_replays_from_the_last_commit() -> None:
    async def scenario() -> None:
        audio = LiveAudio(unread_limit=10_000, retained_limit=10_000)
        for start in (0, 100, 200):
            assert await audio.put(ramp(start, 100))
        first = audio.reader()
        assert positions(await first.read(150)) == list(range(150))
        audio.commit(120)  # a final ended at sample 120
        second = audio.reader()
        assert second.start == 120
        assert await first.read(10) is None  # superseded
        assert positions(await second.read(1000)) == list(range(120, 300))
        audio.close()
        assert await second.read(10) is None

    run(scenario())


def test_commit_is_clamped_to_what_was_read() -> None:
    async def scenario() -> None:
        audio = LiveAudio(unread_limit=10_000, retained_limit=10_000)
        await audio.put(ramp(0, 100))
        reader = audio.reader()
        await reader.read(40)
        audio.commit(90)  # past what the session was sent
        assert audio.committed == 40
        audio.commit(10)  # before the last commit
        assert audio.committed == 40

    run(scenario())


def test_abandon_hands_back_exactly_the_uncommitted_audio() -> None:
    async def scenario() -> None:
        audio = LiveAudio(unread_limit=10_000, retained_limit=10_000)
        await audio.put(ramp(0, 300))
        reader = audio.reader()
        await reader.read(200)
        audio.commit(150)
        pending = audio.abandon()
        assert np.round(pending * 32768).astype(int).tolist() == list(range(150, 300))
        assert await audio.put(ramp(300, 10)) is False  # the caller takes it elsewhere
        assert await reader.read(10) is None

    run(scenario())


def test_put_waits_while_the_backend_lags_and_cancelling_keeps_nothing() -> None:
    async def scenario() -> None:
        audio = LiveAudio(unread_limit=100, retained_limit=1000)
        reader = audio.reader()
        assert await audio.put(ramp(0, 150))  # one chunk may overshoot the limit
        blocked = asyncio.ensure_future(audio.put(ramp(150, 50)))
        await asyncio.sleep(0)
        assert not blocked.done()
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert audio.end == 150  # nothing of the cancelled put was kept
        waiting = asyncio.ensure_future(audio.put(ramp(150, 50)))
        await asyncio.sleep(0)
        assert not waiting.done()
        await reader.read(60)  # the backend catches up: room again
        assert await waiting is True
        assert audio.end == 200

    run(scenario())


def test_uncommitted_audio_is_bounded_even_when_read() -> None:
    async def scenario() -> None:
        audio = LiveAudio(unread_limit=100, retained_limit=300)
        reader = audio.reader()
        for start in range(0, 400, 100):
            await audio.put(ramp(start, 100))
            await reader.read(100)
        blocked = asyncio.ensure_future(audio.put(ramp(400, 100)))
        await asyncio.sleep(0)
        assert not blocked.done()  # 400 samples read but never final: the client waits
        audio.commit(250)
        assert await blocked is True

    run(scenario())


def test_arrival_times_follow_the_samples() -> None:
    async def scenario() -> None:
        audio = LiveAudio(unread_limit=10_000, retained_limit=10_000)
        await audio.put(ramp(0, 100))
        await asyncio.sleep(0.05)
        await audio.put(ramp(100, 100))
        early, late = audio.arrival(100), audio.arrival(150)
        assert late - early >= 0.04
        reader = audio.reader()
        await reader.read(200)
        audio.commit(150)
        assert audio.arrival(150) == late  # a final that ends where it was committed

    run(scenario())


def test_a_full_buffer_is_logged_once_while_the_client_keeps_it_full(caplog) -> None:
    """``Audio stream buffer full`` once when the input starts waiting, not for every message
    that waits after it; again once it has found room and filled up again."""

    async def scenario() -> None:
        audio = LiveAudio(unread_limit=100, retained_limit=10_000, stream_id="s1")
        reader = audio.reader()
        await audio.put(np.zeros(150, np.int16))  # over the limit: the next put waits
        for _ in range(3):
            waiting = asyncio.create_task(audio.put(np.zeros(50, np.int16)))
            await asyncio.sleep(0)
            assert not waiting.done()
            assert await reader.read(60) is not None  # room, then full again
            assert await waiting is True
        await reader.read(10_000)
        await audio.put(np.zeros(150, np.int16))  # found room
        waiting = asyncio.create_task(audio.put(np.zeros(50, np.int16)))
        await asyncio.sleep(0)
        await reader.read(10_000)
        await waiting

    with caplog.at_level(logging.WARNING, logger="speechgw.live_audio"):
        asyncio.run(scenario())
    full = [r for r in caplog.records if "Audio stream buffer full" in r.getMessage()]
    assert len(full) == 2, [r.getMessage() for r in full]
    assert "stream s1:" in full[0].getMessage()
