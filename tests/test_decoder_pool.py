"""FFmpeg decoding in worker processes: the same samples as in-process, and a decoder that
crashes or hangs costs its own file, not the caller's process.

A crash is made the way one comes: the process dies (SIGKILL from here) while it holds a
file. A hang is a process stopped (SIGSTOP) while it holds one."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from speechgw import ffmpeg
from speechgw.decoder_pool import DecoderFailed, DecoderPool
from speechgw.errors import AudioTooLong, InvalidAudio
from tests import speech
from tests.processes import ended
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def mp3(voices, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("pool")
    return speech.encode(voices["children"], folder / "children.mp3", "mp3").read_bytes()


@pytest.fixture(scope="module")
def long_mp3(mp3: bytes) -> bytes:
    """About 17 minutes (one sentence's mp3 frames 400 times): seconds of decoding, time to
    act on a process while it holds the file."""
    return mp3 * 400


@pytest.fixture
def pool() -> Iterator[DecoderPool]:
    decoders = DecoderPool(size=1)
    yield decoders
    decoders.close()


def _only_pid(pool: DecoderPool, busy: bool = False) -> int:
    idle, working = pool.pids()
    (pid,) = working if busy else idle
    return pid


def _decode_in_thread(pool: DecoderPool, data: bytes) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(pool.decode(data, max_seconds=3600))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_the_pool_gives_the_samples_and_refusals_of_ffmpeg_in_process(
    pool: DecoderPool, mp3: bytes
) -> None:
    assert np.array_equal(pool.decode(mp3, max_seconds=600), ffmpeg.decode(mp3, 600))
    with pytest.raises(AudioTooLong, match="lasts more than 1 s"):
        pool.decode(mp3, max_seconds=1)
    with pytest.raises(InvalidAudio, match="could not be decoded as audio") as refused:
        pool.decode(b"not audio at all" * 100, max_seconds=600)
    assert not isinstance(refused.value, DecoderFailed)  # FFmpeg's own words, not a crash
    # one process served all three: a refusal leaves it fit for the next file
    assert len(pool.pids()[0]) == 1 and pool.pids()[1] == []


def test_a_decoder_that_dies_holding_a_file_fails_that_file_only(
    pool: DecoderPool, mp3: bytes, long_mp3: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    pool.decode(mp3, max_seconds=600)  # the process is up and ready
    thread, outcome = _decode_in_thread(pool, long_mp3)
    wait_for(lambda: pool.pids()[1])
    crashed = _only_pid(pool, busy=True)
    os.kill(crashed, signal.SIGKILL)
    thread.join(timeout=60)
    (error,) = outcome
    assert isinstance(error, DecoderFailed) and isinstance(error, InvalidAudio)
    assert error.message == "the file could not be decoded as audio (the decoder crashed on it)"
    assert f"decoder process {crashed} ended (signal SIGKILL)" in caplog.text
    assert ended(crashed) and pool.pids() == ([], [])
    # the next file gets a new process
    assert np.array_equal(pool.decode(mp3, max_seconds=600), ffmpeg.decode(mp3, 600))
    assert _only_pid(pool) != crashed


def test_a_decoder_outlives_the_signals_that_stop_or_reload_the_server(
    pool: DecoderPool, mp3: bytes, long_mp3: bytes
) -> None:
    """systemd's stop sends SIGTERM to every process of the service, Ctrl-C sends SIGINT to
    the terminal's process group, and a reload's SIGHUP may be sent by name: the server
    drains (or reloads) on them, so the file a decoder holds must still be answered."""
    pool.decode(mp3, max_seconds=600)
    thread, outcome = _decode_in_thread(pool, long_mp3)
    wait_for(lambda: pool.pids()[1])
    decoder = _only_pid(pool, busy=True)
    for sent in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(decoder, sent)
    thread.join(timeout=120)
    (samples,) = outcome
    assert isinstance(samples, np.ndarray) and len(samples) > 16000 * 900
    assert _only_pid(pool) == decoder


def test_a_decoder_that_hangs_is_killed_at_its_deadline(mp3: bytes) -> None:
    pool = DecoderPool(size=1, deadline=lambda max_seconds: 1.5)
    try:
        pool.decode(mp3, max_seconds=600)
        hung = _only_pid(pool)
        os.kill(hung, signal.SIGSTOP)
        with pytest.raises(DecoderFailed, match=r"decoding took more than 1.5 s"):
            pool.decode(mp3, max_seconds=600)
        wait_for(lambda: ended(hung), seconds=10)
        assert np.array_equal(pool.decode(mp3, max_seconds=600), ffmpeg.decode(mp3, 600))
    finally:
        pool.close()


def test_a_decoder_that_died_while_idle_is_replaced_without_failing_a_file(
    pool: DecoderPool, mp3: bytes
) -> None:
    """Killed between files (by an operator, or the kernel's out-of-memory killer): the
    next file is no more to blame than any other, and is decoded."""
    pool.decode(mp3, max_seconds=600)
    idle = _only_pid(pool)
    os.kill(idle, signal.SIGKILL)
    wait_for(lambda: ended(idle), seconds=10)
    assert np.array_equal(pool.decode(mp3, max_seconds=600), ffmpeg.decode(mp3, 600))
    assert _only_pid(pool) != idle


def test_a_decoder_that_dies_before_it_is_ready_is_replaced_for_the_same_file(
    pool: DecoderPool, mp3: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing of the file reached a process that never said it was ready: the file goes
    to another, and is decoded."""
    pool.start()
    starting = _only_pid(pool)
    os.kill(starting, signal.SIGSTOP)  # held before "ready" (it takes 0.2 s)
    thread, outcome = _decode_in_thread(pool, mp3)
    wait_for(lambda: pool.pids()[1])
    os.kill(starting, signal.SIGKILL)
    thread.join(timeout=60)
    (samples,) = outcome
    assert np.array_equal(samples, ffmpeg.decode(mp3, 600))
    assert "the decoder process could not start (signal SIGKILL" in caplog.text
    assert ended(starting) and _only_pid(pool) != starting


def test_files_decode_side_by_side_up_to_the_pool_size(mp3: bytes, long_mp3: bytes) -> None:
    """A long file in one process does not hold up a short one in another; past ``size``,
    a file waits for a process rather than starting another."""
    pool = DecoderPool(size=2)
    try:
        long_job, long_outcome = _decode_in_thread(pool, long_mp3)
        wait_for(lambda: pool.pids()[1])
        assert np.array_equal(pool.decode(mp3, max_seconds=600), ffmpeg.decode(mp3, 600))
        assert not long_outcome  # the short file came back while the long one was decoding
        long_job.join(timeout=120)
        assert len(long_outcome[0]) > 16000 * 900
        assert len(pool.pids()[0]) == 2
    finally:
        pool.close()


def test_closing_the_pool_ends_its_processes(mp3: bytes) -> None:
    pool = DecoderPool(size=1)
    pool.decode(mp3, max_seconds=600)
    pid = _only_pid(pool)
    pool.close()
    wait_for(lambda: ended(pid), seconds=10)
