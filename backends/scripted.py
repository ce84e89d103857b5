"""A backend that recognises nothing, at once, or as scripted in its config.

It measures the protocol layer alone (the protocol-ceiling benchmark) and drives protocol edge
cases without a model: a fixed text, a delay, or a failure. Selected in config like any other
backend (``type: scripted``; the old name ``'null'``, quoted, still works); it never touches a
patched function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import anyio
import numpy as np

from speechgw.backend import Backend, Capabilities
from speechgw.config import NonNegative
from speechgw.errors import BackendUnavailable
from speechgw.jobs import SAMPLE_RATE, JobSpec, Segment, Transcript

__all__ = ["ScriptedBackend", "ScriptedOptions"]


@dataclass(frozen=True, slots=True)
class ScriptedOptions:
    """Args:
    text: what every transcript says (empty: "no speech").
    detected_language: the language it "hears" in a job that names none.
    delay_seconds: how long each job takes.
    interim_delay_seconds: how long an interim decode takes (null: ``delay_seconds``); an
        interim slower than its final shows what the stream does with one that comes late.
    fail: ``unavailable`` raises backend_unavailable, ``crash`` an unexpected exception.
    """

    text: str = ""
    detected_language: str = "en"
    delay_seconds: Annotated[float, NonNegative] = 0.0
    interim_delay_seconds: Annotated[float | None, NonNegative] = None
    fail: Literal["", "unavailable", "crash"] = ""


class ScriptedBackend(Backend):
    Options = ScriptedOptions
    options: ScriptedOptions

    _CAPABILITIES = Capabilities(
        languages=None, tasks=frozenset({"transcribe", "translate"}), detects_language=True
    )

    @property
    def capabilities(self) -> Capabilities:
        # one object, as the real backends keep theirs: the stream reads it per chunk
        return self._CAPABILITIES

    async def transcribe(self, audio: np.ndarray, spec: JobSpec) -> Transcript:
        delay = self.options.delay_seconds
        if spec.interim and self.options.interim_delay_seconds is not None:
            delay = self.options.interim_delay_seconds
        if delay:
            await anyio.sleep(delay)
        if self.options.fail == "unavailable":
            raise BackendUnavailable(f"backend {self.name!r} is unavailable (scripted)")
        if self.options.fail == "crash":
            raise RuntimeError("scripted crash")
        text = self.options.text
        segments = (Segment(text, 0.0, round(len(audio) / SAMPLE_RATE, 3)),) if text else ()
        language = spec.language or self.options.detected_language
        return Transcript(text=text, segments=segments, language=language, backend=self.name)
