#!/usr/bin/env python3
"""Streams in batches (issue 17): how full the batches of concurrent streams' utterances are,
with their context prompts whole or cut to one length (``prompt_tokens``).

CTranslate2 batches only prompts of one length, and a stream's context (its last replies, up
to ``streaming.context_chars`` characters) is a different number of tokens in each stream, so
streams under way rarely share a batch. ``prompt_tokens: N`` sends the last N tokens instead.
Here STREAMS streams at once, unpaced (so that their utterances queue together, as hundreds of
real-time streams do on a GPU), each an English recording of ../shared/audio (the longest
first), through ``speechgw serve`` on tiny.en with ``batch_size`` BATCH; for each
``prompt_tokens`` value: the mean batch size of the model's ``generate`` calls (from
``/metrics``), the wall time, and the word error rate over all streams.

    python bench/stream_batching.py [--streams 8] [--batch-size 8] [--prompt-tokens 0,24]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import SHARED_AUDIO, served, tempdir, whisper_gateway_config, word_errors
from stream_accuracy import recordings, stream

from speechgw.audio import to_pcm16


def context_lengths(replies: list[list[str]], context_chars: int = 200) -> list[int]:
    """The token count of each prompt the streams' utterances carried: the context (the
    stream's previous replies, as speechgw.stream keeps them) as faster-whisper encodes it."""
    from faster_whisper import WhisperModel
    from speechgw.backends.whisper import resolve_model

    from speechgw.stream import _context

    tokenizer = WhisperModel(resolve_model("tiny.en"), compute_type="int8").hf_tokenizer
    lengths = []
    for texts in replies:
        context = ""
        for text in texts:
            if context:
                encoded = tokenizer.encode(" " + context.strip(), add_special_tokens=False)
                lengths.append(len(encoded.ids))
            context = _context(context, text, context_chars)
    return lengths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", default="0,24")
    parser.add_argument("--cpu-threads", type=int, default=2)
    args = parser.parse_args()
    if not (SHARED_AUDIO / "MANIFEST.tsv").exists():
        print("../shared/audio is absent: no real speech to stream")
        return 1
    from faster_whisper import decode_audio

    rows = sorted(recordings(False), key=lambda r: -float(r["duration_s"]))
    rows = [rows[i % len(rows)] for i in range(args.streams)]
    pcm = {r["file"]: to_pcm16(decode_audio(str(SHARED_AUDIO / r["file"]))).tobytes() for r in rows}
    audio_s = sum(len(pcm[r["file"]]) / 32000 for r in rows)
    print(f"{args.streams} streams at once, {audio_s:.0f} s of audio, unpaced")
    print("| prompt_tokens | mean batch | batches | wall s | WER |")
    print("|---|---|---|---|---|")
    with tempdir() as work:
        for limit in (int(x) for x in args.prompt_tokens.split(",")):
            config = whisper_gateway_config(
                Path(work) / f"prompt{limit}.yaml",
                model="tiny.en",
                cpu_threads=args.cpu_threads,
                batch_size=args.batch_size,
                prompt_tokens=limit,
            )
            with served(config) as url:
                started = time.perf_counter()
                with ThreadPoolExecutor(args.streams) as pool:
                    replies = list(pool.map(lambda r: stream(url, pcm[r["file"]], "en", 0), rows))
                wall = time.perf_counter() - started
                calls = sum(url.samples("speechgw_batch_size_sum").values())
                batches = sum(url.samples("speechgw_batch_size_count").values())
            errors = np.zeros(2, int)
            for r, texts in zip(rows, replies, strict=True):
                errors += word_errors(r["reference_transcript"], " ".join(texts))
            print(
                f"| {limit} | {calls / max(batches, 1):.2f} | {batches:.0f} | {wall:.1f} | "
                f"{errors[0] / errors[1]:.3f} ({errors[0]}/{errors[1]}) |",
                flush=True,
            )
            if limit == 0:  # the whole contexts: how many lengths, how many over N tokens
                lengths = context_lengths(replies)
                counts = {n: sum(x > n for x in lengths) for n in (24, 32, 48)}
                print(
                    f"|   (contexts: {len(lengths)} prompts of {min(lengths)}-{max(lengths)} "
                    f"tokens, {len(set(lengths))} lengths; longer than 24 / 32 / 48 tokens: "
                    + " / ".join(f"{100 * c / len(lengths):.0f}%" for c in counts.values())
                    + ") |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
