#!/usr/bin/env python3
"""Streaming latency: real speech at 1x real time, "last chunk of an utterance -> its reply".

Each English recording of ../shared/audio (espeak-ng sentences without it) is streamed in
100 ms chunks at real-time pace, followed by GAP seconds of silence. For each recording, the
latency is from sending its last chunk to receiving the last asr_reply that arrives after it
(replies that arrive earlier belong to pauses inside the recording). Reported: p50/p95 over all
recordings and runs, and the word error rate of the replies against the references.

    python bench/stream_latency.py [--runs 5] [--pace 1] [--config bench/tiny.en.yaml]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import statistics
import threading
import time
from pathlib import Path

from _common import REPO, english_clips, served, tempdir, word_errors
from websockets.sync.client import connect

CHUNK_MS = 100
GAP_SECONDS = 3.0


def _paced_send(ws, audio: bytes, clock: dict[str, float]) -> None:
    """Send ``audio`` in 100 ms chunks, each when its first sample is due in real time."""
    step = 16000 * CHUNK_MS // 1000 * 2
    for offset in range(0, len(audio), step):
        chunk = audio[offset : offset + step]
        delay = clock["started"] + clock["sent"] / 32000 / clock["pace"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ws.send(json.dumps({"audio": base64.b64encode(chunk).decode(), "rate": 16000}))
        clock["sent"] += len(chunk)


def run_once(url: str, clips, pace: float) -> tuple[list[float], list[str], int]:
    """Stream every clip once; returns the latencies, each clip's replies joined, and the
    number of clips that got no reply after their last chunk."""
    silence = b"\x00\x00" * int(16000 * GAP_SECONDS)
    replies: list[tuple[float, str]] = []
    starts, ends = [], []
    with connect(url + "/api/core/google/asr", max_size=None, compression=None) as ws:
        ws.recv(timeout=30)

        def read() -> None:
            try:
                while True:
                    message = json.loads(ws.recv())
                    if "asr_reply" in message:
                        replies.append((time.monotonic(), message["asr_reply"]))
            except Exception:
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # pace 0: as fast as the socket takes it
        clock = {"started": time.monotonic(), "sent": 0.0, "pace": pace or float("inf")}
        for clip in clips:
            starts.append(time.monotonic())
            _paced_send(ws, clip.pcm(), clock)
            ends.append(time.monotonic())
            _paced_send(ws, silence, clock)
        ws.send(json.dumps({"type": "end"}))
        reader.join(timeout=120)
    # a reply belongs to the last clip that had begun when it arrived
    owner = [bisect.bisect_right(starts, t) - 1 for t, _ in replies]
    latencies, texts, missed = [], [], 0
    for k, end in enumerate(ends):
        mine = [(t, text) for (t, text), o in zip(replies, owner, strict=True) if o == k]
        texts.append(" ".join(text for _, text in mine))
        after_end = [t - end for t, _ in mine if t >= end]
        if after_end:
            latencies.append(max(after_end))
        else:
            missed += 1
    return latencies, texts, missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--config", type=Path, default=REPO / "bench" / "tiny.en.yaml")
    parser.add_argument(
        "--pace",
        type=float,
        default=1.0,
        help="times real time; 0 sends as fast as possible (latency then "
        "means little; the WER shows whether text was lost)",
    )
    args = parser.parse_args()
    with tempdir() as work:
        clips = english_clips(Path(work))
        print(f"{len(clips)} clips, {sum(c.seconds for c in clips):.1f} s of speech")
        all_latencies, errors, words, missed = [], 0, 0, 0
        with served(args.config) as url:
            for run in range(args.runs):
                latencies, texts, run_missed = run_once(url, clips, args.pace)
                all_latencies += latencies
                missed += run_missed
                # all replies in order against all references in order: lost or repeated
                # text shows up here whatever the pacing
                e, n = word_errors(" ".join(c.reference for c in clips), " ".join(texts))
                errors, words = errors + e, words + n
                print(f"run {run + 1}: WER {e / n:.3f}", flush=True)
                if args.pace:
                    print(
                        f"run {run + 1}: p50 {statistics.median(latencies):.3f} s, "
                        f"max {max(latencies):.3f} s, missed {run_missed}"
                    )
    if args.pace:
        q = statistics.quantiles(all_latencies, n=20)
        print(
            f"latency over {len(all_latencies)} utterances: p50 "
            f"{statistics.median(all_latencies):.3f} s, p95 {q[18]:.3f} s; "
            f"utterances without a reply: {missed}"
        )
    print(f"WER over all replies in order: {errors / words:.3f} ({errors}/{words} words)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
