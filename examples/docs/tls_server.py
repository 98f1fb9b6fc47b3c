"""Serve ``wss://``: the adapters take a standard ``ssl.SSLContext``.

Run ``python examples/docs/tls_server.py cert.pem key.pem``.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

from ikisocket_adapters.asyncio import serve
from ikisocket_core import Hub, Websocket

hub = Hub()


@hub.websocket("/ws")
def on_open(kws: Websocket) -> None:
    kws.emit(f"hello over {kws.request.scheme}")  # "wss" behind TLS


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context for a PEM certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


if __name__ == "__main__":
    certfile, keyfile = sys.argv[1], sys.argv[2]
    asyncio.run(serve(hub, "0.0.0.0", 8443, ssl_context=tls_context(certfile, keyfile)))
