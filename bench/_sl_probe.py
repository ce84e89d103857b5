#!/usr/bin/env python3
"""Streaming latency: real speech at 1x real time, "last chunk of an utterance -> its reply".

Each English recording of ../shared/audio (espeak-ng sentences without it) is streamed in
100 ms chunks at real-time pace, followed by GAP seconds of silence. For each recording, the
latency is from sending its last chunk to receiving the last asr_reply that arrives after it
(replies that arrive earlier belong to pauses inside the recording). Reported: p50/p95 over all
recordings and runs, and the word error rate of the replies against the references.

``--interim on`` asks for interim results (``"interim_results": true``) and also reports the
*first text*: from sending a recording's first chunk to the first interim or reply of it (the
recordings start with speech; any leading silence counts against the figure). ``--interim
both`` runs without and with them in turn on the same server, side by side. ``--continuous``
streams the recordings back to back without the silence (read speech, over 20 s without a
pause long enough to end an utterance) and reports the gaps between successive texts; with
``--one-utterance``, the six espeak-ng test sentences joined without any pause instead (one
utterance of about 20 s). ``--noise -25`` puts the whole stream, recordings and silences,
under steady white noise at that RMS level (dBFS): noise that hides the pauses from webrtcvad
(compare ``--config bench/tiny.en-silero.yaml``).

    python bench/stream_latency.py [--runs 5] [--pace 1] [--interim off|on|both] [--continuous]
        [--noise DBFS] [--config bench/tiny.en.yaml]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import itertools
import json
import statistics
import sys
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _common import REPO, Clip, english_clips, served, tempdir, word_errors
from websockets.sync.client import connect

CHUNK_MS = 100
GAP_SECONDS = 3.0


def _paced_send(ws, audio: bytes, clock: dict[str, float], first: dict | None = None) -> None:
    """Send ``audio`` in 100 ms chunks, each when its first sample is due in real time;
    ``first`` goes into the first message of the stream."""
    step = 16000 * CHUNK_MS // 1000 * 2
    for offset in range(0, len(audio), step):
        chunk = audio[offset : offset + step]
        delay = clock["started"] + clock["sent"] / 32000 / clock["pace"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        message = {"audio": base64.b64encode(chunk).decode(), "rate": 16000}
        if first and not clock["sent"]:
            message |= first
        ws.send(json.dumps(message))
        clock["sent"] += len(chunk)


@dataclass
class Run:
    latencies: list[float]
    """Per clip: its last chunk -> the last reply after it."""
    texts: list[str]
    missed: int
    first_text: list[float] = field(default_factory=list)
    """Per clip: its first chunk -> its first interim or reply."""
    events: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, "interim" or "reply", text) as they arrived."""

    def __iter__(self):  # unpacks as (latencies, texts, missed), as before
        return iter((self.latencies, self.texts, self.missed))


