"""What the sans-IO engine costs per message, with no sockets and no event loop.

::

    python bench/micro.py

The socket benchmark (``run.py``) measures whole servers on a shared machine,
where the scheduler adds noise; this one feeds frames straight into
``ikisocket_core.protocol.Server`` and takes the bytes it writes, in one
process, and reports CPU microseconds per message (the best of a few rounds).
It also times the pieces of the path on their own (wsproto's parsing and
framing, the hub's dispatch), so a change to the core can be judged in
seconds. The numbers are a floor for what a server adds on top: a socket
server also pays for the event loop and two system calls per message.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable

from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import TextMessage
from wsproto.frame_protocol import FrameProtocol

from ikisocket_core import EventPayload, Hub
from ikisocket_core._reader import FrameReader
from ikisocket_core.protocol import Flush, Server, ServerConnection

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "servers"))

from ikisocket_asyncio import make_hub

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def best_of(fn: Callable[[], int], rounds: int) -> float:
    """CPU microseconds per unit of work: ``fn`` returns how many units it did."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        units = fn()
        best = min(best, (time.process_time() - start) / units * 1e6)
    return best


def client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a browser sends it."""
    return bytes(FrameProtocol(client=True, extensions=[]).send_data(payload.decode()))


def make_server(mode: str) -> Server:
    """The engine around the very hub the socket benchmark serves (one definition of it)."""
    # Every connection here comes from 127.0.0.1:1: lift the per-address limit, as the socket
    # benchmark's servers do, or the fan-out's receivers past it are refused (503).
    return Server(
        make_hub(mode), compression=False, ping_interval=None, max_connections_per_ip=None
    )


def open_connection(server: Server) -> ServerConnection:
    conn = server.connect(now=0.0, client=("127.0.0.1", 1))
    server.receive_data(conn, HANDSHAKE)
    drain(server)
    return conn


def drain(server: Server) -> int:
    """Do what an adapter does after an input: take every connection's bytes."""
    written = 0
    for action in server.drain_actions():
        if isinstance(action, Flush):
            for conn in action.connections:
                written += len(conn.take())
    return written


def engine_echo(size: int, batch: int, count: int) -> Callable[[], int]:
    server = make_server("echo")
    conn = open_connection(server)
    data = client_frame(b"x" * size) * batch

    def run() -> int:
        for _ in range(count):
            server.receive_data(conn, data)
            drain(server)
        return count * batch

    return run


def engine_fan_out(receivers: int, batch: int, count: int) -> Callable[[], int]:
    server = make_server("broadcast")
    for _ in range(receivers):
        open_connection(server)
    sender = open_connection(server)
    data = client_frame(b"b" * 32) * batch

    def run() -> int:
        for _ in range(count):
            server.receive_data(sender, data)
            drain(server)
        return count * batch * receivers

    return run


def wsproto_parse(size: int, count: int) -> Callable[[], int]:
    ws = WSConnection(ConnectionType.SERVER)
    data = client_frame(b"x" * size)

    def run() -> int:
        for _ in range(count):
            ws.receive_data(data)
            for _event in ws.events():
                pass
        return count

    return run


def wsproto_frame(size: int, count: int) -> Callable[[], int]:
    plain = FrameProtocol(client=False, extensions=[])
    payload = b"x" * size

    def run() -> int:
        for _ in range(count):
            bytes(plain.send_data(payload.decode("utf-8")))
        return count

    return run


def header_frame(size: int, count: int) -> Callable[[], int]:
    """The unmasked server frame built by hand (what wsproto's framing could be replaced by)."""
    payload = b"x" * size

    def run() -> int:
        for _ in range(count):
            n = len(payload)
            if n < 126:
                bytes((0x81, n)) + payload
            else:
                bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
        return count

    return run


def parse_by_hand(size: int, count: int) -> Callable[[], int]:
    """One complete masked frame parsed with int arithmetic (a possible fast path)."""
    data = client_frame(b"x" * size)

    def run() -> int:
        for _ in range(count):
            buf = data
            n = buf[1] & 0x7F
            at = 2
            if n == 126:
                n = int.from_bytes(buf[2:4], "big")
                at = 4
            elif n == 127:
                n = int.from_bytes(buf[2:10], "big")
                at = 10
            mask = buf[at : at + 4]
            body = buf[at + 4 : at + 4 + n]
            key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
            payload = (int.from_bytes(body, "little") ^ key).to_bytes(n, "little")
            if not payload.isascii():
                payload.decode("utf-8")  # text must be valid UTF-8
        return count

    return run


def reader_parse(size: int, count: int) -> Callable[[], int]:
    """Our own receive path (``_reader.FrameReader``), as the engine drives it per read."""
    reader = FrameReader(1024 * 1024)
    data = client_frame(b"x" * size)

    def run() -> int:
        for _ in range(count):
            reader.feed(data)
            while reader.next() is not None:
                pass
        return count

    return run


def hub_echo(count: int) -> Callable[[], int]:
    server = make_server("echo")
    conn = open_connection(server)
    kws = conn.kws
    assert kws is not None
    hub = server.hub
    payload = b"x" * 32

    def run() -> int:
        for _ in range(count):
            hub.receive_message(kws, payload)
            hub.drain_actions()
        return count

    return run


SIO_HANDSHAKE = HANDSHAKE.replace(b"/ws ", b"/socket.io/?EIO=4&transport=websocket ")


def sio_session(server: Server) -> ServerConnection:
    """A Socket.IO session joined to ``/``."""
    conn = server.connect(now=0.0, client=("127.0.0.1", 1))
    server.receive_data(conn, SIO_HANDSHAKE)
    server.receive_data(conn, client_frame(b"40"))
    drain(server)
    return conn


