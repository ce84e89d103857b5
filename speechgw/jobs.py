"""What flows through the gateway: the AudioJob a protocol adapter builds, and the Transcript
a backend returns. These types know no protocol and no vendor."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "AudioJob",
    "Caller",
    "JobSpec",
    "Segment",
    "Task",
    "Transcript",
    "new_request_id",
]

SAMPLE_RATE = 16_000
"""Every sample that reaches a backend is 16 kHz mono float32 in [-1, 1]."""

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the API key's *name* (never the key) and the client's machine id."""

    key_name: str = "anonymous"
    machine_id: str = "unknown"


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything about a job except its audio: what routing and capability checks look at.

    ``language`` is an ISO 639-1 code (``"en"``); ``protocol`` names the adapter that built the
    job (``"batch"``, ``"streaming"``), so that routing rules can match on it.
    """

    language: str
    task: Task
    protocol: str
    caller: Caller = field(default_factory=Caller)
    postprocess: bool | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class AudioJob:
    """One unit of work: a whole recording (``audio``) or a live stream of chunks (``stream``).

    Exactly one of ``audio`` and ``stream`` is set. Both carry 16 kHz mono float32 samples.
    """

    spec: JobSpec
    audio: np.ndarray | None = None
    stream: AsyncIterator[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if (self.audio is None) == (self.stream is None):
            raise ValueError("an AudioJob carries either audio or a stream, not both or neither")

    @property
    def duration(self) -> float:
        """Seconds of audio in a whole-recording job (0.0 for a stream)."""
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Segment:
    """A timed piece of a transcript; times are seconds from the start of the job's audio."""

    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """A backend's answer. An empty ``text`` means "no speech", never "the backend failed":
    failures are raised as errors."""

    text: str
    segments: tuple[Segment, ...]
    language: str
    backend: str = ""


_request_counter = itertools.count(1)
_process_tag = os.urandom(3).hex()


def new_request_id() -> str:
    """A short id unique within this process and unlikely to repeat across restarts."""
    return f"{_process_tag}-{next(_request_counter):06d}"
