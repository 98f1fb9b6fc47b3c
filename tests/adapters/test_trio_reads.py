"""The trio server's one reading task (``Reads``) on real sockets, with a recording engine.

The adapter scenarios run it end to end (``test_socket_adapters.py``); these pin
down the cases a client cannot time on purpose: two inputs in one round where
the first takes the second out, a connection that cannot be read, a readiness
with nothing to read, a reset and an end of stream.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import trio

from ikisocket_adapters._anyio_stream import _Stream
from ikisocket_adapters._trio_reads import EPOLL, ROUND, Reads

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(EPOLL is None, reason="the reads use epoll, which is Linux's"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


class Conn:
    """What Reads asks of a connection: whether it can be read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.can_read = True
        self.buffered = 0

    @property
    def blocked(self) -> int:
        """What Reads looks at before ``can_read`` (both 0: it may skip the property)."""
        return 0 if self.can_read else 1


class Engine:
    """Records what it is fed; ``then`` runs after each input, as a listener would."""

    def __init__(self) -> None:
        self.fed: list[tuple[str, bytes | None]] = []
        self.then: Callable[[Conn], None] | None = None
        #: What an input fed with ``take`` gets back (None: drain), and those inputs.
        self.taken: list[bytes] | None = None
        self.asked: list[str] = []
        self.deadlines_armed = 0

    def receive_data(
        self, conn: Conn, data: bytes, now: float, *, take: bool = False
    ) -> list[bytes] | None:
        self.fed.append((conn.name, data))
        if self.then is not None:
            self.then(conn)
        if not take:
            return None
        self.asked.append(conn.name)
        return self.taken

    def receive_eof(self, conn: Conn) -> None:
        self.fed.append((conn.name, None))


