#!/usr/bin/env python3
"""What an utterance's first interim can hear, by how much audio it holds (BENCHMARKS.md, "An
echo decoded again on the same encoding; scarce interims spent where words are").

The test suite's 9 s utterance (three espeak-ng sentences without a pause between them), cut
as the stream's segmenter cuts it (0.3 s of lead-in before the speech), decoded in-process
from its start to each length as an interim is (tiny.en, greedy, one temperature, English),
without a prompt and with the utterance's own words as its context.

    python bench/first_interim_words.py [--model tiny.en]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path for the tests' speech helpers)
import numpy as np
from faster_whisper import WhisperModel
from speechgw.backends.whisper_models import resolve_model

from tests import speech

SENTENCES = ["children", "market", "window"]
LEAD_IN_SECONDS = 0.3
LENGTHS = (0.5, 0.8, 1.0, 1.3, 1.5, 2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    voices = [speech.speak(speech.SENTENCES[n], folder / f"{n}.wav") for n in SENTENCES]
    audio = speech.samples_16k(speech.concat(voices, folder / "utterance.wav"))
    onset = int(np.argmax(np.abs(audio) > 0.02))
    start = max(0, onset - int(LEAD_IN_SECONDS * 16000))
    model = WhisperModel(resolve_model(args.model), device="cpu", compute_type="int8")
    said = " ".join(speech.SENTENCES[n] for n in SENTENCES)
    for prompt in (None, said):
        for seconds in LENGTHS:
            segments, _ = model.transcribe(
                audio[start : start + int(seconds * 16000)],
                language="en",
                beam_size=1,
                temperature=0.0,
                initial_prompt=prompt,
                condition_on_previous_text=False,
            )
            text = "".join(s.text for s in segments).strip()
            print(f"{'its words as context' if prompt else 'no prompt'}, {seconds} s: {text!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
