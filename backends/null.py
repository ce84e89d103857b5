"""A backend that recognises nothing, at once.

It measures the protocol layer alone (the protocol-ceiling benchmark) and lets protocol edge
cases be tested without a model. Selected in config like any other: ``type: null``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechgw.backend import Backend, Capabilities
from speechgw.jobs import JobSpec, Transcript

__all__ = ["NullBackend", "NullOptions"]


@dataclass(frozen=True, slots=True)
class NullOptions:
    text: str = ""
    """What every transcript says; empty by default (no speech)."""


class NullBackend(Backend):
    Options = NullOptions
    options: NullOptions

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(languages=None, tasks=frozenset({"transcribe", "translate"}))

    async def transcribe(self, audio: np.ndarray, spec: JobSpec) -> Transcript:
        return Transcript(text=self.options.text, segments=(), language=spec.language,
                          backend=self.name)
