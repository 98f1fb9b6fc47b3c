"""The asyncio adapter (default loop and uvloop) over real loopback sockets.

The shared scenarios of ``adapter_scenarios`` expect an anyio-style ``serve``
that reports a handle through ``task_status``; the shim below gives the
asyncio adapter's :func:`start_server` that shape, so the very same scenarios
cover it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import adapter_scenarios as scenarios
import anyio
import anyio.abc
import pytest

from ikisocket_adapters.asyncio import WebSocketServer, start_server
from ikisocket_core import Hub
from ikisocket_core.protocol import Server

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "uvloop":
        return ("asyncio", {"use_uvloop": True})
    return "asyncio"


class Handle:
    """A started asyncio server, shaped like the trio/anyio adapters' handle."""

    def __init__(self, server: WebSocketServer) -> None:
        self.server = server
        self.hub: Hub = server.hub
        self.engine: Server = server.engine
        self.stopped = asyncio.Event()
        self.port = server.port  # kept: a closed server has no socket to ask

    def close(self) -> None:
        self.stopped.set()

    async def aclose(self) -> None:
        self.stopped.set()


async def serve(
    hub: Hub,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[Handle] = anyio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    server = await start_server(hub, host, port, **options)
    handle = Handle(server)
    task_status.started(handle)
    try:
        await handle.stopped.wait()
    finally:
        server.close()
        await asyncio.shield(server.wait_closed())


async def test_echo_text_and_binary() -> None:
    await scenarios.echo_text_and_binary(serve)


async def test_broadcast_reaches_everyone() -> None:
    await scenarios.broadcast_reaches_everyone(serve)


async def test_slow_async_listener_does_not_stall_other_connections() -> None:
    await scenarios.slow_listener_does_not_stall_others(serve)


async def test_plain_http_gets_426_on_a_route_and_404_elsewhere() -> None:
    await scenarios.plain_http_statuses(serve)


async def test_server_close_reaches_the_client_with_its_code() -> None:
    await scenarios.server_close_code(serve)


async def test_peer_close_fires_disconnect_and_forgets_the_connection() -> None:
    await scenarios.peer_close_fires_disconnect(serve)


async def test_tls() -> None:
    await scenarios.tls_echo(serve)


async def test_cancellation_closes_clients_with_1001() -> None:
    await scenarios.graceful_shutdown(serve)


async def test_close_and_aclose_end_serve() -> None:
    await scenarios.close_and_aclose(serve)


async def test_unknown_option_is_refused() -> None:
    await scenarios.unknown_option_is_refused(serve)


async def test_backpressure_drop_policy() -> None:
    await scenarios.backpressure_drops_for_the_slow_reader(serve)


async def test_backpressure_close_policy() -> None:
    await scenarios.backpressure_closes_the_slow_reader(serve)


async def test_cancel_right_after_start() -> None:
    await scenarios.cancel_right_after_start(serve)


async def test_silent_client_hits_the_handshake_timeout() -> None:
    await scenarios.silent_client_hits_the_handshake_timeout(serve)


async def test_stuck_client_does_not_hold_the_shutdown() -> None:
    await scenarios.stuck_client_does_not_hold_the_shutdown(serve)


async def test_two_hundred_clients_broadcasting() -> None:
    await scenarios.two_hundred_clients_broadcasting(serve)


async def test_reset_mid_message_is_a_disconnect() -> None:
    await scenarios.reset_mid_message_is_a_disconnect(serve)


async def test_nothing_left_after_clients_leave() -> None:
    await scenarios.nothing_left_after_clients_leave(serve)
