"""The examples the documentation shows (``examples/docs/``) do what the pages say.

Unit-level examples run under ``TestClient`` or the in-memory protocol engine;
the adapter, TLS, CLI and shutdown examples run on real sockets over
127.0.0.1 with the ``websockets`` client, every wait bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "docs"
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(ROOT / "tests" / "adapters"))

import adapter_scenarios  # noqa: E402
import auth_app  # noqa: E402
import backpressure  # noqa: E402
import error_handling  # noqa: E402
import event_order  # noqa: E402
import greeter_tests  # noqa: E402
import quickstart  # noqa: E402
import rooms_app  # noqa: E402
import tls_server  # noqa: E402
from custom_adapter import SelectorServer  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402
from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection  # noqa: E402
from wsproto.events import Request as WSRequest  # noqa: E402

from ikisocket_adapters.asyncio import start_server  # noqa: E402
from ikisocket_core import BINARY, EVENT_MESSAGE, EventPayload, Hub  # noqa: E402
from ikisocket_core.protocol import CloseTransport, Server, ServerConnection  # noqa: E402
from ikisocket_core.testing import TestClient, WebSocketRejected  # noqa: E402

#: Every wait on a socket or a process is bounded by this many seconds.
WAIT = 10.0


# -- index page and tutorial-sized examples ------------------------------------------------


def test_quickstart_welcomes_relays_and_announces_leaving() -> None:
    client = TestClient(quickstart.hub)
    with client.websocket_connect("/ws/alice") as alice:
        assert alice.receive_text() == "welcome, alice"
        with client.websocket_connect("/ws/bob") as bob:
            assert bob.receive_text() == "welcome, bob"
            assert alice.receive_text() == "bob joined"
            bob.send_text("hi")
            assert alice.receive_text() == "bob: hi"
            assert bob.receive_text() == "bob: hi"
        assert alice.receive_text() == "bob left"
        assert alice.pending == 0


GREETER_TESTS = sorted(n for n in dir(greeter_tests) if n.startswith("test_"))


def test_the_testing_howto_has_its_tests() -> None:
    assert len(GREETER_TESTS) >= 6


@pytest.mark.parametrize("name", GREETER_TESTS)
def test_greeter_example_tests_pass(name: str) -> None:
    test: Callable[[], None] = getattr(greeter_tests, name)
    test()


def test_rooms_reach_members_only_and_list_them() -> None:
    client = TestClient(rooms_app.hub)
    with (
        client.websocket_connect("/chat/ann") as ann,
        client.websocket_connect("/chat/ben") as ben,
        client.websocket_connect("/chat/cid") as cid,
    ):
        ann.send_json({"join": "go"})
        assert ann.receive_text() == "in #go: ann"
        ben.send_json({"join": "go"})
        assert ann.receive_text() == "ben joined #go"
        assert ben.receive_text() == "in #go: ann, ben"
        assert rooms_app.members("go") == ["ann", "ben"]

        ben.send_json({"room": "go", "text": "hello"})
        assert ann.receive_text() == "#go ben: hello"
        assert ben.receive_text() == "#go ben: hello"
        cid.send_json({"room": "go", "text": "let me in"})
        assert cid.receive_text() == "join #go first"
        assert cid.pending == 0
        assert ann.pending == 0

        ann.send_json({"leave": "go"})
        assert ben.receive_text() == "ann left #go"
        assert ann.pending == 0  # no longer a member
        ben.close()
        assert rooms_app.members("go") == []  # a connection leaves its rooms when it ends


def test_authorization_refuses_without_token_and_names_the_connection() -> None:
    client = TestClient(auth_app.hub)
    with pytest.raises(WebSocketRejected) as refused:
        client.websocket_connect("/ws")
    assert refused.value.status == 401

    with pytest.raises(WebSocketRejected) as foreign:
        client.websocket_connect("/ws?token=t-alice", origin="https://evil.example")
    assert foreign.value.status == 403

    with client.websocket_connect("/ws", headers={"authorization": "Bearer t-alice"}) as alice:
        assert alice.uuid == "alice"
        assert alice.receive_text() == "signed in as alice"
        with pytest.raises(WebSocketRejected) as twice:
            client.websocket_connect("/ws?token=t-alice")
        assert twice.value.status == 409
        with client.websocket_connect("/ws?token=t-bob", origin="https://chat.example.com") as bob:
            assert bob.uuid == "bob"
            auth_app.hub.emit_to("alice", "from the server")
            assert alice.receive_text() == "from the server"


def test_event_order_when_the_peer_leaves() -> None:
    event_order.seen.clear()
    client = TestClient(event_order.hub)
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hello")
    # The exact record docs/explanation/events.md shows.
    assert event_order.seen == [
        "route callback (alive=True)",
        "connect (routable=True)",
        "message hello (routable=True)",
        "disconnect ConnectionClosed: connection closed with code 1000 (routable=False)",
    ]


def test_event_order_when_the_server_closes_and_a_listener_fails() -> None:
    event_order.seen.clear()
    client = TestClient(event_order.hub)
    with client.websocket_connect("/ws") as ws:
        ws.send_text("boom")
        assert not ws.closed  # a failing listener does not end the connection
        ws.send_text("kick")
        assert ws.close_code == 4000
    assert event_order.seen == [
        "route callback (alive=True)",
        "connect (routable=True)",
        "message boom (routable=True)",
        "error RuntimeError: a listener failed (routable=True)",
        "message kick (routable=True)",
        "close ConnectionClosed: connection closed with code 4000: kicked (routable=False)",
    ]


def test_error_handling_tells_listener_bugs_and_vanished_peers_apart() -> None:
    error_handling.counts.clear()
    client = TestClient(error_handling.hub)
    with client.websocket_connect("/ws") as ws:
        ws.send_text("12")
        ws.send_text("twelve")  # the listener's int() fails
        assert not ws.closed
        ws.abort()
    assert error_handling.counts == {"listener failed": 1, "vanished": 1}


def test_error_handling_sees_protocol_errors_then_the_disconnect() -> None:
    error_handling.counts.clear()
    server = Server(error_handling.hub)
    client = WSConnection(ConnectionType.CLIENT)
    conn = server.connect(now=0.0)
    server.receive_data(conn, client.send(WSRequest(host="localhost", target="/ws")))
    server.drain_actions()
    client.receive_data(b"".join(conn.take()))
    assert isinstance(next(client.events()), AcceptConnection)
    payload, mask = b"\xff\xfe", b"\x01\x02\x03\x04"  # not UTF-8, in a text frame
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    server.receive_data(conn, bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    server.drain_actions()
    assert error_handling.counts == {"protocol error": 1, "failed with 1007": 1}
    client.receive_data(b"".join(conn.take()))
    assert [e.code for e in client.events() if isinstance(e, CloseConnection)] == [1007]
    server.connection_lost(conn)


# -- backpressure: the in-memory engine with a wsproto client ------------------------------


def _open_feed(server: Server) -> tuple[ServerConnection, WSConnection]:
    client = WSConnection(ConnectionType.CLIENT)
    conn = server.connect(now=0.0, client=("127.0.0.1", 40000))
    server.receive_data(conn, client.send(WSRequest(host="localhost", target="/feed")))
    server.drain_actions()
    client.receive_data(b"".join(conn.take()))
    assert isinstance(next(client.events()), AcceptConnection)
    return conn, client


def test_backpressure_close_policy_reports_and_closes_a_slow_reader() -> None:
    backpressure.slow_readers.clear()
    server = Server(backpressure.hub, **backpressure.LIMITS)
    conn, _ = _open_feed(server)
    assert conn.kws is not None
    uuid = conn.kws.uuid
    chunk = b"x" * (100 * 1024)
    for _ in range(3):  # nobody takes the output: the third passes max_queue (256 KiB)
        backpressure.hub.broadcast(chunk, BINARY)
        actions = server.drain_actions()
    assert backpressure.slow_readers == [uuid]
    assert uuid not in backpressure.hub
    assert any(isinstance(a, CloseTransport) for a in actions)
    server.connection_lost(conn)


def test_backpressure_drop_policy_keeps_the_reader() -> None:
    backpressure.slow_readers.clear()
    server = Server(backpressure.hub, **{**backpressure.LIMITS, "backpressure": "drop"})
    conn, client = _open_feed(server)
    assert conn.kws is not None
    chunk = b"x" * (100 * 1024)
    for _ in range(4):
        backpressure.hub.broadcast(chunk, BINARY)
        server.drain_actions()
    assert backpressure.slow_readers == [conn.kws.uuid]  # reported once per overflow
    assert conn.kws.is_alive
    assert server.stats.dropped_messages == 2
    client.receive_data(b"".join(conn.take()))
    got = [e for e in client.events() if isinstance(e, BytesMessage)]
    assert sum(len(e.data) for e in got) == 2 * len(chunk)
    server.connection_lost(conn)


def test_backpressure_limits_close_oversized_messages_with_1009() -> None:
    server = Server(backpressure.hub, **backpressure.LIMITS)
    conn, client = _open_feed(server)
    server.receive_data(conn, client.send(BytesMessage(data=b"y" * (64 * 1024 + 1))))
    server.drain_actions()
    client.receive_data(b"".join(conn.take()))
    closes = [e for e in client.events() if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [1009]
    server.connection_lost(conn)


# -- the custom adapter on real sockets ----------------------------------------------------


@contextmanager
def running(server: SelectorServer) -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(lambda: not stop.is_set(),))
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive()


def echo_hub() -> Hub:
    hub = Hub()
    hub.websocket("/echo", lambda kws: kws.emit("ready"))

    @hub.on(EVENT_MESSAGE)
    def echo(ep: EventPayload) -> None:
        ep.kws.emit(ep.data, ep.kind)

    return hub


def test_custom_adapter_serves_real_clients() -> None:
    server = SelectorServer(echo_hub())
    with (
        running(server),
        connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=WAIT) as ws,
    ):
        assert ws.recv(WAIT) == "ready"
        ws.send("text")
        assert ws.recv(WAIT) == "text"
        big = bytes(range(256)) * 2048  # 512 KiB: more than one socket write
        ws.send(big)
        assert ws.recv(WAIT) == big


def test_custom_adapter_shuts_down_with_1001() -> None:
    server = SelectorServer(echo_hub())
    with connect_after_start(server) as (ws, stop):
        assert ws.recv(WAIT) == "ready"
        stop()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001


@contextmanager
def connect_after_start(
    server: SelectorServer,
) -> Iterator[tuple[ClientConnection, Callable[[], None]]]:
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(lambda: not stop.is_set(),))
    thread.start()
    try:
        with connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=WAIT) as ws:
            yield ws, stop.set
    finally:
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive()


def test_custom_adapter_lingers_so_a_client_still_sending_gets_the_close_frame() -> None:
    server = SelectorServer(adapter_scenarios.flood_hub(), **adapter_scenarios.FLOOD_LIMITS)
    with running(server):
        code = adapter_scenarios.flood_then_read_the_close(server.port)
    assert server.engine.stats.overflow_closes == 1
    assert code == 1013  # not a reset (1006): the frame was behind megabytes in flight


def test_custom_adapter_runs_async_listeners_in_order() -> None:
    hub = echo_hub()

    @hub.on(EVENT_MESSAGE)
    async def later(ep: EventPayload) -> None:
        await asyncio.sleep(0)
        ep.kws.emit(f"async {ep.text}")

    server = SelectorServer(hub)
    with (
        running(server),
        connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=WAIT) as ws,
    ):
        assert ws.recv(WAIT) == "ready"
        ws.send("one")
        ws.send("two")
        got = [ws.recv(WAIT) for _ in range(4)]
        assert got == ["one", "async one", "two", "async two"]


# -- TLS, the CLI and graceful shutdown ------------------------------------------------------


def test_tls_example_serves_wss(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def client(uri: str) -> Any:
        # The sync client: on Python 3.10, asyncio's own TLS client transport is left
        # "unclosed" by the websockets asyncio client (a ResourceWarning at collection).
        with connect(uri, ssl=client_context, open_timeout=WAIT) as ws:
            return ws.recv(WAIT)

    async def main() -> Any:
        context = tls_server.tls_context(str(pem))
        context.num_tickets = 0  # the sync client's race over them: see tls_contexts()
        async with await start_server(tls_server.hub, "127.0.0.1", 0, ssl_context=context) as srv:
            return await asyncio.to_thread(client, f"wss://127.0.0.1:{srv.port}/ws")

    assert asyncio.run(main()) == "hello over wss"


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(EXAMPLES)])}
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    timer = threading.Timer(WAIT, proc.kill)  # never hang on a server that does not start
    timer.start()
    try:
        line = proc.stdout.readline()
    finally:
        timer.cancel()
    if "listening on" not in line:
        proc.kill()
        _, err = proc.communicate(timeout=WAIT)
        pytest.fail(f"the server did not start: {line!r} {err}")
    return proc, int(line.strip().rsplit(":", 1)[1])


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out


def test_cli_runs_the_quickstart_and_stops_cleanly_on_sigterm() -> None:
    proc, port = _start(
        ["-m", "ikisocket_adapters", "run", "quickstart:hub", "--port", "0"], cwd=EXAMPLES
    )
    try:
        with connect(f"ws://127.0.0.1:{port}/ws/alice", open_timeout=WAIT) as ws:
            assert ws.recv(WAIT) == "welcome, alice"
            ws.send("hi")
            assert ws.recv(WAIT) == "alice: hi"
            code, _ = _stop(proc)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(WAIT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_shutdown_example_closes_clients_with_1001_and_exits_0() -> None:
    proc, port = _start([str(EXAMPLES / "shutdown.py"), "0"], cwd=ROOT)
    try:
        with (
            connect(f"ws://127.0.0.1:{port}/ws/alice", open_timeout=WAIT) as alice,
            connect(f"ws://127.0.0.1:{port}/ws/bob", open_timeout=WAIT) as bob,
        ):
            code, out = _stop(proc)
            for ws in (alice, bob):
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(WAIT)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
        assert code == 0
        assert "closed alice with 1001" in out
        assert "closed bob with 1001" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
