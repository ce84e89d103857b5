#!/usr/bin/env python3
"""A quiet speaker: the English recordings of ../shared/audio made quieter, streamed as the
gateway streams them, with webrtcvad's copy of the stream raised (``streaming.vad_max_gain_db``)
or not.

Each recording, ``--quieter`` dB quieter, is cut by the gateway's segmenter (100 ms chunks)
and each utterance decoded as the gateway decodes it (base unless ``--model``; beam 5, the
stream's last 200 characters of replies as its prompt, segments rated above 0.5 "no speech"
dropped). Printed per level: the word errors in the 1317 words and the utterances cut, with
the gain at ``--vad-max-gain-db`` (the gateway's 30) and with it off (0); and, as a yardstick,
the quiet audio cut where the loud audio is cut ("cut at full level"): what a segmenter that
heard the quiet speaker as well as a loud one would give.

    python bench/quiet_speaker.py [--quieter 0 10 20 30] [--model base]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import in_process_model, segmented, word_errors
from non_speech import NO_SPEECH, decode_utterances, english_recordings, kept

from speechgw.config import StreamingConfig


def stream_text(model, utterances: list[np.ndarray]) -> str:
    """The replies a stream of these utterances gets (the gateway's decode, its 0.5 rule)."""
    segments = decode_utterances(model, utterances)
    return kept(segments, lambda no_speech, log_prob, heard: no_speech > NO_SPEECH)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--quieter", type=float, nargs="+", default=[0, 10, 20, 30])
    parser.add_argument("--vad-max-gain-db", type=float, default=StreamingConfig().vad_max_gain_db)
    args = parser.parse_args()
    model = in_process_model(args.model, threads=2)
    recordings = [(row["reference_transcript"], s) for row, s in english_recordings()]
    ways = {
        f"gain up to {args.vad_max_gain_db:g} dB": StreamingConfig(
            vad_max_gain_db=args.vad_max_gain_db
        ),
        "no gain": StreamingConfig(vad_max_gain_db=0),
        "cut at full level": None,
    }
    for quieter in args.quieter:
        scale = np.float32(10 ** (-quieter / 20))
        for way, config in ways.items():
            errors = words = cut = 0
            for reference, samples in recordings:
                if config is None:
                    utterances = [
                        u * scale for u in segmented(samples, StreamingConfig(vad_max_gain_db=0))
                    ]
                else:
                    utterances = segmented((samples * scale).astype(np.float32), config)
                cut += len(utterances)
                e, n = word_errors(reference, stream_text(model, utterances))
                errors, words = errors + e, words + n
            print(
                f"{args.model}, {quieter:g} dB quieter, {way}: "
                f"{errors}/{words} word errors, {cut} utterances",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
