#!/usr/bin/env python3
"""Word timing (CTranslate2's ``align``) one window at a time against one batched call (issue 17).

``segment_times: sentences`` (the CUDA default) and word timestamps time a window's words with
one ``align`` call after its decode; the batched backend sends those calls through its batcher
too. This checks, on the real model in-process, that a batch gives every window the alignment
it gets alone, and times both ways. Windows: the English recordings of ../shared/audio (first
25 s of each), their texts as tiny.en writes them (``--audio DIR``: ``piece*.wav`` instead).

    .venv/bin/python bench/align_batching.py [--model tiny.en] [--device cpu] [--windows 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, add_model_arguments, english_clips, pcm16k


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import ctranslate2
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_ctranslate2_storage
    from speechgw.backends.whisper_models import resolve_model

    whisper = WhisperModel(
        resolve_model(args.model), device=args.device, compute_type=args.compute_type
    )
    if args.audio:
        paths = sorted(args.audio.glob("piece*.wav"))
    else:
        paths = [clip.path for clip in english_clips(Path(tempfile.mkdtemp()))]
    windows = []
    for path in paths[: args.windows]:
        audio = pcm16k(path).astype(np.float32)
        if np.abs(audio).max() > 2:
            audio /= 32768
        audio = audio[: 16000 * 25]
        segments, _ = whisper.transcribe(audio, language="en", without_timestamps=True)
        text = " ".join(s.text.strip() for s in segments)
        tokens = whisper.hf_tokenizer.encode(" " + text, add_special_tokens=False).ids
        mel = whisper.feature_extractor(audio)
        windows.append((pad_or_trim(mel), tokens, min(mel.shape[-1], 3000)))
    sot = Tokenizer(whisper.hf_tokenizer, False, task="transcribe", language="en").sot_sequence
    model = whisper.model
    model.align(get_ctranslate2_storage(windows[0][0][None]), sot, [windows[0][1]], 3000)

    for _ in range(args.rounds):
        started = time.perf_counter()
        alone = [
            model.align(get_ctranslate2_storage(mel[None]), sot, [tokens], frames)[0]
            for mel, tokens, frames in windows
        ]
        one_by_one = time.perf_counter() - started
        started = time.perf_counter()
        features = np.ascontiguousarray(np.stack([mel for mel, _, _ in windows]))
        batched = model.align(
            ctranslate2.StorageView.from_array(features),
            sot,
            [tokens for _, tokens, _ in windows],
            [frames for _, _, frames in windows],
        )
        together = time.perf_counter() - started
        same = sum(a.alignments == b.alignments for a, b in zip(alone, batched, strict=True))
        probabilities = max(
            float(np.max(np.abs(np.subtract(a.text_token_probs, b.text_token_probs))))
            for a, b in zip(alone, batched, strict=True)
        )
        print(
            f"{len(windows)} windows: one by one {one_by_one:.3f} s, batched {together:.3f} s; "
            f"{same} of {len(windows)} alignments the same, token probabilities within "
            f"{probabilities:.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
