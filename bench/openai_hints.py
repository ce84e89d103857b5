#!/usr/bin/env python3
"""What ``keywords[]`` and ``languages[]`` (gpt-transcribe's fields) change in the words.

One ``speechgw serve`` (bench/tiny.en.yaml, or bench/base.yaml with ``--model base``) answers
``gpt-transcribe`` requests through the official ``openai`` SDK:

- ``keywords``: espeak-ng sentences with names and jargon in them, each without and with the
  names as ``keywords[]``; printed: the text each time, and how many of the names it wrote;
  then a sentence with none of them, without and with all of them as ``keywords[]``, and
  6 s of noise and of hum (sox) with all of them;
- ``languages`` (base only: tiny.en hears English only): short espeak-ng sentences in Swedish,
  Norwegian, Danish and Portuguese, each without and with ``languages[]`` naming its language
  and two near it; printed: the language heard (``languages``) and the text each time.

    python bench/openai_hints.py [--model base]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import REPO, normalise, served, tempdir
from openai import OpenAI

from tests import speech

NAMED = [  # (sentence, the names in it)
    ("Ask Siobhan to restart the Kubernetes cluster before noon.", ["Siobhan", "Kubernetes"]),
    ("The invoice from Zyxel was approved by Nguyen yesterday.", ["Zyxel", "Nguyen"]),
    ("Our new database is called Postgres, and the cache is Valkey.", ["Postgres", "Valkey"]),
    ("Send the report to Aoife and Tadhg in Dun Laoghaire.", ["Aoife", "Tadhg", "Dun Laoghaire"]),
]
CONTROL = "The children are playing football in the park."
SPOKEN = [  # (espeak-ng voice, sentence, the languages the client says it may be in)
    ("sv", "Tack så mycket.", ["sv", "no", "da"]),
    ("sv", "Vi ses i morgon.", ["sv", "no", "da"]),
    ("no", "Takk skal du ha.", ["no", "sv", "da"]),
    ("da", "Tak for i dag.", ["da", "sv", "no"]),
    ("pt", "Muito obrigado pela ajuda.", ["pt", "es", "it"]),
]


def written(text: str, names: list[str]) -> int:
    """How many of ``names`` appear in ``text``, as words (case and punctuation aside)."""
    heard = " " + " ".join(normalise(text)) + " "
    return sum(" " + " ".join(normalise(name)) + " " in heard for name in names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny.en", "base"), default="tiny.en")
    args = parser.parse_args()
    config = REPO / "bench" / ("base.yaml" if args.model == "base" else "tiny.en.yaml")
    with tempdir() as work, served(config) as url:
        client = OpenAI(base_url=url.replace("ws://", "http://") + "/v1", api_key="none")

        def ask(wav: bytes, **fields: object):
            return client.audio.transcriptions.create(
                model="gpt-transcribe", file=("a.wav", wav), **fields
            )

        print(f"keywords[], {args.model}:")
        totals = [0, 0]
        names = 0
        for number, (sentence, keywords) in enumerate(NAMED):
            wav = speech.speak(sentence, Path(work) / f"named{number}.wav").read_bytes()
            names += len(keywords)
            for i, fields in enumerate(({}, {"keywords": keywords})):
                text = ask(wav, **fields).text
                totals[i] += written(text, keywords)
                print(f"  {'with' if fields else 'without'}: {text}")
        print(f"  names written: {totals[0]} of {names} without, {totals[1]} with")
        # a sentence with none of the names in it, sent with all of them: nothing added
        wav = speech.speak(CONTROL, Path(work) / "control.wav").read_bytes()
        everyone = [name for _, keywords in NAMED for name in keywords]
        for fields in ({}, {"keywords": everyone}):
            text = ask(wav, **fields).text
            print(f"  none of them said, {'with' if fields else 'without'}: {text}")
        # nobody speaking: 6 s of noise and of hum, with all nine (no name written into them)
        for name, sound in (("noise", ["whitenoise", "vol", "0.05"]), ("hum", ["sine", "120"])):
            made = speech.made_sound(Path(work) / f"{name}.wav", 6, *sound)
            text = ask(made.read_bytes(), keywords=everyone).text
            print(f"  {name}, with all of them: {text!r}")
        if args.model == "base":
            print("languages[], base:")
            right = [0, 0]
            for number, (voice, sentence, languages) in enumerate(SPOKEN):
                spoken = speech.speak(sentence, Path(work) / f"spoken{number}.wav", voice=voice)
                wav = spoken.read_bytes()
                print(f"  {voice}: {sentence}")
                for i, fields in enumerate(({}, {"languages": languages})):
                    answer = ask(wav, **fields)
                    heard = [language.code for language in answer.languages]
                    right[i] += heard == [voice]
                    label = f"among {','.join(languages)}" if fields else "any"
                    print(f"    {label}: {heard} {answer.text}")
            print(f"  heard right: {right[0]} of {len(SPOKEN)} any, {right[1]} among")
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