class Server:
    """The part of ``WebSocketServer`` that Reads uses."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.pumps = 0
        self.lost: list[tuple[Conn, BaseException]] = []
        self.written: list[tuple[Conn, list[bytes]]] = []
        self._seen = 0  # deadlines_armed at the last drain

    def pump(self) -> None:
        self.pumps += 1
        self._seen = self.engine.deadlines_armed

    def _write_taken(self, client: _Stream, conn: Conn, chunks: list[bytes]) -> None:
        self.written.append((conn, chunks))

    def _clock(self) -> float:
        return trio.current_time()

    def _lost(self, client: _Stream, conn: Conn, exc: BaseException) -> None:
        self.lost.append((conn, exc))


#: Every socket a test made, closed after it.
OPENED: list[socket.socket] = []


@asynccontextmanager
async def reading() -> AsyncIterator[tuple[Reads, Server]]:
    server = Server()
    reads = Reads(server)  # type: ignore[arg-type]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reads.run, trio)
            yield reads, server
            nursery.cancel_scope.cancel()
    finally:
        reads.close()
        while OPENED:
            OPENED.pop().close()


def peer(reads: Reads, name: str, sock: socket.socket | None = None) -> tuple[_Stream, Conn, Any]:
    """A connection on one end of a socket pair, added to ``reads``; the other end to write."""
    if sock is None:
        sock, other = socket.socketpair()
        OPENED.append(other)
    else:
        other = None
    OPENED.append(sock)
    sock.setblocking(False)
    client = _Stream(None, sock)  # type: ignore[arg-type]
    client.read_scope = anyio.CancelScope()
    conn = Conn(name)
    client.conn = conn  # type: ignore[assignment]
    reads.add(client, sock, conn)  # type: ignore[arg-type]
    return client, conn, other


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.001)


async def test_a_round_reads_each_ready_socket_once_then_drains_once() -> None:
    async with reading() as (reads, server):
        ends = [peer(reads, name)[2] for name in "abc"]
        for end in ends:
            end.sendall(b"one")  # all three wait before the task's next round
        await until(lambda: len(server.engine.fed) == 3)
        assert server.pumps == 1
        ends[1].sendall(b"two")
        await until(lambda: len(server.engine.fed) == 4)
        assert server.pumps == 2
    assert sorted(server.engine.fed[:3]) == [("a", b"one"), ("b", b"one"), ("c", b"one")]
    assert server.engine.fed[3] == ("b", b"two")


async def test_a_lone_input_writes_the_reply_the_engine_hands_back_with_no_drain() -> None:
    async with reading() as (reads, server):
        engine = server.engine
        client, a, end = peer(reads, "a")
        engine.taken = [b"reply"]
        end.sendall(b"one")
        await until(lambda: len(server.written) == 1)
        assert server.written == [(a, [b"reply"])]
        assert server.pumps == 0
        # A deadline armed since the last drain (an idle or ping timer): the drain runs too.
        engine.deadlines_armed = 1
        end.sendall(b"two")
        await until(lambda: server.pumps == 1)
        assert len(server.written) == 2
        # Output the engine keeps (other actions, other connections): the drain writes it.
        engine.taken = None
        end.sendall(b"three")
        await until(lambda: server.pumps == 2)
        # A write of its own still in flight: nothing may overtake it, so no take.
        client.sender = anyio.CancelScope()
        end.sendall(b"four")
        await until(lambda: server.pumps == 3)
        assert engine.asked == ["a", "a", "a"]
        assert len(server.written) == 2
        # Several inputs in one round: each is fed, and one drain writes every reply.
        client.sender = None
        engine.taken = [b"reply"]
        others = [peer(reads, name)[2] for name in "bc"]
        for other in (end, *others):
            other.sendall(b"five")
        await until(lambda: len(engine.fed) == 7)
        assert server.pumps == 4
        assert engine.asked == ["a", "a", "a"]


async def test_a_round_reads_at_most_round_sockets() -> None:
    async with reading() as (reads, server):
        names = [f"c{i}" for i in range(ROUND + 6)]
        ends = [peer(reads, name)[2] for name in names]
        for end in ends:
            end.sendall(b"x")
        await until(lambda: len(server.engine.fed) == len(names))
        assert server.pumps == 2  # the replies to the first ROUND waited for no more
    assert sorted(name for name, _ in server.engine.fed) == sorted(names)


async def test_a_connection_that_cannot_be_read_waits_until_resumed() -> None:
    async with reading() as (reads, server):
        client, conn, end = peer(reads, "a")

        def held(conn: Conn) -> None:
            conn.can_read = False  # an async listener started, say

        server.engine.then = held
        end.sendall(b"first")
        await until(lambda: client.paused)
        server.engine.then = None
        end.sendall(b"second")
        await trio.sleep(0.05)
        assert server.engine.fed == [("a", b"first")]  # not read while it cannot be
        reads.resume(client)  # too early: the connection still cannot be read
        await trio.sleep(0.05)
        assert client.paused
        assert server.engine.fed == [("a", b"first")]
        conn.can_read = True
        reads.resume(client)
        await until(lambda: len(server.engine.fed) == 2)
        assert server.engine.fed[1] == ("a", b"second")
        assert not client.paused


@pytest.mark.parametrize("how", ["removed", "paused"])
async def test_an_input_that_takes_another_out_of_its_round_is_not_followed_by_a_read(
    how: str,
) -> None:
    async with reading() as (reads, server):
        clients: dict[str, _Stream] = {}
        for name in "ab":
            client, _, end = peer(reads, name)
            clients[name] = client
            end.sendall(name.encode())  # both wait before the task's first round

        def take_out_the_other(conn: Conn) -> None:
            other = clients["b" if conn.name == "a" else "a"]
            if how == "removed":
                reads.remove(other)  # the server closed it, say
            else:
                assert other.conn is not None
                other.conn.can_read = False  # type: ignore[misc]
                reads.pause(other)

        server.engine.then = take_out_the_other
        await until(lambda: len(server.engine.fed) == 1)
        await trio.sleep(0.05)
        assert len(server.engine.fed) == 1
        first = server.engine.fed[0][0]
        other = clients["b" if first == "a" else "a"]
        if how == "paused":
            server.engine.then = None
            assert other.conn is not None
            other.conn.can_read = True  # type: ignore[misc]
            reads.resume(other)
            await until(lambda: len(server.engine.fed) == 2)
            assert server.engine.fed[1][1] == server.engine.fed[1][0].encode()
        else:
            assert other.fd == -1


async def test_readiness_with_nothing_to_read_reads_nothing() -> None:
    class Spurious(socket.socket):
        calls = 0

        def recv(self, *args: Any) -> bytes:
            Spurious.calls += 1
            raise BlockingIOError

    mine, end = socket.socketpair()
    sock = Spurious(fileno=mine.detach())
    OPENED.append(end)
    async with reading() as (reads, server):
        client, _, _ = peer(reads, "a", sock)
        end.sendall(b"x")  # readable, yet recv() says there is nothing
        await until(lambda: Spurious.calls > 0)
        reads.remove(client)
    assert server.engine.fed == []
    assert server.lost == []


async def test_the_end_of_the_stream_is_fed_and_ends_the_reading() -> None:
    async with reading() as (reads, server):
        client, _, end = peer(reads, "a")
        end.sendall(b"last")
        end.shutdown(socket.SHUT_WR)
        await until(lambda: server.engine.fed[-1:] == [("a", None)])
        assert server.engine.fed == [("a", b"last"), ("a", None)]
        assert client.fd == -1
        assert client.read_scope is not None
        assert client.read_scope.cancel_called


async def test_a_reset_connection_is_lost() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    end = socket.create_connection(listener.getsockname())
    mine, _ = listener.accept()
    listener.close()
    OPENED.append(end)
    async with reading() as (reads, server):
        client, conn, _ = peer(reads, "a", mine)
        # Closing with SO_LINGER 0 sends a reset: the server's next recv() fails.
        end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        end.close()
        await until(lambda: bool(server.lost))
    assert server.lost[0][0] is conn
    assert isinstance(server.lost[0][1], ConnectionResetError)
    assert client.fd == -1
