"""The sample rates speechgw takes, from any protocol and any decoder.

A module of its own so that the FFmpeg decoder's process can check rates without importing
:mod:`speechgw.audio` (which loads SciPy's signal package: 1.2 s of a process's start).
"""

from __future__ import annotations

from .errors import InvalidAudio

__all__ = ["MAX_RATE", "MIN_RATE", "check_rate"]

MIN_RATE = 8_000
MAX_RATE = 384_000
"""The sample rates speechgw takes, from any protocol: below 8 kHz (telephony) no recogniser
has the speech band it needs; 384 kHz is the highest rate audio interfaces record at."""


def check_rate(rate: int, what: str = "the sample rate") -> None:
    """Refuse a rate outside :data:`MIN_RATE`..:data:`MAX_RATE`.

    Raises:
        InvalidAudio: naming ``what`` and the accepted range.
    """
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidAudio(f"{what} is {rate} Hz; {MIN_RATE} to {MAX_RATE} Hz are accepted")
