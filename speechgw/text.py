"""Recognised text put together from pieces (segments, windows, replies) as its script writes,
and told from hesitations alone (:func:`hesitation_only`).

Backends hand over pieces without the space before them (Whisper's segments stripped, Google's
results, a long recording's windows). Between two pieces of a script written with spaces
(Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Hangul...) a space goes; next to a piece of
a script written without them (Chinese, Japanese, Thai, Lao, Khmer, Burmese) none does:
"今天天气很好。" and "我们去公园。" make "今天天气很好。我们去公园。", as a client would show them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["HESITATIONS", "as_whisper_writes", "hesitation_only", "join_text", "separator"]

HESITATIONS = frozenset({"um", "umm", "uhm", "uh", "uhh", "erm", "äh", "ähm", "öhm", "euh"})
"""Sounds a speaker makes while thinking, as Whisper writes them: not words a client acts on.
Only these, as the services that strip hesitations do (Deepgram strips "uh" and "um");
"mm-hmm", "uh-huh" and "hmm" answer something and stay."""

_UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation: 。、「」
    (0x3040, 0x312F),  # Hiragana, Katakana, Bopomofo (not the Hangul jamo after them)
    (0x3190, 0x31FF),  # Kanbun, Bopomofo extended, CJK strokes, Katakana extensions
    (0x3400, 0x4DBF),  # CJK ideographs, extension A
    (0x4E00, 0x9FFF),  # CJK ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFF9F),  # full-width punctuation (，！？) and forms, half-width katakana
    (0xFFE0, 0xFFEF),  # full-width signs (￥)
    (0x20000, 0x3134F),  # CJK ideographs, extensions B to G
)


def _unspaced(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _UNSPACED)


def separator(before: str, after: str) -> str:
    """What goes between text ``before`` and the piece ``after``: one space, or nothing where
    either side is empty or its script is written without spaces."""
    if not before or not after or _unspaced(before[-1]) or _unspaced(after[0]):
        return ""
    return " "


_WORD = re.compile(r"[\w'-]+")
"""A word as hesitations are told from answers: "uh-huh" is one word, not "uh" and "huh"."""


def hesitation_only(text: str) -> bool:
    """Whether ``text`` holds words and all of them are :data:`HESITATIONS` ("Um.", "Uh, um...")."""
    words = _WORD.findall(text.lower())
    return bool(words) and all(word in HESITATIONS for word in words)


def join_text(pieces: Iterable[str]) -> str:
    """``pieces``, stripped, empty ones left out, joined as their script writes them."""
    parts: list[str] = []
    last = ""
    for piece in pieces:
        piece = piece.strip()
        if piece:
            parts += (separator(last, piece), piece)
            last = piece
    return "".join(parts)


def as_whisper_writes(piece: str) -> str:
    """``piece`` as Whisper writes a segment, and OpenAI's ``verbose_json`` shows it: after the
    space that parts it from the text before, unless its script is written without spaces, so
    that a client that concatenates segments gets the text."""
    if not piece or _unspaced(piece[0]):
        return piece
    return " " + piece
