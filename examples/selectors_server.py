"""A complete chat server on one thread: ``selectors`` plus the sans-IO engine.

Run ``python examples/selectors_server.py 8765`` (0 picks a free port). Listeners must be
plain functions: with no event loop to await ``async def`` ones, RunHandler is refused.
"""

from __future__ import annotations

import selectors
import socket
import sys
import time

from ikisocket_core import EVENT_MESSAGE, ConnectionState, EventPayload, Hub
from ikisocket_core.protocol import CloseTransport, Flush, RunHandler, Server, ServerConnection

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
hub = Hub()
hub.websocket("/ws", lambda kws: kws.broadcast(f"{kws.uuid[:8]} joined"))


@hub.on(EVENT_MESSAGE)
def chat(ep: EventPayload) -> None:  # a plain function, as this server requires
    ep.kws.emit(b"echo: " + ep.data, ep.kind)
    ep.kws.broadcast(ep.data, kind=ep.kind)  # to everyone else


class SelectorServer:
    def __init__(self, host: str, port: int) -> None:
        self.engine, self.sel = Server(hub), selectors.DefaultSelector()
        self.listener = socket.create_server((host, port))
        self.listener.setblocking(False)
        self.sel.register(self.listener, READ)
        self.unsent: dict[ServerConnection, bytes] = {}  # what a full socket buffer refused

    def run(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            for key, mask in self.sel.select(timeout):
                conn = key.data
                if key.fileobj is self.listener:
                    sock, addr = self.listener.accept()
                    sock.setblocking(False)
                    conn = self.engine.connect(now=time.monotonic(), client=addr[:2])
                    conn.transport = sock
                    self.sel.register(sock, READ, conn)
                    continue
                if mask & WRITE:  # room again: the rest, then what waited in the engine
                    self.write(conn, self.unsent.pop(conn) + b"".join(conn.take()))
                if mask & READ and conn.transport.fileno() >= 0:
                    try:
                        data = conn.transport.recv(65536)
                    except OSError:  # reset by the peer: as good as its end
                        data = b""
                    if data:
                        self.engine.receive_data(conn, data, now=time.monotonic())
                        if not conn.can_read:  # its output waits unread: stop reading it
                            self.sel.modify(conn.transport, WRITE, conn)
                    else:
                        self.engine.receive_eof(conn)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.engine.tick(now)  # timers: handshake, keepalive, closing
            for action in self.engine.drain_actions():
                if isinstance(action, Flush):
                    for conn in action.connections:  # a busy socket takes its bytes later
                        if conn not in self.unsent:
                            self.write(conn, b"".join(conn.take()))
                elif isinstance(action, CloseTransport):  # once what is unsent is written
                    self.write(action.connection, self.unsent.pop(action.connection, b""))
                elif isinstance(action, RunHandler):
                    raise RuntimeError("async def listeners need an event-loop adapter")

    def write(self, conn: ServerConnection, data: bytes) -> None:
        sock: socket.socket = conn.transport
        closed = conn.state is ConnectionState.CLOSED  # the engine asked to close it
        try:
            data = data[sock.send(data) :]
        except OSError as exc:  # a full buffer keeps the rest; a dead peer drops it
            data = data if isinstance(exc, BlockingIOError) else b""
        if data:  # read on meanwhile, unless its output is over max_queue (can_read)
            self.unsent[conn] = data
            self.sel.modify(sock, WRITE | (0 if closed or not conn.can_read else READ), conn)
        elif closed:
            self.drop(conn)
        else:
            self.sel.modify(sock, READ, conn)

    def drop(self, conn: ServerConnection) -> None:
        if conn.transport.fileno() >= 0:
            self.sel.unregister(conn.transport)
            conn.transport.close()
            self.engine.connection_lost(conn)


if __name__ == "__main__":
    server = SelectorServer("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8765)
    print(f"listening on ws://127.0.0.1:{server.listener.getsockname()[1]}/ws", flush=True)
    server.run()
