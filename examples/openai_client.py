#!/usr/bin/env python3
"""Transcribe (or translate) an audio file with a speechgw server through OpenAI's own SDK.

    python examples/openai_client.py talk.m4a [--language de | --languages sv,no,da]
        [--keyword Postgres --keyword Valkey] [--translate] [--format verbose_json] [--words]
        [--confidence] [--stream] [--model whisper-1] [--url http://localhost:8765/v1]
        [--api-key KEY]

speechgw speaks OpenAI's transcription API, so the official ``openai`` package (``pip install
openai``) works unchanged: only ``base_url`` points at the gateway. Any audio file FFmpeg
decodes goes as it is (wav, mp3, m4a, flac, ogg/opus, webm...). Without ``--language`` the
server detects it (Whisper backends), among ``--languages`` when given (``languages[]``);
``--keyword`` names a word or phrase the speaker is likely to say (``keywords[]``: names,
jargon), as often as you like. Prints the text, or the whole response for the subtitle
and JSON formats; ``--words`` prints each word with its time; ``--confidence`` each word with
how sure the recogniser is of it (``include=["logprobs"]``); ``--stream`` prints the text as
the server recognises it (OpenAI's ``stream=True``: a long recording shows its first words
long before the whole is done).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

from openai import OpenAI, OpenAIError


def base_url(url: str) -> str:
    """The SDK's ``base_url`` (the address with ``/v1``) from what an integrator pastes: the
    server's address, the SDK's base URL, or an endpoint's whole URL."""
    url = url.rstrip("/")
    for endpoint in ("/audio/transcriptions", "/audio/translations"):
        url = url.removesuffix(endpoint)
    return url if url.endswith("/v1") else url + "/v1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", help="an audio file")
    parser.add_argument(
        "--url",
        default="http://localhost:8765/v1",
        help="the gateway's address, with or without /v1, or an endpoint's whole URL",
    )
    # the SDK insists on a key; any text does when the server has none configured
    parser.add_argument("--api-key", default=os.environ.get("SPEECHGW_API_KEY") or "none")
    parser.add_argument("--model", default="whisper-1", help="a name GET /v1/models lists")
    parser.add_argument("--language", default=None, help="ISO 639-1 code (default: detect)")
    parser.add_argument(
        "--languages", default=None, help="detect among these, comma-separated: sv,no,da"
    )
    parser.add_argument(
        "--keyword", action="append", default=[], help="a word or phrase to listen for"
    )
    parser.add_argument("--translate", action="store_true", help="into English")
    parser.add_argument(
        "--format", default="json", choices=["json", "text", "srt", "vtt", "verbose_json"]
    )
    parser.add_argument("--words", action="store_true", help="time each word (verbose_json)")
    parser.add_argument(
        "--confidence", action="store_true", help="each word's probability (logprobs)"
    )
    parser.add_argument("--stream", action="store_true", help="print the text as it comes")
    args = parser.parse_args()
    args.url = base_url(args.url)
    if args.language and args.languages:
        parser.error("--language names it; --languages lists what it may be: one or the other")
    if not os.path.isfile(args.audio):
        parser.error(f"{args.audio}: no such file")
    if args.stream:
        if args.translate or args.words or args.format not in ("json", "text"):
            parser.error("--stream gives text as it comes: no --translate, --words or --format")
        return stream(args)
    if args.confidence and (args.translate or args.words or args.format != "json"):
        parser.error("--confidence comes with the json text: no --translate, --words or --format")

    client = OpenAI(base_url=args.url, api_key=args.api_key)
    fields: dict = {"model": args.model, "response_format": args.format}
    if args.words:
        fields["response_format"] = "verbose_json"
        fields["timestamp_granularities"] = ["word"]
    if args.confidence:
        fields["include"] = ["logprobs"]
    fields.update(hints(args))
    try:
        with client, open(args.audio, "rb") as audio:
            if args.translate:
                # recent SDKs flag the endpoint as deprecated upstream; it is served here
                warnings.filterwarnings("ignore", "deprecated", DeprecationWarning)
                result = client.audio.translations.create(file=audio, **fields)
            else:
                if args.language:
                    fields["language"] = args.language
                result = client.audio.transcriptions.create(file=audio, **fields)
    except OpenAIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(result, str):  # text, srt, vtt
        print(result, end="")
    elif args.words:
        print(result.text)
        for word in result.words or ():
            print(f"  [{word.start:7.2f} - {word.end:7.2f}] {word.word}", file=sys.stderr)
    elif args.confidence:
        print(result.text)
        for token in result.logprobs or ():  # none from a backend that rates no words
            print(f"  {math.exp(token.logprob):.2f} {token.token.strip()}", file=sys.stderr)
    elif fields["response_format"] == "verbose_json":
        print(result.model_dump_json(indent=2, exclude_none=True))
    else:
        print(result.text)
    return 0


def hints(args: argparse.Namespace) -> dict:
    """``languages[]`` and ``keywords[]``, where given (the SDK sends each list as repeated
    form fields)."""
    fields: dict = {}
    if args.languages:
        fields["languages"] = [code.strip() for code in args.languages.split(",")]
    if args.keyword:
        fields["keywords"] = args.keyword
    return fields


def stream(args: argparse.Namespace) -> int:
    """Print each piece of text as the server sends it (``transcript.text.delta``), then a
    newline once the whole is done (``transcript.text.done`` holds it all again)."""
    client = OpenAI(base_url=args.url, api_key=args.api_key)
    fields: dict = {"model": args.model, "stream": True, **hints(args)}
    if args.language:
        fields["language"] = args.language
    try:
        with client, open(args.audio, "rb") as audio:
            for event in client.audio.transcriptions.create(file=audio, **fields):
                if event.type == "transcript.text.delta":
                    print(event.delta, end="", flush=True)
    except OpenAIError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
