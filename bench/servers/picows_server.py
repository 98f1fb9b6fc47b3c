"""``picows``: a Cython WebSocket library with a callback (listener) API.

Fan-out loops over the other connections and calls ``transport.send`` on each.
"""

from __future__ import annotations

import asyncio

from _common import BACKLOG, HOST, MAX_SIZE, announce, parse_args, run_asyncio
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

CLIENTS: dict[WSTransport, None] = {}


class _Base(WSListener):
    def on_close(self, transport: WSTransport, frame: WSFrame) -> None:
        transport.send_close(frame.get_close_code())
        transport.disconnect()


class Echo(_Base):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            transport.send(kind, frame.get_payload_as_memoryview())
        elif kind is WSMsgType.CLOSE:
            self.on_close(transport, frame)


class FanOut(_Base):
    def on_ws_connected(self, transport: WSTransport) -> None:
        CLIENTS[transport] = None

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        CLIENTS.pop(transport, None)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            payload = frame.get_payload_as_bytes()
            for peer in CLIENTS:
                if peer is not transport:
                    peer.send(kind, payload)
        elif kind is WSMsgType.CLOSE:
            self.on_close(transport, frame)


async def main(mode: str) -> None:
    listener = Echo if mode == "echo" else FanOut

    def factory(request: WSUpgradeRequest) -> WSListener:
        return listener()

    server = await ws_create_server(
        factory, HOST, 0, max_frame_size=MAX_SIZE, enable_auto_ping=False, backlog=BACKLOG
    )
    announce(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = parse_args()
    run_asyncio(lambda: main(args.mode), args.loop)
