"""Segments of a recording to its client as they are recognised, before the whole is done.

A client that asked for text as it comes (OpenAI's ``stream=true``) gets each segment the
moment a backend reports it (:meth:`speechgw.backend.Backend.transcribe_progressive`), and
whatever was not reported when the transcript is complete. The :class:`SegmentRelay` between
the two keeps the promise a client relies on, whichever backend served it: each stretch of
audio is shown once, in order, even when a backend fails halfway and the route's next backend
starts the recording again (its segments over audio already shown are skipped).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable

from .jobs import Segment, Transcript

__all__ = ["OnSegment", "SegmentRelay"]

OnSegment = Callable[[Segment], None]
"""Where a backend reports a segment it has recognised; may be called from any thread."""


class SegmentRelay:
    """Hands ``deliver`` each new segment on the event loop, in the order of the audio.

    A segment is new when its middle lies after the end of the last one delivered: a backend
    reports its segments in order, and a fallback backend that hears the recording again from
    the start repeats those the client already has, with slightly different times. Call it
    from any thread; created on the event loop.
    """

    def __init__(self, deliver: OnSegment) -> None:
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._until = -math.inf
        self._finished = False

    def __call__(self, segment: Segment) -> None:
        if threading.get_ident() == self._loop_thread:
            self._take(segment)
        else:
            self._loop.call_soon_threadsafe(self._take, segment)

    def finish(self, transcript: Transcript) -> None:
        """The transcript is complete: deliver its segments the backend did not report (all of
        them, for a backend that does not report as it goes); nothing is delivered after."""
        for segment in transcript.segments:
            self._take(segment)
        self._finished = True

    def _take(self, segment: Segment) -> None:
        if self._finished or not segment.text:
            return
        if (segment.start + segment.end) / 2 < self._until:
            return  # audio the client has been given the words of already
        self._until = max(self._until, segment.end)
        self._deliver(segment)
