#!/usr/bin/env python3
"""Soak: mixed traffic on both protocols with faults injected, then checks.

For --minutes (10), against ``speechgw serve`` (tiny.en, a usage ledger in a temp dir):
good batch clients, good streaming clients, and hostile clients that send bad metadata, a
non-WAV, a binary frame where JSON is due, bad base64 and odd byte counts on streams, or leave
in the middle of inference. Every 5 s the server's resident memory is sampled. At the end:
  - memory is flat (last sample within 10% of the first minute's highest);
  - good clients saw no error; hostile ones only the errors their fault must produce;
  - every reply a client received has its ledger row;
  - the ledger's audio seconds equal the server's asr_audio_seconds_total.
Exits 1 if any check fails.

    python bench/soak.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import REPO, english_clips, served, tempdir
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
    with connect(url + "/api/core/google/asr", max_size=None, compression=None) as ws:
        ws.recv(timeout=30)
        for m in messages:
            ws.send(m)
        ws.send(json.dumps({"type": "end"}))
        out = [json.loads(m) for m in ws]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="speechgw-soak-")) / "ledger.db"
    config = store.parent / "soak.yaml"
    config.write_text((REPO / "bench" / "tiny.en.yaml").read_text() + f"store:\n  path: {store}\n")
    with tempdir() as work:
        clip = english_clips(Path(work))[0]  # real speech, 16 kHz mono 16-bit
        wav = clip.path.read_bytes()
        pcm = clip.pcm()
        step = 3200
        good_stream = [
            json.dumps({"audio": base64.b64encode(pcm[i : i + step]).decode(), "rate": 16000})
            for i in range(0, len(pcm), step)
        ]
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

            def good_batch() -> None:
                while time.monotonic() < deadline:
                    messages, _ = batch(url, [meta, wav])
                    ok = bool(messages) and "text" in messages[0]
                    if ok:
                        with lock:
                            received_ids.append(messages[0]["request_id"])
                    note("good batch", ok, str(messages[:1]))

            def good_stream_client() -> None:
                while time.monotonic() < deadline:
                    replies = stream(url, good_stream)
                    ok = bool(replies) and all("asr_reply" in r for r in replies)
                    note("good stream", ok, str(replies[:2]))

            faults = [
                ("bad metadata", lambda: batch(url, ["{not json", wav]), "invalid_request"),
                ("not a wav", lambda: batch(url, [meta, b"ID3" + b"\0" * 5000]), "invalid_audio"),
                ("binary first", lambda: batch(url, [wav]), "invalid_request"),
            ]

            def hostile() -> None:
                i = 0
                while time.monotonic() < deadline:
                    name, call, expected = faults[i % len(faults)]
                    messages, _ = call()
                    note(
                        name,
                        bool(messages) and messages[0].get("error") == expected,
                        str(messages[:1]),
                    )
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
                started = time.monotonic()
                while time.monotonic() < deadline:
                    rss.append((time.monotonic() - started, url.rss_mib()))
                    time.sleep(5)

            threads = [
                threading.Thread(target=f)
                for f in (good_batch, good_batch, good_stream_client, hostile, sample)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(3)  # abandoned jobs finish and commit
            metrics = (
                urllib.request.urlopen(url.replace("ws://", "http://") + "/metrics", timeout=10)
                .read()
                .decode()
            )
        rows = sqlite3.connect(store).execute("SELECT request_id, audio_seconds FROM usage")
        ledger = dict(rows.fetchall())
        counted = sum(
            float(v) for v in re.findall(r"^asr_audio_seconds_total\{[^}]*\} (\S+)", metrics, re.M)
        )
    first_minute = max(m for t, m in rss if t <= 60)
    last = rss[-1][1]
    missing = [r for r in received_ids if r not in ledger]
    billed = sum(ledger.values())
    print(f"{args.minutes:g} minutes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(
        f"server RSS: first minute max {first_minute:.0f} MiB, end {last:.0f} MiB, "
        f"max {max(m for _, m in rss):.0f} MiB over {len(rss)} samples"
    )
    print(
        f"ledger: {len(ledger)} rows, {billed:.1f} audio s; metrics: {counted:.1f} audio s; "
        f"received replies without a row: {len(missing)}"
    )
    checks = {
        "memory flat": last <= first_minute * 1.10,
        "only intended errors": not problems,
        "every reply billed": not missing,
        "ledger = metrics": abs(billed - counted) < 0.01 * max(1.0, counted),
    }
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for problem, n in problems.most_common(10):
        print(f"  {n} x {problem[:200]}")
    os.remove(store)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
