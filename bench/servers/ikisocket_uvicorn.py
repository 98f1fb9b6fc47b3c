"""ikisocket behind uvicorn: ``ikisocket_adapters.asgi.asgi_app`` serving the usual hub.

The same hub as ``ikisocket_asyncio.py``; uvicorn does the upgrade and the framing
(``_uvicorn.py``), and the ASGI adapter's background service lives in the lifespan.
"""

from __future__ import annotations

from _common import MAX_SIZE, parse_args
from _uvicorn import serve
from ikisocket_asyncio import make_hub

from ikisocket_adapters.asgi import asgi_app

if __name__ == "__main__":
    args = parse_args()
    serve(asgi_app(make_hub(args.mode), max_message_size=MAX_SIZE), args.loop)
