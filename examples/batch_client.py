#!/usr/bin/env python3
"""Transcribe an audio file with a speechgw server over the batch protocol.

    python examples/batch_client.py recording.m4a [--language bg] [--task translate]
        [--url ws://localhost:8765] [--api-key KEY]

Any WAV goes as it is (PCM 8/16/24/32-bit or float, any rate, mono or stereo): the server
converts it. Any other audio file (mp3, m4a, flac, ogg/opus, webm...) is decoded here into the
16 kHz mono WAV the protocol carries, with PyAV (``pip install av``: FFmpeg's decoders in a
wheel). Needs the ``websockets`` package. Sends the spec's hardware ``machine_id`` (see
machine_id.py). Prints the transcript, then the timed segments on stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import wave

from machine_id import machine_id  # examples/machine_id.py, beside this file
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

PATH = "/ws/transcribe"


def transcribe(url: str, wav: bytes, language: str | None, task: str, api_key: str | None) -> dict:
    metadata = {
        "type": "transcribe",
        "language": language,
        "task": task,
        "machine_id": machine_id(),
    }
    if api_key:
        metadata["api_key"] = api_key
    base = url.rstrip("/")  # the server's URL; one that names the endpoint works too
    try:
        # compression=None: audio does not deflate, and asking for it only costs CPU
        ws = connect(base if base.endswith(PATH) else base + PATH, max_size=None, compression=None)
    except InvalidStatus as refused:  # refused before any frame: a wrong URL (404), say
        answer = refused.response
        return {"error": f"HTTP {answer.status_code}", "message": answer.body.decode()}
    with ws:
        ws.send(json.dumps(metadata))
        ws.send(wav)
        return json.loads(ws.recv())


def as_wav(data: bytes) -> bytes:
    """``data`` as it is when it is a WAV file, else decoded into 16 kHz mono 16-bit WAV."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return data
    import av  # only for files that are not WAV

    pcm = bytearray()
    resampler, shape = None, None

    def resample(frame: av.AudioFrame | None) -> None:
        nonlocal resampler, shape
        # a resampler takes one input format; a file may change it midway (mp3s joined)
        if frame is None or (frame.format.name, frame.layout.name, frame.sample_rate) != shape:
            for out in resampler.resample(None) if resampler else ():
                pcm.extend(out.to_ndarray().tobytes())
            if frame is None:
                return
            resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
            shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        for out in resampler.resample(frame):
            pcm.extend(out.to_ndarray().tobytes())

    # a tag that is not UTF-8 (Latin-1, from an older tagger) must not stop the file: PyAV
    # before 19 decodes tags strictly unless told; 19 has no such option and never refuses one
    tags = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
    with av.open(io.BytesIO(data), **tags) as container:
        for packet in container.demux(audio=0):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:  # a damaged packet, a joined file's tag: skip it
                continue
            for frame in frames:
                resample(frame)
        resample(None)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(pcm))
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", help="an audio file: WAV, or anything FFmpeg decodes")
    parser.add_argument("--url", default="ws://localhost:8765", help="the server's URL")
    parser.add_argument("--language", default=None, help="ISO 639-1 code (default: en)")
    parser.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    parser.add_argument("--api-key", default=os.environ.get("SPEECHGW_API_KEY"))
    args = parser.parse_args()
    if not os.path.isfile(args.audio):
        parser.error(f"{args.audio}: no such file")
    with open(args.audio, "rb") as f:
        data = f.read()
    try:
        wav = as_wav(data)
    except Exception as exc:  # av.error.FFmpegError: PyAV loads only for files that are not WAV
        print(f"error: {args.audio} could not be decoded as audio ({exc})", file=sys.stderr)
        return 1
    result = transcribe(args.url, wav, args.language, args.task, args.api_key)
    if "error" in result:
        print(f"error: {result['error']}: {result.get('message', '')}", file=sys.stderr)
        return 1
    print(result.get("postprocessed_text") or result["text"])
    for s in result["segments"]:
        print(f"  [{s['start']:7.2f} - {s['end']:7.2f}] {s['text']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
