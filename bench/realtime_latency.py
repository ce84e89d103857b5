#!/usr/bin/env python3
"""Realtime API latency beside the streaming protocol's: the same speech, the same server.

Each English recording of ../shared/audio (espeak-ng sentences without it) is sent at 1x real
time in 100 ms appends to a ``/v1/realtime`` transcription session (``server_vad``, 16 kHz
``audio/pcm``, ``gpt-transcribe``: deltas on), each followed by 3 s of silence. Per recording:
from its last append to the last ``completed`` event after it (the final), and from its first
append to its first delta or completed (first text); the WER of the completed transcripts
against the references. Then the same recordings over the streaming protocol with interim
results (``bench/stream_latency.py``'s run), in turn on the same server.

    python bench/realtime_latency.py [--runs 2] [--config bench/tiny.en.yaml]
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
from stream_latency import GAP_SECONDS, _p50_p95, run_once
from websockets.sync.client import connect

CHUNK_MS = 100
SESSION = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 16000},
            "transcription": {"model": "gpt-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad"},
        }
    },
}
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def realtime_once(url: str, clips) -> tuple[list[float], list[float], list[str]]:
    """Send every clip once over a Realtime session; (finals, first texts, texts per clip)."""
    events: list[tuple[float, str, str]] = []  # (time, type, text)
    starts, ends = [], []
    step = 16000 * CHUNK_MS // 1000 * 2
    silence = b"\x00\x00" * int(16000 * GAP_SECONDS)
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    with connect(ws_url, max_size=None, compression=None) as ws:
        ws.send(json.dumps({"type": "session.update", "session": SESSION}))

        def read() -> None:
            try:
                while True:
                    event = json.loads(ws.recv())
                    if event["type"] in (DELTA, COMPLETED):
                        text = event.get("transcript", event.get("delta", ""))
                        events.append((time.monotonic(), event["type"], text))
            except Exception:
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        started, sent = time.monotonic(), 0
        for clip in clips:
            for audio, mark in ((clip.pcm(), True), (silence, False)):
                if mark:
                    starts.append(time.monotonic())
                for offset in range(0, len(audio), step):
                    delay = started + sent / 32000 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    chunk = audio[offset : offset + step]
                    ws.send(
                        json.dumps(
                            {
                                "type": "input_audio_buffer.append",
                                "audio": base64.b64encode(chunk).decode(),
                            }
                        )
                    )
                    sent += len(chunk)
                if mark:
                    ends.append(time.monotonic())
        time.sleep(3)  # the last turn's answer
    finals, firsts, texts = [], [], []
    for k, (start, end) in enumerate(zip(starts, ends, strict=True)):
        mine = [e for e in events if bisect.bisect_right(starts, e[0]) - 1 == k]
        done = [t for t, kind, _ in mine if kind == COMPLETED and t >= end]
        if done:
            finals.append(max(done) - end)
        if mine:
            firsts.append(mine[0][0] - start)
        texts.append(" ".join(text for _, kind, text in mine if kind == COMPLETED))
    return finals, firsts, texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--config", type=Path, default=REPO / "bench" / "tiny.en.yaml")
    args = parser.parse_args()
    with tempdir() as work:
        clips = english_clips(Path(work))
        reference = " ".join(c.reference for c in clips)
        print(f"{len(clips)} clips, {sum(c.seconds for c in clips):.1f} s of speech")
        got = {"realtime": ([], [], [0, 0]), "streaming": ([], [], [0, 0])}
        with served(args.config) as url:
            for run in range(args.runs):
                finals, firsts, texts = realtime_once(url, clips)
                streamed = run_once(url, clips, 1.0, interim=True)
                for name, (f, t, said) in (
                    ("realtime", (finals, firsts, texts)),
                    ("streaming", (streamed.latencies, streamed.first_text, streamed.texts)),
                ):
                    e, n = word_errors(reference, " ".join(said))
                    got[name][0].extend(f)
                    got[name][1].extend(t)
                    got[name][2][0] += e
                    got[name][2][1] += n
                    print(
                        f"run {run + 1}, {name}: WER {e / n:.3f}, final p50 "
                        f"{statistics.median(f):.3f} s, first text p50 "
                        f"{statistics.median(t):.3f} s",
                        flush=True,
                    )
    for name, (finals, firsts, (e, n)) in got.items():
        print(
            f"{name:9}: WER {e / n:.3f} ({e}/{n} words); final latency over {len(finals)} "
            f"recordings {_p50_p95(finals)}; first text {_p50_p95(firsts)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
