"""The context a stream's utterances are decoded with, and the guard against a prompt the model
writes out instead of the audio: pure functions, checked on their own."""

from __future__ import annotations

from dataclasses import dataclass

from speechgw.backends.whisper import _echoes

from speechgw.stream import _context


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
