#!/usr/bin/env python3
"""What asking for words costs on the OpenAI-compatible API: word timestamps and logprobs.

One ``speechgw serve`` (bench/tiny.en.yaml: tiny.en, one worker, one thread) answers, for each
10-30 s recording (the English files of ../shared/audio joined into pieces; espeak-ng speech
without it) and each run, in turn (the order rotating), through the official ``openai`` SDK:

- ``json``: the plain text;
- ``logprobs``: ``json`` with ``include[]=logprobs`` (each word's log probability);
- ``words``: ``verbose_json`` with ``timestamp_granularities[]=word``.

Both of the last two make Whisper align the words it wrote with the audio (one more pass of
the model per 30 s window). Reported: each mode's latency p50 and its median ratio to
``json``, and how many words of its text differ from ``json``'s (word timing lets Whisper
start each window after the last word, so a recording over 30 s can differ a little).

    python bench/openai_words.py [--runs 3] [--recording FILE]

``--recording`` sends that one file (any format) instead of the pieces: a recording over 30 s
shows how much word timing changes the text.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import REPO, paired_rounds, recordings, sdk_transcribe, served, tempdir
from openai import OpenAI

MODES: dict[str, dict[str, Any]] = {
    "json": {},
    "logprobs": {"include": ["logprobs"]},
    "words": {"response_format": "verbose_json", "timestamp_granularities": ["word"]},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recording", type=Path, help="one audio file instead of the pieces")
    args = parser.parse_args()
    with tempdir() as work, served(REPO / "bench" / "tiny.en.yaml") as url:
        files = [args.recording] if args.recording else recordings(Path(work))
        pieces = [path.read_bytes() for path in files]
        client = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="none")
        for fields in MODES.values():  # warm up
            sdk_transcribe(client, "a.wav", pieces[0], **fields)
        calls = {
            name: lambda wav, fields=fields: sdk_transcribe(client, "a.wav", wav, **fields)
            for name, fields in MODES.items()
        }
        rounds = paired_rounds(calls, pieces, args.runs, "json")
        client.close()
    shape = f"{len(pieces)} recordings, tiny.en, 1 worker x 1 thread"
    print(f"\n{rounds.total} requests per mode, {shape}")
    for name in MODES:
        line = rounds.line(name, "json")
        if name in rounds.ratios:
            line += f" ({rounds.differing[name]} of {rounds.words} words differ from json's)"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
