#!/usr/bin/env python3
"""Transcribe a WAV file with a speechgw server over the batch protocol.

    python examples/batch_client.py recording.wav [--language bg] [--task translate]
        [--url ws://localhost:8765] [--api-key KEY]

Any WAV works as it is (PCM 8/16/24/32-bit or float, any rate, mono or stereo): the server
converts it. Needs only the ``websockets`` package. Sends the spec's hardware ``machine_id``
(see machine_id.py). Prints the transcript, then the timed segments on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from machine_id import machine_id  # examples/machine_id.py, beside this file
from websockets.sync.client import connect


def transcribe(url: str, wav: bytes, language: str | None, task: str, api_key: str | None) -> dict:
    metadata = {
        "type": "transcribe",
        "language": language,
        "task": task,
        "machine_id": machine_id(),
    }
    if api_key:
        metadata["api_key"] = api_key
    # compression=None: audio does not deflate, and asking for it only costs CPU
    with connect(url + "/ws/transcribe", max_size=None, compression=None) as ws:
        ws.send(json.dumps(metadata))
        ws.send(wav)
        return json.loads(ws.recv())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", help="a WAV file")
    parser.add_argument("--url", default="ws://localhost:8765")
    parser.add_argument("--language", default=None, help="ISO 639-1 code (default: en)")
    parser.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    parser.add_argument("--api-key", default=os.environ.get("SPEECHGW_API_KEY"))
    args = parser.parse_args()
    with open(args.wav, "rb") as f:
        result = transcribe(args.url, f.read(), args.language, args.task, args.api_key)
    if "error" in result:
        print(f"error: {result['error']}: {result.get('message', '')}", file=sys.stderr)
        return 1
    print(result.get("postprocessed_text") or result["text"])
    for s in result["segments"]:
        print(f"  [{s['start']:7.2f} - {s['end']:7.2f}] {s['text']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
