"""Protocol adapters: one module per wire protocol, registered here by name.

To add one: write ``protocols/NAME.py`` with a class built as ``Class(gateway)`` whose
``routes()`` returns its starlette routes, and add a line below. An adapter holds only its wire
format: it calls one :class:`speechgw.gateway.Gateway` operation per request
(``run_recording``, or ``live_stream`` for a live stream) and renders the result or the typed
error in its own terms. It never sees a backend, an admission counter or the ledger.
"""

PROTOCOLS: dict[str, str] = {
    "batch": "speechgw.protocols.batch:BatchProtocol",
    "streaming": "speechgw.protocols.streaming:StreamingProtocol",
    "openai": "speechgw.protocols.openai:OpenAIProtocol",
    "realtime": "speechgw.protocols.realtime:RealtimeProtocol",
}
