"""Protocol adapters: one module per wire protocol, registered here by name.

To add one: write ``protocols/NAME.py`` with a class that has ``routes(gateway)`` returning
starlette routes, and add a line below. Adapters talk to the core only through
:class:`speechgw.gateway.Gateway`; they never see a backend.
"""

PROTOCOLS: dict[str, str] = {
    "batch": "speechgw.protocols.batch:BatchProtocol",
    "streaming": "speechgw.protocols.streaming:StreamingProtocol",
}
