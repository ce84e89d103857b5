"""A recording in no named language, heard window by window: one that changes language is
written in each, not carried on in the first.

faster-whisper detects a recording's language once, from its first 30 s window, and decodes
every later window in it, each on the text before it. A meeting that goes from English to
German came back with the German translated into English, or left out: of the 30 s of German in
``multilingual.mp3``, base wrote one English sentence. Its ``multilingual=True`` detects each
window's language but keeps the earlier text as the prompt (German still came out as English),
and with ``condition_on_previous_text=False`` as well it wrote both halves but lost words of
one language's hard recordings (a 1949 interview, quieter, in a room, under a hiss: 11-23 %
more errors), where a window's detection is unsure and wrong (Welsh, Breton at 0.32-0.45) and
the earlier text is what holds the decode together. So here a window changes the language only
when its detection is sure (:data:`SWITCH_PROBABILITY`; the switches measured were 0.91 and
up), and only that window is decoded without the text before it, which is in the other
language. A recording that stays in one language gets the prompts it got before (BENCHMARKS.md, "A
recording in no named language").
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from faster_whisper import WhisperModel

__all__ = ["SWITCH_PROBABILITY", "WindowLanguageModel"]

SWITCH_PROBABILITY = 0.8
"""How sure the detection of a window's language must be to change the language from the
window before's. Measured with base: a real change (English to German) 0.91-1.00; an English
window of a hard recording heard as another language 0.32-0.45."""


class WindowLanguageModel(WhisperModel):
    """faster-whisper's :class:`WhisperModel`, which, inside :meth:`hearing_each_window`, hears
    each window's language before it decodes it.

    faster-whisper decodes a recording's windows one after another in the thread that consumes
    its segments, encoding each window (:meth:`encode`) just before asking for its prompt
    (:meth:`get_prompt`); the window's encoding is kept for that thread in between.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thread = threading.local()

    @contextlib.contextmanager
    def hearing_each_window(self, enabled: bool = True) -> Iterator[None]:
        """Within this block, the windows this thread decodes are heard for their language
        (consume the segments inside it)."""
        state = self._thread
        state.hearing, state.encoded = enabled, None
        try:
            yield
        finally:
            state.hearing, state.encoded = False, None

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        encoded = super().encode(*args, **kwargs)
        if getattr(self._thread, "hearing", False):
            self._thread.encoded = encoded
        return encoded

    def get_prompt(
        self, tokenizer: Any, previous_tokens: list[int], *args: Any, **kwargs: Any
    ) -> list[int]:
        encoded = getattr(self._thread, "encoded", None)
        if encoded is not None and tokenizer.language is not None:
            self._thread.encoded = None
            token, probability = self.model.detect_language(encoded)[0][0]
            language = token[2:-2]  # "<|de|>"
            if language != tokenizer.language_code and probability >= SWITCH_PROBABILITY:
                tokenizer.language = tokenizer.tokenizer.token_to_id(token)
                tokenizer.language_code = language
                previous_tokens = []  # the other language's text
        return super().get_prompt(tokenizer, previous_tokens, *args, **kwargs)
