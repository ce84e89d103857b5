#!/usr/bin/env python3
"""Per-call costs, timed in-process without contention (BENCHMARKS.md quotes them):

- faster-whisper's ``get_suppressed_tokens`` on the backend's suppressed-token list as it was
  after N decodes, when faster-whisper's appending 6 tokens per decode made it grow (issue 17,
  session 36): the GIL time each decode spent on it;
- the DC blocker webrtcvad's copy of a stream passes (``speechgw.segmenter.DcBlocker``), per
  100 ms chunk, and scipy's ``lfilter`` inside it alone;
- unmasking a client's WebSocket payload (``speechgw._wsproto_compat``) against wsproto's own
  code, for the sizes hypercorn hands it: a streaming message, the 64 KB it reads at a time,
  and 340 KB (a 10 s WAV) in one piece.

    python bench/small_costs.py
"""

from __future__ import annotations

import sys
import timeit

import numpy as np
from _common import REPO


def main() -> int:
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens
    from scipy.signal import lfilter
    from speechgw.backends.whisper import _non_speech_tokens
    from speechgw.backends.whisper_languages import WindowLanguageModel
    from speechgw.backends.whisper_models import resolve_model

    from speechgw.segmenter import DcBlocker

    model = WindowLanguageModel(resolve_model("tiny.en"), cpu_threads=1)
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    base = list(_non_speech_tokens(model))
    special = [
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    ]
    for decodes in (0, 10_000, 100_000):
        grown = base + special * decodes
        runs = 20 if decodes else 2000
        seconds = timeit.timeit(
            lambda g=grown: get_suppressed_tokens(tokenizer, list(g)), number=runs
        )
        print(
            f"get_suppressed_tokens after {decodes} decodes ({len(grown)} entries): "
            f"{seconds / runs * 1000:.3f} ms"
        )

    chunk = (np.random.default_rng(0).normal(0, 3000, 1600) + 300).astype(np.int16)
    blocker = DcBlocker()
    runs = 5000
    seconds = timeit.timeit(lambda: blocker.feed(chunk), number=runs)
    print(f"DcBlocker.feed, 100 ms chunk: {seconds / runs * 1e6:.1f} us")
    x, zi = chunk.astype(np.float64), np.array([0.0])
    seconds = timeit.timeit(lambda: lfilter(DcBlocker._B, DcBlocker._A, x, zi=zi), number=runs)
    print(f"scipy lfilter alone: {seconds / runs * 1e6:.1f} us")

    from wsproto.frame_protocol import XorMaskerSimple

    from speechgw._wsproto_compat import unmask_with_numpy

    wsprotos = XorMaskerSimple.process
    unmask_with_numpy()
    ours = XorMaskerSimple.process
    masker = XorMaskerSimple(b"\x01\x02\x03\x05")
    for size in (4_300, 65_536, 340_000):
        payload = np.random.default_rng(size).bytes(size)
        runs = 2000
        timed = [
            timeit.timeit(lambda p=payload, f=f: f(masker, p), number=runs) / runs * 1e6
            for f in (wsprotos, ours)
        ]
        print(f"unmasking {size} bytes: wsproto {timed[0]:.1f} us, speechgw {timed[1]:.1f} us")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