def sio_server() -> tuple[Server, ServerConnection]:
    """The hub of ``bench/socketio.py`` (``echo`` answers its ack), one session joined to ``/``."""
    hub = Hub()
    hub.socketio(namespaces=["/chat"])
    hub.on("echo", namespace="/chat")(lambda ep: ep.args[0])

    @hub.on("echo")
    def echo(ep: EventPayload) -> object:
        return ep.args[0]

    @hub.on("fan")
    def fan(ep: EventPayload) -> None:
        hub.to("r").emit_event("fan", ep.args[0])

    server = Server(hub, compression=False, ping_interval=None, max_connections_per_ip=None)
    return server, sio_session(server)


def sio_echo(batch: int, count: int, namespace: str = "") -> Callable[[], int]:
    """A Socket.IO ``echo`` event with an ack id, answered by its ``ACK``: the whole engine."""
    server, conn = sio_server()
    if namespace:
        server.receive_data(conn, client_frame(b"40" + namespace.encode() + b","))
        drain(server)
    head = b"42" + (namespace.encode() + b"," if namespace else b"")
    data = b"".join(
        client_frame(head + b"%d" % i + b'["echo","' + b"x" * 32 + b'"]') for i in range(batch)
    )
    server.receive_data(conn, data)
    written = b"".join(
        b"".join(c.take())
        for a in server.drain_actions()
        if isinstance(a, Flush)
        for c in a.connections
    )
    assert b"43" + head[2:] + b'0["' + b"x" * 32 in written, written  # the ack came back

    def run() -> int:
        for _ in range(count):
            server.receive_data(conn, data)
            drain(server)
        return count * batch

    return run


def sio_fan_out(receivers: int, count: int) -> Callable[[], int]:
    """A Socket.IO ``fan`` event re-emitted to a room of ``receivers`` sessions (per delivery)."""
    server, sender = sio_server()
    for _ in range(receivers):
        sio_session(server)
    for kws in list(server.hub._conns.values()):
        kws.join("r")
    frame = client_frame(b'42["fan","' + b"b" * 32 + b'"]')

    def run() -> int:
        for _ in range(count):
            server.receive_data(sender, frame)
            drain(server)
        return count * (receivers + 1)

    return run


def wsproto_text(size: int, count: int) -> Callable[[], int]:
    """A server-side wsproto ``send`` of a text message (the compressed path's framing)."""
    ws = WSConnection(ConnectionType.SERVER)
    text = "x" * size

    def run() -> int:
        for _ in range(count):
            ws.send(TextMessage(data=text))
        return count

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts")
    p.add_argument("--only", default="", help="run only the cases whose label holds this text")
    args = p.parse_args(argv)
    n = max(1, int(2000 * args.scale))
    cases: list[tuple[str, str, Callable[[], int]]] = [
        ("engine", "echo, 32 B, one frame per read", engine_echo(32, 1, n)),
        ("engine", "echo, 4 KiB, one frame per read", engine_echo(4096, 1, n)),
        ("engine", "echo, 32 B, 64 frames per read", engine_echo(32, 64, n // 32)),
        (
            "engine",
            "fan-out to 1000, one frame per read (per delivery)",
            engine_fan_out(1000, 1, n // 100),
        ),
        (
            "engine",
            "fan-out to 1000, 100 frames per read (per delivery)",
            engine_fan_out(1000, 100, 1),
        ),
        ("socketio", "acked echo, 32 B, one frame per read", sio_echo(1, n)),
        ("socketio", "acked echo in /chat, 32 B, one frame per read", sio_echo(1, n, "/chat")),
        ("socketio", "acked echo, 32 B, 64 frames per read", sio_echo(64, n // 32)),
        (
            "socketio",
            "fan-out to 1000, one frame per read (per delivery)",
            sio_fan_out(1000, n // 100),
        ),
        ("part", "wsproto: parse a masked 32 B text frame", wsproto_parse(32, n)),
        ("part", "wsproto: parse a masked 4 KiB text frame", wsproto_parse(4096, n)),
        ("part", "by hand: parse a masked 32 B text frame", parse_by_hand(32, n)),
        *(
            [
                ("part", "reader: parse a masked 32 B text frame", reader_parse(32, n)),
                ("part", "reader: parse a masked 4 KiB text frame", reader_parse(4096, n)),
            ]
            if importlib.util.find_spec("ikisocket_core._reader")
            else []  # a tree from before the reader (PYTHONPATH=...baseline.../src)
        ),
        ("part", "by hand: parse a masked 4 KiB text frame", parse_by_hand(4096, n)),
        ("part", "wsproto: frame 32 B of text (FrameProtocol.send_data)", wsproto_frame(32, n)),
        ("part", "wsproto: frame 4 KiB of text (FrameProtocol.send_data)", wsproto_frame(4096, n)),
        ("part", "by hand: frame 32 B (header bytes + payload)", header_frame(32, n)),
        ("part", "by hand: frame 4 KiB (header bytes + payload)", header_frame(4096, n)),
        ("part", "wsproto: Connection.send(TextMessage), 32 B", wsproto_text(32, n)),
        ("part", "hub: receive_message + emit + drain_actions, 32 B", hub_echo(n)),
    ]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Python {sys.version.split()[0]}; load average {load}; best of {args.rounds} rounds")
    print()
    print("| what | CPU us per message |")
    print("|---|---:|")
    for group, label, fn in cases:
        if args.only not in f"{group}: {label}":
            continue
        fn()  # warm up
        cost = best_of(fn, args.rounds)
        # Three decimals below one microsecond: a fan-out delivery costs about 0.1.
        print(
            f"| {group}: {label} | {cost:.3f} |"
            if cost < 1
            else f"| {group}: {label} | {cost:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
