"""Run the Socket.IO chat on asyncio: ``python examples/socketio_chat/serve_asyncio.py``."""

from __future__ import annotations

import asyncio
import contextlib

from chat_server import hub, static

from ikisocket_adapters.asyncio import serve

if __name__ == "__main__":
    print("chat: open http://127.0.0.1:3000")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(hub, "127.0.0.1", 3000, static=static()))
