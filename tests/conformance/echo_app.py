"""The echo application Autobahn's fuzzingclient runs against: text as text, binary as binary.

Serve it with ``ikisocket run tests.conformance.echo_app:hub --max-message-size 16777216
--ping-interval 0`` (the runner script does this for every adapter).
"""

from __future__ import annotations

from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket

hub = Hub()


@hub.websocket("/")
def on_open(kws: Websocket) -> None:
    """Accept every connection on ``/``."""


@hub.on(EVENT_MESSAGE)
def echo(ep: EventPayload) -> None:
    """Send the message back as it came."""
    ep.kws.emit(ep.data, ep.kind)
