"""The anyio adapter's plain socket stream (``_RawSocketStream``), against a real TCP peer.

Under anyio's asyncio backend the adapter accepts plain sockets raw (its epoll set reads them)
and serves the rest of their life through this stream: the last writes, the half-close, the
lingering read and the close.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import anyio.abc
import pytest

from ikisocket_adapters._anyio_stream import _RawSocketStream

pytestmark = pytest.mark.anyio

LIMIT = 10.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback pair: the server side non-blocking, as the adapter accepts it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


async def test_receive_waits_for_data_then_reports_the_end_of_the_stream() -> None:
    with tcp_pair() as (server, client):
        stream = _RawSocketStream(server)
        assert stream.extra(anyio.abc.SocketAttribute.raw_socket) is server
        assert stream.extra(anyio.abc.SocketAttribute.remote_address) == client.getsockname()
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as tg:

                async def later() -> None:
                    await anyio.sleep(0.05)
                    client.sendall(b"hello")
                    client.shutdown(socket.SHUT_WR)

                tg.start_soon(later)
                assert await stream.receive() == b"hello"
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()


async def test_send_writes_everything_to_a_slow_reader_in_order_then_half_closes() -> None:
    payload = bytes(range(256)) * 16_384  # 4 MiB: far more than the socket buffers take at once
    with tcp_pair() as (server, client):
        stream = _RawSocketStream(server)
        client.setblocking(False)
        got = bytearray()
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as tg:

                async def read_slowly() -> None:
                    while True:
                        await anyio.sleep(0.002)
                        try:
                            chunk = client.recv(65_536)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            return
                        got.extend(chunk)

                tg.start_soon(read_slowly)
                await stream.send(payload)
                await stream.send_eof()
        assert bytes(got) == payload


async def test_closing_wakes_a_waiting_receive_and_refuses_more() -> None:
    with tcp_pair() as (server, _client):
        stream = _RawSocketStream(server)
        with anyio.fail_after(LIMIT):
            async with anyio.create_task_group() as tg:
                failed: list[BaseException] = []

                async def wait() -> None:
                    try:
                        await stream.receive()
                    except anyio.ClosedResourceError as exc:
                        failed.append(exc)

                tg.start_soon(wait)
                await anyio.sleep(0.05)
                await stream.aclose()
        assert len(failed) == 1
        await stream.aclose()  # (twice is fine)
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"x")


async def test_a_reset_connection_is_a_broken_resource() -> None:
    with tcp_pair() as (server, client):
        stream = _RawSocketStream(server)
        # Closing with unread input makes the kernel answer with a reset.
        server.send(b"unread")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        await anyio.sleep(0.05)
        with anyio.fail_after(LIMIT), pytest.raises(anyio.BrokenResourceError):
            await stream.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await stream.send_eof()
