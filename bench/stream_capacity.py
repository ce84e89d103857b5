#!/usr/bin/env python3
"""Streaming capacity: how many real-time streams one CPU server carries.

N clients at once each stream the first English recordings of ../shared/audio at 1x real time
(as bench/stream_latency.py does, 3 s of silence after each), for N = 1, 2, 3, ...; reported
per N: p95 of "last chunk of an utterance -> its asr_reply", utterances without a reply, and
the server's resident memory. The capacity is the largest N whose p95 stays under 1.5 s.

    python bench/stream_capacity.py [--levels 1,2,3,4,6,8] [--clips 4] [--config bench/tiny.en.yaml]
        [--interim] [--audio DIR]

``--interim``: every stream asks for interim results, which then compete with the finals for
the worker (finals first). ``--audio DIR``: the ``piece*.wav`` there (16 kHz mono, as the GPU
recipe carries them) instead of ../shared/audio's recordings. ``--processes N``: ``speechgw
serve --processes N`` (N server processes on one port, each its own model and GIL; the kernel
deals the streams out among them); the RSS is theirs summed.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import wave
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from _common import REPO, Clip, english_clips, served, tempdir
from stream_latency import run_once


class Peak:
    """The server's peak resident memory while the block runs, sampled every 0.2 s."""

    def __init__(self, url) -> None:
        self.url = url
        self.mib = url.rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.mib = max(self.mib, self.url.rss_mib())

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def pieces(folder: Path) -> list[Clip]:
    """The 16 kHz mono WAVs ``piece*.wav`` of ``folder``, in order (no references)."""
    clips = []
    for path in sorted(folder.glob("piece*.wav")):
        with wave.open(str(path)) as w:
            clips.append(Clip(path.stem, path, "", w.getnframes() / w.getframerate()))
    return clips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,3,4,6,8")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--config", type=Path, default=REPO / "bench" / "tiny.en.yaml")
    parser.add_argument("--interim", action="store_true")
    parser.add_argument("--audio", type=Path, help="a folder of piece*.wav to stream")
    parser.add_argument("--processes", type=int, default=1, help="gateway processes")
    args = parser.parse_args()
    with tempdir() as work:
        clips = pieces(args.audio) if args.audio else english_clips(Path(work))
        clips = clips[: args.clips]
        print(f"{len(clips)} clips per stream, {sum(c.seconds for c in clips):.1f} s of speech")
        with ExitStack() as stack:
            urls = [stack.enter_context(served(args.config, args.processes))]
            for url in urls:
                run_once(url, clips[:1], 0)  # warm up
            idle = sum(url.rss_mib() for url in urls)
            print(f"server RSS idle (model loaded): {idle:.0f} MiB")
            print("streams | p50 | p95 | without reply | server peak RSS | early finals")
            for level in [int(x) for x in args.levels.split(",")]:
                peaks = [Peak(url) for url in urls]
                early = [url.early_finals() for url in urls]
                with ExitStack() as sampling, ThreadPoolExecutor(level) as pool:
                    for peak in peaks:
                        sampling.enter_context(peak)
                    results = list(
                        pool.map(
                            lambda n: run_once(
                                urls[n % len(urls)], clips, 1.0, interim=args.interim
                            ),
                            range(level),
                        )
                    )
                results = [(lat, missed) for lat, _texts, missed in results]
                latencies = [x for lat, _ in results for x in lat]
                missed = sum(m for _, m in results)
                p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) > 1 else 0
                rss = sum(peak.mib for peak in peaks)
                finals: Counter[str] = Counter()
                for url, since in zip(urls, early, strict=True):
                    finals.update(url.early_finals(since=since))
                print(
                    f"{level:7d} | {statistics.median(latencies):.2f} s | {p95:.2f} s | "
                    f"{missed} | {rss:.0f} MiB | " + str(dict(finals)),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
