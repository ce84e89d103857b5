#!/usr/bin/env python3
"""Stream speech to a speechgw server over the streaming protocol and print each utterance.

    python examples/stream_client.py recording.wav [--url ws://localhost:8765]
        [--language-code en-US] [--api-key KEY] [--speed 1] [--interim]
    python examples/stream_client.py --mic            # needs: pip install sounddevice

A WAV file (16-bit PCM, mono, any rate) is sent in 100 ms chunks at real-time pace (--speed 0
sends as fast as the server takes it); the microphone is recorded at 16 kHz until Ctrl+C.
Then ``{"type": "end"}`` asks the server for the last replies. With ``--interim`` the server
also sends the words so far of the utterance being spoken (speechgw's ``asr_interim``
extension): they go to stderr, marked ``...``, each replacing the last (on a terminal, on one
line); finals go to stdout. Needs the ``websockets`` package.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import sys
import threading
import time
import wave
from collections.abc import Iterator
from urllib.parse import quote

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

CHUNK_MS = 100
PATH = "/api/core/google/asr"


def wav_chunks(path: str, speed: float) -> tuple[int, Iterator[bytes]]:
    convert = (
        "the streaming protocol carries 16-bit mono PCM: convert first, e.g. "
        "sox in.wav -c 1 -b 16 -e signed-integer out.wav"
    )
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                sys.exit(convert)
            rate = w.getframerate()
    except OSError as exc:
        sys.exit(f"{path}: {exc.strerror}")
    except (wave.Error, EOFError) as exc:  # float, ADPCM, not a WAV at all, cut short
        sys.exit(f"{path}: {exc}; {convert}")
    frames = rate * CHUNK_MS // 1000

    def chunks() -> Iterator[bytes]:
        started = time.monotonic()
        with wave.open(path, "rb") as w:
            for i, chunk in enumerate(iter(lambda: w.readframes(frames), b"")):
                if speed:
                    delay = started + i * CHUNK_MS / 1000 / speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                yield chunk

    return rate, chunks()


def mic_chunks() -> tuple[int, Iterator[bytes]]:
    try:
        import sounddevice
    except ImportError:
        sys.exit("--mic needs the sounddevice package: pip install sounddevice")
    rate = 16000
    captured: queue.Queue[bytes] = queue.Queue()

    def chunks() -> Iterator[bytes]:
        def callback(data, frames, when, status) -> None:
            captured.put(bytes(data))

        with sounddevice.RawInputStream(
            samplerate=rate,
            channels=1,
            dtype="int16",
            blocksize=rate * CHUNK_MS // 1000,
            callback=callback,
        ):
            print("listening; Ctrl+C to stop", file=sys.stderr)
            try:
                while True:
                    yield captured.get()
            except KeyboardInterrupt:
                return

    return rate, chunks()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", nargs="?", help="a 16-bit mono WAV file")
    parser.add_argument("--mic", action="store_true", help="stream the microphone instead")
    parser.add_argument("--url", default="ws://localhost:8765", help="the server's URL")
    parser.add_argument("--language-code", default="en-US")
    parser.add_argument("--api-key", default=os.environ.get("SPEECHGW_API_KEY"))
    parser.add_argument("--speed", type=float, default=1.0, help="x real time; 0: no pacing")
    parser.add_argument("--interim", action="store_true", help="show words while speaking")
    args = parser.parse_args()
    live = sys.stderr.isatty()  # redraw the interim line in place
    if not args.mic and not args.wav:
        parser.error("give a WAV file or --mic")
    rate, chunks = mic_chunks() if args.mic else wav_chunks(args.wav, args.speed)
    query = f"?api_key={quote(args.api_key)}" if args.api_key else ""
    # Faster than real time, the server paces us by reading no faster than it recognises, and
    # keepalive pings would wait behind the audio already in the sockets' buffers (megabytes:
    # a minute and more of recognising). A pong that late would end the connection, and
    # without a ping timeout websockets' sync client, once a pong has come back later than
    # the ping interval, sends pings back to back and starves its own reading of the replies:
    # so no keepalive pings then.
    faster = not args.mic and (args.speed == 0 or args.speed > 1)
    ping_interval = None if faster else 20
    base = args.url.rstrip("/")  # the server's URL; one that names the endpoint works too
    url = (base if base.endswith(PATH) else base + PATH) + query
    try:
        ws = connect(url, compression=None, ping_interval=ping_interval)
    except InvalidStatus as refused:  # a wrong key (401), no place free (429, 503), a wrong URL
        answer = refused.response
        print(f"refused: HTTP {answer.status_code}: {answer.body.decode()}", file=sys.stderr)
        return 1
    with ws:
        hello = json.loads(ws.recv())
        print(f"connected: {hello['clientId']}", file=sys.stderr)

        def show() -> None:
            for message in ws:
                reply = json.loads(message)
                if "asr_interim" in reply:
                    if live:  # carriage return, erase the line, write the new words
                        print(f"\r\033[K... {reply['asr_interim']}", end="", file=sys.stderr)
                    else:
                        print(f"... {reply['asr_interim']}", file=sys.stderr)
                elif "asr_reply" in reply:
                    if live and args.interim:
                        print("\r\033[K", end="", file=sys.stderr)
                    print(reply["asr_reply"], flush=True)
                elif reply.get("type") == "error":
                    print(f"error: {reply['message']} ({reply.get('detail', '')})", file=sys.stderr)

        reader = threading.Thread(target=show, daemon=True)
        reader.start()
        for i, chunk in enumerate(chunks):
            message = {"audio": base64.b64encode(chunk).decode()}
            if i == 0:
                message |= {"rate": rate, "language_code": args.language_code}
                if args.interim:
                    message["interim_results"] = True
            ws.send(json.dumps(message))
        ws.send(json.dumps({"type": "end"}))
        reader.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
