"""ikisocket behind uvicorn: ``ikisocket_adapters.asgi.asgi_app`` serving the usual hub.

The same hub as ``ikisocket_asyncio.py``; uvicorn does the upgrade and the framing
(``_uvicorn.py``), and the ASGI adapter's background service lives in the lifespan.
"""

from __future__ import annotations

from _common import MAX_SIZE, OURS, parse_args
from _uvicorn import serve
from ikisocket_asyncio import make_hub

from ikisocket_adapters.asgi import asgi_app

if __name__ == "__main__":
    args = parse_args()
    # The per-address and handshake limits are lifted as on our own servers (every client is
    # 127.0.0.1); compression, pings and the backlog are uvicorn's (_uvicorn.py).
    limits = {k: OURS[k] for k in ("max_connections_per_ip", "max_handshakes")}
    serve(asgi_app(make_hub(args.mode), max_message_size=MAX_SIZE, **limits), args.loop)
