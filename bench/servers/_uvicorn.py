"""Serve an ASGI application on uvicorn the same way for every ``*_uvicorn.py`` row.

uvicorn with its wsproto WebSocket implementation and its h11 HTTP one, the lifespan
on, keepalive pings and permessage-deflate off, the 1 MiB message limit and the listen
backlog of every other server, no access log. The socket is bound here (port 0) so the
port can be announced; it listens at once, and uvicorn accepts on it once the lifespan
has started.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from _common import BACKLOG, HOST, MAX_SIZE, announce, run_asyncio


def serve(app: Any, loop: str) -> None:
    """Run ``app`` on uvicorn on ``loop`` (``asyncio`` or ``uvloop``) until killed."""
    config = uvicorn.Config(
        app,
        http="h11",
        ws="wsproto",
        ws_max_size=MAX_SIZE,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        ws_per_message_deflate=False,
        lifespan="on",
        backlog=BACKLOG,
        access_log=False,
        log_level="warning",
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    # Listening before the announcement: connections made before uvicorn has run the
    # lifespan wait in the backlog instead of being refused.
    sock.listen(BACKLOG)
    announce(sock.getsockname()[1])
    server = uvicorn.Server(config)
    run_asyncio(lambda: server.serve(sockets=[sock]), loop)
