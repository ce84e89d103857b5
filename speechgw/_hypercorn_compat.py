"""Refuse permessage-deflate on hypercorn.

hypercorn 0.18 accepts permessage-deflate whenever a client offers it, with no option to refuse
(upstream hypercorn issue #307). Browsers and the ``websockets`` client always offer it, and
deflating already-dense audio cut a null server's throughput about tenfold here (62 against 761
requests/s of 274 KB WAV frames). Until hypercorn grows an option, the handshake is made to
ignore the client's extension offer, which RFC 6455 allows: a server may decline any extension.
"""

from __future__ import annotations

import functools
from typing import Any

from hypercorn.protocol import ws_stream

__all__ = ["decline_websocket_compression"]

_PATCHED = "_speechgw_declines_extensions"


def decline_websocket_compression() -> None:
    """Make every hypercorn WebSocket handshake in this process decline all extensions."""
    handshake = ws_stream.Handshake
    if getattr(handshake, _PATCHED, False):
        return
    original_init = handshake.__init__

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.extensions = None  # as if the client had offered none

    handshake.__init__ = __init__  # type: ignore[method-assign]
    setattr(handshake, _PATCHED, True)
