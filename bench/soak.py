#!/usr/bin/env python3
"""Soak: mixed traffic on every protocol with faults injected, then checks.

For --minutes (10), against ``speechgw serve`` (tiny.en, two workers, a usage ledger in a temp
dir), in the first --load-share of each minute: good batch clients, a good unpaced stream, an
OpenAI SDK client (plain and ``stream=True`` in turn), and a hostile client that sends bad
metadata, a non-WAV, a binary frame where JSON is due, bad base64 and odd byte counts on
streams, a non-audio upload to the OpenAI API, or leaves in the middle of inference; all the
time: a stream at real-time pace asking for interims (so that, in the quiet part of each minute,
interims and early finals find free workers; every other one hangs up mid-sentence). Every 5 s
the server's resident memory is sampled. At the end:
  - memory is flat: the last sample within 5% of the first half's highest;
  - good clients saw no error; hostile ones only the errors their fault must produce;
  - every reply a client received has its ledger row;
  - the ledger's audio seconds equal the server's asr_audio_seconds_total;
  - once the clients are gone, no job and no stream is left counted as under way.
Exits 1 if any check fails.

    python bench/soak.py [--minutes 10] [--load-share 0.5]
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from _common import ServerURL, english_clips, served, tempdir, whisper_gateway_config
from openai import APIStatusError, OpenAI
from websockets.sync.client import connect


def batch(url: str, frames: list) -> tuple[list, int | None]:
    messages: list = []
    code = None
    try:
        with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
            for frame in frames:
                ws.send(frame)
            for message in ws:
                messages.append(json.loads(message))
    except Exception as exc:  # the close code is what we want from it
        code = getattr(getattr(exc, "rcvd", None), "code", None)
    return messages, code


def stream(url: str, messages: list[str]) -> list[dict]:
    out = []
    # unpaced, pings would wait behind the audio: none (tests.streaming_client.open_stream)
    with connect(
        url + "/api/core/google/asr", max_size=None, compression=None, ping_interval=None
    ) as ws:
        ws.recv(timeout=30)
        for m in messages:
            ws.send(m)
        ws.send(json.dumps({"type": "end"}))
        out = [json.loads(m) for m in ws]
    return out


def paced_stream(url: str, chunks: list[bytes], hang_up_after: int | None) -> list[dict]:
    """A stream at real-time pace asking for interims; with ``hang_up_after``, the client
    drops the connection after that many chunks, without an end message."""
    out: list[dict] = []
    with connect(url + "/api/core/google/asr", max_size=None, compression=None) as ws:
        ws.recv(timeout=30)
        reader = threading.Thread(target=lambda: out.extend(json.loads(m) for m in ws))
        reader.start()
        started = time.monotonic()
        for i, chunk in enumerate(chunks):
            if i == hang_up_after:
                break
            first = {"rate": 16000, "interim_results": True} if i == 0 else {}
            ws.send(json.dumps({"audio": base64.b64encode(chunk).decode(), **first}))
            time.sleep(max(0.0, started + (i + 1) * 0.1 - time.monotonic()))
        else:
            ws.send(json.dumps({"type": "end"}))
        if hang_up_after is not None:
            ws.close()
        reader.join(60)
    return out


def openai_call(client: OpenAI, wav: bytes, streamed: bool) -> tuple[str, str]:
    """(the X-Request-Id, the text) of one OpenAI transcription of ``wav``."""
    raw = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("clip.wav", wav), language="en", stream=streamed
    )
    parsed = raw.parse()
    if not streamed:
        return raw.headers["x-request-id"], parsed.text
    done = [event.text for event in parsed if event.type == "transcript.text.done"]
    return raw.headers["x-request-id"], "".join(done)


def settled(url: ServerURL, seconds: float = 60) -> dict[str, float]:
    """The jobs and streams the server counts as under way, once they reach 0 (or after
    ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        now = {
            m: sum(url.samples(m).values())
            for m in ("speechgw_requests_in_flight", "speechgw_active_streams")
        }
        if not any(now.values()) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def committed(store: Path, audio_seconds: float, seconds: float = 30) -> dict[str, float]:
    """The ledger's rows (request id: audio seconds), once the server's writer has committed
    ``audio_seconds`` in all (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.closing(sqlite3.connect(store)) as db:
            ledger = dict(db.execute("SELECT request_id, audio_seconds FROM usage").fetchall())
        if abs(sum(ledger.values()) - audio_seconds) < 0.01 or time.monotonic() > deadline:
            return ledger
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--load-share",
        type=float,
        default=0.5,
        help="the part of each minute the load runs (1: all the time; the paced stream "
        "always runs)",
    )
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="speechgw-soak-")) / "ledger.db"
    config = whisper_gateway_config(
        store.parent / "soak.yaml", store=store, model="tiny.en", cpu_threads=1, concurrency=2
    )
    with tempdir() as work:
        clip = english_clips(Path(work))[0]  # real speech, 16 kHz mono 16-bit
        wav = clip.path.read_bytes()
        pcm = clip.pcm()
        step = 3200
        pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        good_stream = [
            json.dumps({"audio": base64.b64encode(piece).decode(), "rate": 16000})
            for piece in pieces
        ]
        chunks = pieces + [b"\0" * step] * 10  # a second of silence: the last utterance ends
        meta = json.dumps({"type": "transcribe", "language": "en"})
        deadline = time.monotonic() + args.minutes * 60
        received_ids: list[str] = []
        problems: collections.Counter[str] = collections.Counter()
        counts: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        def note(kind: str, ok: bool, what: str = "") -> None:
            with lock:
                counts[kind] += 1
                if not ok:
                    problems[f"{kind}: {what}"] += 1

        with served(config) as url:
            started = time.monotonic()

            def loaded() -> bool:
                """Whether the load may run: in the first --load-share of each minute. In the
                rest only the paced stream runs, so its interims and early finals find free
                workers (under load the backend skips them, as designed)."""
                if (time.monotonic() - started) % 60 < 60 * args.load_share:
                    return True
                time.sleep(60 - (time.monotonic() - started) % 60)
                return False

            def good_batch() -> None:
                while time.monotonic() < deadline:
                    if not loaded():
                        continue
                    messages, _ = batch(url, [meta, wav])
                    ok = bool(messages) and "text" in messages[0]
                    if ok:
                        with lock:
                            received_ids.append(messages[0]["request_id"])
                    note("good batch", ok, str(messages[:1]))

            def good_stream_client() -> None:
                while time.monotonic() < deadline:
                    if not loaded():
                        continue
                    replies = stream(url, good_stream)
                    ok = bool(replies) and all("asr_reply" in r for r in replies)
                    note("good stream", ok, str(replies[:2]))

            def paced_stream_client() -> None:
                n = 0
                while time.monotonic() < deadline:
                    hang_up = len(chunks) // 2 if n % 2 else None
                    replies = paced_stream(url, chunks, hang_up)
                    finals = [r for r in replies if "asr_reply" in r]
                    others = [r for r in replies if "asr_reply" not in r and "asr_interim" not in r]
                    with lock:
                        counts["interims seen"] += len(replies) - len(finals) - len(others)
                    kind = "paced stream, hung up" if hang_up else "paced stream"
                    note(kind, not others and (bool(finals) or bool(hang_up)), str(others[:2]))
                    n += 1

            def openai_client() -> None:
                http = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="-")
                n = 0
                while time.monotonic() < deadline:
                    if not loaded():
                        continue
                    streamed = n % 2 == 1
                    kind = "openai stream" if streamed else "openai"
                    try:
                        request_id, text = openai_call(http, wav, streamed)
                        with lock:
                            received_ids.append(request_id)
                        note(kind, bool(text.strip()), text)
                    except Exception as exc:
                        note(kind, False, repr(exc))
                    n += 1

            def openai_not_audio() -> str:
                http = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="-")
                try:
                    http.audio.transcriptions.create(
                        model="whisper-1", file=("notes.wav", b"ID3" + b"\0" * 5000)
                    )
                except APIStatusError as exc:
                    body = exc.body if isinstance(exc.body, dict) else {}
                    return f"{exc.status_code} {body.get('code')}"
                return "answered"

            faults = [
                ("bad metadata", lambda: batch(url, ["{not json", wav]), "invalid_request"),
                ("not a wav", lambda: batch(url, [meta, b"ID3" + b"\0" * 5000]), "invalid_audio"),
                ("binary first", lambda: batch(url, [wav]), "invalid_request"),
            ]

            def hostile() -> None:
                i = 0
                while time.monotonic() < deadline:
                    if not loaded():
                        continue
                    name, call, expected = faults[i % len(faults)]
                    messages, _ = call()
                    note(
                        name,
                        bool(messages) and messages[0].get("error") == expected,
                        str(messages[:1]),
                    )
                    code = openai_not_audio()
                    note("openai not audio", code == "400 invalid_audio", code)
                    replies = stream(
                        url, [json.dumps({"audio": "@@@"}), json.dumps({"audio": "AA=="})]
                    )
                    errors = [r.get("message") for r in replies]
                    note("bad stream messages", errors == ["Audio Decoding Error"] * 2, str(errors))
                    try:  # leave while the model works
                        with connect(url + "/ws/transcribe", max_size=None) as ws:
                            ws.send(meta)
                            ws.send(wav)
                        note("left mid-inference", True)
                    except Exception as exc:
                        note("left mid-inference", False, repr(exc))
                    i += 1

            rss: list[tuple[float, float]] = []

            def sample() -> None:
                while time.monotonic() < deadline:
                    rss.append((time.monotonic() - started, url.rss_mib()))
                    time.sleep(5)

            threads = [
                threading.Thread(target=f)
                for f in (
                    good_batch,
                    good_batch,
                    good_stream_client,
                    paced_stream_client,
                    openai_client,
                    hostile,
                    sample,
                )
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            under_way = settled(url)  # abandoned jobs finish
            early = url.early_finals()
            interims = sum(url.samples("speechgw_interims_total").values())
            counted = sum(url.samples("asr_audio_seconds_total").values())
            ledger = committed(store, counted)
    minutes = collections.defaultdict(float)
    for t, m in rss:
        minutes[int(t // 60)] = max(minutes[int(t // 60)], m)
    print(
        "server RSS, each minute's highest (MiB): " + " ".join(f"{m:.0f}" for m in minutes.values())
    )
    # the server keeps freed memory for reuse, so its footprint climbs in steps to the most the
    # traffic needed at once and stays there; a leak goes on climbing in the second half
    first_half = max(m for t, m in rss if t <= rss[-1][0] / 2)
    last = rss[-1][1]
    missing = [r for r in received_ids if r not in ledger]
    billed = sum(ledger.values())
    print(f"{args.minutes:g} minutes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(
        f"server RSS: first half's highest {first_half:.0f} MiB, end {last:.0f} MiB, "
        f"max {max(m for _, m in rss):.0f} MiB over {len(rss)} samples"
    )
    print(
        f"ledger: {len(ledger)} rows, {billed:.1f} audio s; metrics: {counted:.1f} audio s; "
        f"received replies without a row: {len(missing)}"
    )
    print(
        f"early finals {early}; interims sent {interims:.0f}; under way at the end: "
        + ", ".join(f"{k} {v:g}" for k, v in under_way.items())
    )
    checks = {
        "memory flat": last <= first_half * 1.05,
        "only intended errors": not problems,
        "every reply billed": not missing,
        "ledger = metrics": abs(billed - counted) < 0.01 * max(1.0, counted),
        "nothing left under way": not any(under_way.values()),
    }
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for problem, n in problems.most_common(10):
        print(f"  {n} x {problem[:200]}")
    os.remove(store)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