class Noise:
    """Steady white noise at ``dbfs`` RMS added to LINEAR16 audio, one piece after another."""

    def __init__(self, dbfs: float) -> None:
        self.scale = 32768 * 10 ** (dbfs / 20)
        self.rng = np.random.default_rng(0)

    def __call__(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        samples += self.rng.normal(0, self.scale, len(samples))
        return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def run_once(
    url: str,
    clips,
    pace: float,
    interim: bool = False,
    gap_seconds: float = GAP_SECONDS,
    noise: Noise | None = None,
) -> Run:
    """Stream every clip once (each followed by ``gap_seconds`` of silence), with interim
    results when ``interim``, under ``noise`` if given."""
    silence = b"\x00\x00" * int(16000 * gap_seconds)
    heard = noise or (lambda pcm: pcm)
    replies: list[tuple[float, str]] = []
    events: list[tuple[float, str, str]] = []
    starts, ends = [], []
    with connect(url + "/api/core/google/asr", max_size=None, compression=None) as ws:
        ws.recv(timeout=30)

        def read() -> None:
            try:
                while True:
                    message = json.loads(ws.recv())
                    if "asr_reply" in message:
                        replies.append((time.monotonic(), message["asr_reply"]))
                        events.append((time.monotonic(), "reply", message["asr_reply"]))
                    elif "asr_interim" in message:
                        events.append((time.monotonic(), "interim", message["asr_interim"]))
            except Exception:
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # pace 0: as fast as the socket takes it
        clock = {"started": time.monotonic(), "sent": 0.0, "pace": pace or float("inf")}
        first = {"interim_results": True} if interim else None
        for clip in clips:
            starts.append(time.monotonic())
            _paced_send(ws, heard(clip.pcm()), clock, first)
            ends.append(time.monotonic())
            if silence:
                _paced_send(ws, heard(silence), clock)
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
    first_text = []
    for k, start in enumerate(starts):
        following = [t for t, _, _ in events if t >= start]
        if following and bisect.bisect_right(starts, following[0]) - 1 == k:
            first_text.append(following[0] - start)
    return Run(latencies, texts, missed, first_text, events)


def one_utterance(work: Path) -> Clip:
    """The six espeak-ng test sentences back to back, without a pause: about 20 s of speech
    that webrtcvad keeps as one utterance."""
    sys.path.insert(0, str(REPO))
    from tests import speech

    parts = [speech.speak(text, work / f"{name}.wav") for name, text in speech.SENTENCES.items()]
    joined = speech.convert(
        speech.concat(parts, work / "joined.wav"), work / "one.wav", "-r", "16000"
    )
    with wave.open(str(joined)) as w:
        seconds = w.getnframes() / 16000
    return Clip("one-utterance", joined, " ".join(speech.SENTENCES.values()), seconds)


def continuous(url: str, clips, runs: int) -> None:
    """The clips back to back with interims: how often text arrives during long speech."""
    gaps: list[float] = []
    for _ in range(runs):
        run = run_once(url, clips, 1.0, interim=True, gap_seconds=0.0)
        times = [t for t, _, _ in run.events]
        gaps += [b - a for a, b in itertools.pairwise(times)]
        seconds = sum(c.seconds for c in clips)
        kinds = [k for _, k, _ in run.events]
        print(
            f"continuous {seconds:.1f} s: {kinds.count('interim')} interims, "
            f"{kinds.count('reply')} replies; first text after {run.first_text[0]:.2f} s",
            flush=True,
        )
    q = statistics.quantiles(gaps, n=20)
    print(
        f"gap between successive texts: p50 {statistics.median(gaps):.2f} s, "
        f"p95 {q[18]:.2f} s, max {max(gaps):.2f} s"
    )


def _p50_p95(values: list[float]) -> str:
    """The median and 95th percentile (that needs two values at least: in noise that hides
    the pauses, a run may have a single reply)."""
    if not values:
        return "p50 -, p95 -"
    p95 = f"{statistics.quantiles(values, n=20)[18]:.3f} s" if len(values) > 1 else "-"
    return f"p50 {statistics.median(values):.3f} s, p95 {p95}"


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
    parser.add_argument("--interim", choices=["off", "on", "both"], default="off")
    parser.add_argument("--continuous", action="store_true")
    parser.add_argument("--one-utterance", action="store_true", help="with --continuous")
    parser.add_argument("--noise", type=float, help="white noise under it all, RMS dBFS")
    args = parser.parse_args()
    noise = Noise(args.noise) if args.noise is not None else None
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.interim]
    with tempdir() as work:
        clips = english_clips(Path(work))
        print(f"{len(clips)} clips, {sum(c.seconds for c in clips):.1f} s of speech")
        if args.continuous:
            if args.one_utterance:
                clips = [one_utterance(Path(work))]
            with served(args.config) as url:
                continuous(url, clips, args.runs)
            return 0
        collected = {
            mode: {"latencies": [], "first": [], "errors": 0, "words": 0, "missed": 0}
            for mode in modes
        }
        with served(args.config) as url:
            for run in range(args.runs):
                for mode in modes:
                    early = url.early_finals()
                    result = run_once(url, clips, args.pace, interim=mode, noise=noise)
                    early = url.early_finals(since=early)
                    got = collected[mode]
                    got["latencies"] += result.latencies
                    got["first"] += result.first_text
                    got["missed"] += result.missed
                    # all replies in order against all references in order: lost or repeated
                    # text shows up here whatever the pacing
                    e, n = word_errors(" ".join(c.reference for c in clips), " ".join(result.texts))
                    got["errors"] += e
                    got["words"] += n
                    label = "interims on" if mode else "interims off"
                    line = f"run {run + 1}, {label}: WER {e / n:.3f}"
                    if args.pace:
                        line += (
                            f", final p50 {statistics.median(result.latencies):.3f} s, max "
                            f"{max(result.latencies):.3f} s, first text p50 "
                            f"{statistics.median(result.first_text):.3f} s, "
                            f"missed {result.missed}"
                        )
                    print(f"{line}, early finals {early}", flush=True)
                    for t in result.texts: print("   |", t, flush=True)
    for mode, got in collected.items():
        label = "interims on " if mode else "interims off"
        line = f"{label}: WER over all replies in order {got['errors'] / got['words']:.3f}"
        line += f" ({got['errors']}/{got['words']} words)"
        if args.pace:
            line += (
                f"; final latency over {len(got['latencies'])} utterances "
                f"{_p50_p95(got['latencies'])}, without a reply {got['missed']}; "
                f"first text {_p50_p95(got['first'])}"
            )
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
