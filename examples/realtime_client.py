#!/usr/bin/env python3
"""Transcribe a WAV file through speechgw's OpenAI Realtime API (``/v1/realtime``, a
transcription session) with the official ``openai`` SDK, as a microphone would send it.

    python examples/realtime_client.py recording.wav [--base-url http://localhost:8765/v1]
        [--api-key KEY] [--model gpt-transcribe] [--language en] [--speed 1] [--push-to-talk]

The file (16-bit PCM, mono) is sent in 100 ms appends at real-time pace (``--speed 0``: as
fast as the server takes it), at its own rate (OpenAI takes 24000 Hz only; speechgw any rate
from 8000 to 384000). The server ends a turn at each pause (``server_vad``); with
``--push-to-talk`` (``turn_detection: null``) the whole file is one turn, ended by a commit.
Each turn's transcript goes to stdout as it is completed; the words so far (deltas) go to
stderr, marked ``...``. Needs ``pip install 'openai[realtime]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
import wave

from openai import AsyncOpenAI, OpenAIError
from websockets.exceptions import InvalidStatus

CHUNK_MS = 100


def read_wav(path: str) -> tuple[int, bytes]:
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                sys.exit(
                    f"{path}: the Realtime API carries 16-bit mono PCM: convert first, e.g. "
                    "sox in.wav -c 1 -b 16 -e signed-integer -r 24000 out.wav"
                )
            return w.getframerate(), w.readframes(w.getnframes())
    except OSError as exc:
        sys.exit(f"{path}: {exc.strerror}")
    except (wave.Error, EOFError) as exc:
        sys.exit(f"{path}: {exc}")


async def send(conn, rate: int, pcm: bytes, speed: float, push_to_talk: bool) -> None:
    step = rate * 2 * CHUNK_MS // 1000
    started = time.monotonic()
    for i, at in enumerate(range(0, len(pcm), step)):
        if speed:
            await asyncio.sleep(max(0.0, started + i * CHUNK_MS / 1000 / speed - time.monotonic()))
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[at : at + step]).decode())
    # end the turn still being spoken (a file may end mid-word); "nothing to commit" is fine
    await conn.input_audio_buffer.commit(event_id="end-of-file")
    # events are taken in order: its answer says every turn of the file has been committed
    await conn.session.update(session={"type": "transcription"})


async def transcribe(args: argparse.Namespace) -> int:
    rate, pcm = read_wav(args.file)
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    transcription = {"model": args.model}
    if args.language:
        transcription["language"] = args.language
    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": rate},
                "transcription": transcription,
                "turn_detection": None if args.push_to_talk else {"type": "server_vad"},
            }
        },
    }
    waiting: set[str] = set()  # committed turns not yet answered
    updates = 0
    try:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session=session)
            sender = asyncio.create_task(send(conn, rate, pcm, args.speed, args.push_to_talk))
            async for event in conn:
                if event.type == "session.updated":
                    updates += 1
                elif event.type == "input_audio_buffer.committed":
                    waiting.add(event.item_id)
                elif event.type == "conversation.item.input_audio_transcription.delta":
                    print(f"... {event.delta}", file=sys.stderr, flush=True)
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    waiting.discard(event.item_id)
                    if event.transcript:
                        print(event.transcript, flush=True)
                elif event.type == "conversation.item.input_audio_transcription.failed":
                    waiting.discard(event.item_id)
                    print(f"turn failed: {event.error.message}", file=sys.stderr)
                elif event.type == "error" and event.error.event_id != "end-of-file":
                    print(f"error: {event.error.message}", file=sys.stderr)
                    return 1
                if updates == 2 and not waiting:  # the file's last turn is answered
                    break
            await sender
    except OpenAIError as exc:
        sys.exit(f"{args.base_url}: {exc}")
    except InvalidStatus as exc:  # a refused key, a server at its limits
        body = exc.response.body.decode(errors="replace")
        sys.exit(f"{args.base_url}: refused ({exc.response.status_code}): {body}")
    except OSError as exc:  # refused, unreachable
        sys.exit(f"{args.base_url}: {exc}")
    finally:
        await client.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a 16-bit mono PCM WAV file")
    parser.add_argument("--base-url", default="http://localhost:8765/v1")
    parser.add_argument("--api-key", default=os.environ.get("SPEECHGW_API_KEY", "none"))
    parser.add_argument("--model", default="gpt-transcribe")
    parser.add_argument("--language", help="ISO 639-1 code (default: detected)")
    parser.add_argument("--speed", type=float, default=1.0, help="x real time; 0: at once")
    parser.add_argument("--push-to-talk", action="store_true", help="one turn, ended by commit")
    sys.exit(asyncio.run(transcribe(parser.parse_args())))


if __name__ == "__main__":
    main()
