"""TLS on asyncio's default loop: a record-sized read buffer that grows for large messages.

``_asyncio_tls.start_tls`` replaces ``loop.start_tls`` so that a ``wss://``
connection does not hold asyncio's 256 KiB read buffer (the memory itself is
checked on every adapter by the scenario ``tls_connections_hold_small_read_buffers``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import adapter_scenarios as scenarios
import pytest
import websockets

from ikisocket_adapters import _asyncio_tls
from ikisocket_adapters._common import RECEIVE_SIZE
from ikisocket_adapters.asyncio import WebSocketServer, start_server

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        sys.version_info < (3, 11), reason="on 3.10 the loop negotiates TLS itself (ssl=)"
    ),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the default loop: uvloop negotiates TLS itself


def _tls_protocol(server: WebSocketServer) -> Any:
    """The asyncio TLS protocol under the server's one connection."""
    (proto,) = server.protocols
    return proto.transport._ssl_protocol  # type: ignore[union-attr]


async def _echo(client: Any, data: str) -> None:
    await client.send(data)
    assert await asyncio.wait_for(client.recv(), scenarios.TIMEOUT) == data


def test_this_python_has_the_protocol_the_module_knows() -> None:
    # Were it not so, start_tls would fall back to loop.start_tls and its 256 KiB buffer.
    assert _asyncio_tls.SIZED


@asynccontextmanager
async def _connected() -> AsyncIterator[tuple[WebSocketServer, Any]]:
    """An echo server on the default loop serving wss://, and one client connected to it."""
    server_ctx, client_ctx = scenarios.tls_contexts()
    server = await start_server(scenarios.echo_hub(), "127.0.0.1", 0, ssl_context=server_ctx)
    try:
        url = f"wss://127.0.0.1:{server.port}/ws"
        async with websockets.connect(
            url, ssl=client_ctx, max_size=None, compression=None
        ) as client:
            yield server, client
    finally:
        server.close()
        await server.wait_closed()


async def test_reads_a_record_at_a_time_until_a_read_comes_back_full() -> None:
    async with _connected() as (server, client):
        await _echo(client, "small")
        tls = _tls_protocol(server)
        assert isinstance(tls, _asyncio_tls._SSLProtocol)
        assert tls.max_size == _asyncio_tls.FIRST_READ
        assert len(tls.get_buffer(-1)) == _asyncio_tls.FIRST_READ
        await _echo(client, "z" * 400_000)
        assert tls.max_size == RECEIVE_SIZE
        assert len(tls.get_buffer(-1)) == RECEIVE_SIZE
        await _echo(client, "small again")


async def test_falls_back_to_the_loops_own_start_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_asyncio_tls, "SIZED", False)
    async with _connected() as (server, client):
        await _echo(client, "through loop.start_tls")
        assert not isinstance(_tls_protocol(server), _asyncio_tls._SSLProtocol)
