"""Unmask WebSocket payloads with numpy on hypercorn's WebSocket stack (wsproto).

Every frame a client sends is masked (RFC 6455 5.3: each byte XORed with a rotating 4-byte
key). wsproto unmasks in Python, with ``bytes.translate`` over four strided slices; here it is
one numpy XOR. For the batch protocol's 10 s WAV that took the GIL per request from 2.1 to
1.1 ms in hypercorn's WebSocket stack, and the gateway's GIL
time per audio second down by 18% (BENCHMARKS.md, "One interpreter's ceiling"). The bytes are
the same (``tests/test_parsers.py`` checks against wsproto's own on random keys and
chunkings); small payloads keep wsproto's code, which is as fast there.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
from wsproto import frame_protocol

__all__ = ["unmask_with_numpy"]

_LOGGER = logging.getLogger(__name__)
_SMALL = 1024
"""Below this many bytes numpy's call overhead eats the gain."""


@functools.cache  # once a process: a second call would wrap its own wrapper
def unmask_with_numpy() -> None:
    """Make wsproto's ``XorMaskerSimple`` in this process unmask large payloads with numpy."""
    masker = frame_protocol.XorMaskerSimple
    original = masker.process
    probe = masker(b"\x01\x02\x03\x04")
    if not isinstance(getattr(probe, "_masking_key", None), bytes | bytearray):
        _LOGGER.info("wsproto's masker has changed; WebSocket frames are unmasked by wsproto")
        return

    @functools.wraps(original)
    def process(self: Any, data: bytes | bytearray) -> bytearray:
        size = len(data)
        if size < _SMALL:
            return original(self, data)
        out = bytearray(data)
        key = bytes(self._masking_key)
        # four bytes at a time against the key read as one word (the same bytes in memory
        # either way, whatever the byte order), with no mask the payload's size to build:
        # 4.5 us against 6.4 for the 64 KB hypercorn reads at a time, 14 us against 300 for
        # 340 KB in one piece (``bench/small_costs.py``)
        whole = size // 4
        words = np.frombuffer(out, dtype=np.uint32, count=whole)
        np.bitwise_xor(words, np.frombuffer(key, dtype=np.uint32)[0], out=words)
        for i in range(4 * whole, size):  # the last 0-3 bytes
            out[i] ^= key[i % 4]
        turn = size % 4  # the next chunk continues with the key's next byte
        self._masking_key = key[turn:] + key[:turn]
        return out

    masker.process = process  # type: ignore[method-assign]
