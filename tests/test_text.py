"""Pieces of recognised text joined as their script writes them (speechgw.text)."""

from __future__ import annotations

import pytest

from speechgw.text import as_whisper_writes, hesitation_only, join_text, separator


@pytest.mark.parametrize(
    ("pieces", "text"),
    [
        (["Hello there.", "How are you?"], "Hello there. How are you?"),
        ([" Hello there. ", "", "  ", " How are you?"], "Hello there. How are you?"),
        (["今天天气很好。", "我们去公园。"], "今天天气很好。我们去公园。"),
        (["今日はいい天気です", "散歩しましょう"], "今日はいい天気です散歩しましょう"),
        (["สวัสดีครับ", "ยินดีที่ได้รู้จัก"], "สวัสดีครับยินดีที่ได้รู้จัก"),
        (["我在用", "Python", "写代码"], "我在用Python写代码"),
        (["Он сказал:", "«Привет»"], "Он сказал: «Привет»"),
        (["안녕하세요.", "반갑습니다."], "안녕하세요. 반갑습니다."),  # Korean has spaces
        (["좋아요", "ㅋㅋ"], "좋아요 ㅋㅋ"),  # its jamo too
        (["好的，", "谢谢！"], "好的，谢谢！"),
        ([], ""),
    ],
)
def test_pieces_join_as_their_script_writes(pieces: list[str], text: str) -> None:
    assert join_text(pieces) == text


def test_deltas_add_up_to_the_joined_text() -> None:
    """OpenAI's stream=true deltas are each piece after its separator from the one before:
    a client that appends them shows what the whole answer says."""
    pieces = ["今天天气很好。", "Hello.", "World", "世界"]
    shown, deltas = "", []
    for piece in pieces:
        deltas.append(separator(shown, piece) + piece)
        shown = piece
    assert "".join(deltas) == join_text(pieces) == "今天天气很好。Hello. World世界"


def test_segments_as_whisper_writes_them() -> None:
    assert as_whisper_writes("Hello there.") == " Hello there."
    assert as_whisper_writes("今天天气很好。") == "今天天气很好。"
    assert as_whisper_writes("") == ""


def test_hesitations_alone_are_told_from_words() -> None:
    """What the streaming path holds back (``streaming.hesitation_replies``): an utterance
    Whisper wrote as hesitations only; never one with a word in it, nor an answer."""
    alone = ["Um.", " Um,", "Um. Um.", "Uh, um...", "umm", "Ähm.", "Euh..."]
    answers = ["Um, yes.", "Hmm.", "Mm-hmm.", "Uh-huh.", "So.", "I'm...", "", "..."]
    assert [text for text in alone + answers if hesitation_only(text)] == alone
