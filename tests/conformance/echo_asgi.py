"""The Autobahn echo app behind an ASGI server: ``uvicorn tests.conformance.echo_asgi:app``."""

from __future__ import annotations

from tests.conformance.echo_app import hub

from ikisocket_adapters.asgi import asgi_app

#: The 9.* cases send messages of up to 16 MiB.
app = asgi_app(hub, max_message_size=16 * 1024 * 1024)
