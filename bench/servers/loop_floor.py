"""The event loop's own share of an echo: the least a server on that loop can do per message.

Not a WebSocket server anyone should run: it answers the upgrade of
``bench/callgrind.py``'s client and then takes every read to be one whole small
masked frame (the client sends one 32 B message at a time and waits for the
answer), unmasks it and writes it back unmasked, with none of the checks a real
server makes. What it costs per round trip is the loop's wake-up, a read and a
write, and a few lines of Python: the floor under any server on that loop.
``--loop trio`` serves its sockets as the trio adapter does (one task waiting
for an epoll set of them, see ``ikisocket_adapters._trio_reads``); ``--loop
trio-tasks`` as most trio servers do (a task per connection, ``await
sock.recv()`` then ``await sock.send()``)::

    python bench/callgrind.py loop_floor.py --loop asyncio
    python bench/callgrind.py loop_floor.py --loop trio
"""

from __future__ import annotations

import asyncio
import select
import socket
from typing import Any

from _common import HOST, announce, parse_args, raise_fd_limit, run_asyncio
from wsproto.utilities import generate_accept_token


def handshake(request: bytes) -> bytes:
    """The 101 answer to the client's upgrade request."""
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
    )


def answer(frame: bytes) -> bytes:
    """A small masked client frame (payload under 126 bytes), sent back unmasked."""
    size = frame[1] & 0x7F
    payload = int.from_bytes(frame[6 : 6 + size], "big") ^ int.from_bytes(
        frame[2:6] * 32, "big"
    ) >> (8 * (128 - size))
    return bytes((frame[0], size)) + payload.to_bytes(size, "big")


class _Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.upgraded = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if hasattr(transport, "max_size"):
            transport.max_size = 65536  # (as the asyncio adapter reads: _common.read_small)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self.transport.write(answer(data))
        else:
            self.upgraded = True
            self.transport.write(handshake(data))


async def serve_asyncio() -> None:
    server = await asyncio.get_running_loop().create_server(_Echo, HOST, 0, backlog=1024)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


async def serve_trio_epoll() -> None:
    import trio  # noqa: PLC0415 (optional)

    listener = trio.socket.socket()
    await listener.bind((HOST, 0))
    listener.listen(1024)
    epoll = select.epoll()
    peers: dict[int, socket.socket] = {}

    async def accept() -> None:
        while True:
            sock, _ = await listener.accept()
            request = await sock.recv(65536)
            await sock.send(handshake(request))
            plain = socket.socket(fileno=sock.detach())
            plain.setblocking(False)
            peers[plain.fileno()] = plain
            epoll.register(plain.fileno(), select.EPOLLIN)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        announce(listener.getsockname()[1])
        wait_readable, poll, fd = trio.lowlevel.wait_readable, epoll.poll, epoll.fileno()
        while True:
            await wait_readable(fd)
            for ready, _ in poll(0, 64):
                sock = peers[ready]
                data = sock.recv(65536)
                if data:
                    sock.send(answer(data))
                else:
                    epoll.unregister(ready)
                    del peers[ready]
                    sock.close()


async def serve_trio_tasks() -> None:
    import trio  # noqa: PLC0415 (optional)

    async def connection(stream: Any) -> None:
        sock = stream.socket
        await sock.send(handshake(await sock.recv(65536)))
        while data := await sock.recv(65536):
            await sock.send(answer(data))

    listeners = await trio.open_tcp_listeners(0, host=HOST, backlog=1024)
    announce(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(connection, listeners)


if __name__ == "__main__":
    args = parse_args(loops=("asyncio", "uvloop", "trio", "trio-tasks"))
    if args.loop.startswith("trio"):
        import trio

        raise_fd_limit()
        trio.run(serve_trio_epoll if args.loop == "trio" else serve_trio_tasks)
    else:
        run_asyncio(serve_asyncio, args.loop)
