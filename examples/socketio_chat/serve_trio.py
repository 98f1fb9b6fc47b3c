"""Run the Socket.IO chat on trio: ``python examples/socketio_chat/serve_trio.py``."""

from __future__ import annotations

from functools import partial

import trio
from chat_server import hub, static

from ikisocket_adapters.trio import serve

if __name__ == "__main__":
    print("chat: open http://127.0.0.1:3000")
    trio.run(partial(serve, hub, "127.0.0.1", 3000, static=static()))
