"""The context a stream's utterances are decoded with, and the guard against a prompt the model
writes out instead of the audio: pure functions, checked on their own, then the decode again
without the prompt, on the real model."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from speechgw.backends.whisper import WhisperBackend, WhisperOptions, _echoes, _hotwords
from speechgw.backends.whisper_batching import GatedWhisperModel
from speechgw.backends.whisper_models import resolve_model

from speechgw.batching import PriorityGate
from speechgw.jobs import Caller, JobSpec
from speechgw.stream import _context
from tests import speech


def test_context_keeps_the_last_characters_from_a_whole_word() -> None:
    assert _context("", "Hello there.", 200) == "Hello there."
    assert _context("Hello there.", " How are you? ", 200) == "Hello there. How are you?"
    assert _context("one two three four", "five six", 13) == "four five six"
    assert _context("one two three four", "five six", 12) == "five six"  # never half a word
    assert _context("anything", "more", 0) == ""  # 0 turns context off


@dataclass
class Seg:
    text: str


def test_an_echo_of_the_prompt_is_recognised_and_new_words_are_not() -> None:
    prompt = "We need to buy bread, milk and eggs from the market."
    assert _echoes([Seg(" milk and eggs"), Seg(" from the market.")], prompt)
    assert not _echoes([Seg(" Eggs from the farm.")], prompt)
    assert not _echoes([Seg(" Market.")], prompt)  # one word may well be said again
    assert not _echoes([Seg(" milk bread")], prompt)  # not in that order there


def test_special_tokens_written_in_keywords_are_left_out() -> None:
    """A client's keywords go to Whisper as text; ``<|endoftext|>`` and the like written in
    them would become the control tokens themselves, so they are left out."""
    assert _hotwords(("Anthropic", "speechgw")) == "Anthropic, speechgw"
    assert _hotwords(("<|endoftext|>Anthropic", "<|startoftranscript|><|en|>")) == "Anthropic"
    assert _hotwords(("<|0.00|>",)) is None
    assert _hotwords(()) is None
    assert _hotwords(("a <b> c|d",)) == "a <b> c|d"  # only the markup of a special token


def test_an_echo_is_decoded_again_without_the_prompt(voices, caplog) -> None:
    """An utterance decoded with a prompt of exactly its own words writes that prompt out: the
    backend hears the echo and decodes the utterance again without it, and the answer still
    has the utterance's words (with the window's encoding kept for that second decode, which
    the next test counts)."""
    audio = speech.samples_16k(voices["children"])
    said = speech.SENTENCES["children"]
    spec = JobSpec("en", "transcribe", "google", Caller("k"), segmented=True, prompt=said)

    async def run() -> str:
        backend = WhisperBackend("w", WhisperOptions(model="tiny.en", cpu_threads=1))
        await backend.start()
        try:
            return (await backend.transcribe(audio, spec)).text
        finally:
            await backend.close()

    with caplog.at_level(logging.INFO, logger="speechgw.backends.whisper"):
        text = asyncio.run(run())
    assert "output echoed its prompt; decoded again without" in caplog.text
    assert speech.word_recall(said, text) >= 0.8, text


class _Encodes:
    """The real CTranslate2 model, its ``encode`` calls counted."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.encodes = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        self.encodes += 1
        return self.inner.encode(*args, **kwargs)


@pytest.mark.parametrize("kept", [True, False])
def test_a_window_decoded_again_is_encoded_once(voices, kept: bool) -> None:
    """Without batching, a job decoded twice from its start (its output echoed its prompt)
    runs the encoder for its window once, where the encoder is most of an utterance's decode
    on a CPU; the words are those of each decode alone. Outside the block, as before."""
    from faster_whisper import WhisperModel

    whisper = WhisperModel(resolve_model("tiny.en"), device="cpu", cpu_threads=1)
    audio = speech.samples_16k(voices["children"])
    said = speech.SENTENCES["children"]

    def words(prompt: str | None) -> str:
        segments, _ = whisper.transcribe(audio, language="en", initial_prompt=prompt)
        return "".join(s.text for s in segments).strip()

    alone = [words(said), words(None)]
    counted = _Encodes(whisper.model)
    gated = GatedWhisperModel(counted, PriorityGate(1))
    whisper.model = gated
    if kept:
        with gated.first_encoding_kept():
            assert [words(said), words(None)] == alone
        assert counted.encodes == 1
    else:
        assert [words(said), words(None)] == alone
        assert counted.encodes == 2
    other = speech.samples_16k(voices["train"])
    with gated.first_encoding_kept():  # other features: encoded anew
        next(whisper.transcribe(audio, language="en")[0])
        next(whisper.transcribe(other, language="en")[0])
    assert counted.encodes == (3 if kept else 4)
