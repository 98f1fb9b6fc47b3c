"""The anyio adapter under asyncio and trio, over real loopback sockets (``adapter_scenarios``)."""

from __future__ import annotations

import adapter_scenarios as scenarios
import pytest

from ikisocket_adapters.anyio import open_server, serve

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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


async def test_open_server_block() -> None:
    await scenarios.open_server_block(open_server)


async def test_unknown_option_is_refused() -> None:
    await scenarios.unknown_option_is_refused(serve)


async def test_backpressure_drop_spares_the_fast_reader() -> None:
    await scenarios.backpressure_drops_for_the_slow_reader(serve)


async def test_backpressure_close_drops_the_slow_reader() -> None:
    await scenarios.backpressure_closes_the_slow_reader(serve)


async def test_cancel_right_after_start() -> None:
    await scenarios.cancel_right_after_start(serve)


async def test_silent_client_hits_the_handshake_timeout() -> None:
    await scenarios.silent_client_hits_the_handshake_timeout(serve)


async def test_stuck_client_does_not_hold_the_shutdown() -> None:
    await scenarios.stuck_client_does_not_hold_the_shutdown(serve)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_served_from_a_thread(backend: str) -> None:
    scenarios.served_from_a_thread(serve, backend)


async def test_two_hundred_clients_broadcasting() -> None:
    await scenarios.two_hundred_clients_broadcasting(serve)


async def test_reset_mid_message_is_a_disconnect() -> None:
    await scenarios.reset_mid_message_is_a_disconnect(serve)


async def test_nothing_left_after_clients_leave() -> None:
    await scenarios.nothing_left_after_clients_leave(serve)
