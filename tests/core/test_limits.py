"""Connection limits: max_connections, max_connections_per_ip, max_handshakes (issue 14).

Past a limit the upgrade is answered 503 with Retry-After before the hub sees
the request, on the byte entry and the message entry alike; a connection counts
from its upgrade (or, for handshakes, its accept) until it ends, whatever ends it.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pairing import Network, Pair, frame, names, record
from wsproto.events import CloseConnection

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    ConnectionState,
    Hub,
    LocalProtocolError,
    Reject,
    Request,
    Websocket,
)
from ikisocket_core.protocol import RETRY_AFTER, Server, ServerConfig, ServerConnection
from ikisocket_core.testing import TestClient, WebSocketRejected

RETRY = ("retry-after", str(RETRY_AFTER))


class CountingHub(Hub):
    """A hub whose route callback counts the requests it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0
        self.websocket("/ws", self._on_open)

    def _on_open(self, kws: Websocket) -> None:
        self.opened += 1


def counts(server: Server, host: str = "127.0.0.1") -> tuple[int, int, int]:
    return server.open_connections, server.connections_from(host), server.handshakes


def request(host: str | None = "10.0.0.1") -> Request:
    client = None if host is None else (host, 4000)
    return Request.from_target("/ws", [("host", "x")], client=client, scheme="ws")


# -- settings ------------------------------------------------------------------------------


def test_defaults_bound_one_address_and_slow_handshakes_but_not_the_node() -> None:
    config = ServerConfig()
    assert config.max_connections is None
    assert config.max_connections_per_ip == 1000
    assert config.max_handshakes == 1000


@pytest.mark.parametrize("name", ["max_connections", "max_connections_per_ip", "max_handshakes"])
@pytest.mark.parametrize("value", [0, -1])
def test_a_limit_is_positive_or_none(name: str, value: int) -> None:
    bad: dict[str, Any] = {name: value}
    with pytest.raises(LocalProtocolError, match=name):
        ServerConfig(**bad)
    lifted: dict[str, Any] = {name: None}
    assert getattr(ServerConfig(**lifted), name) is None


# -- max_connections -----------------------------------------------------------------------


def test_past_max_connections_the_upgrade_gets_503_with_retry_after_and_no_hub_state() -> None:
    hub = CountingHub()
    log = record(hub)
    client = TestClient(hub, max_connections=2)
    first = client.websocket_connect("/ws")
    client.websocket_connect("/ws")
    with pytest.raises(WebSocketRejected) as refused:
        client.websocket_connect("/ws")
    assert refused.value.status == 503
    assert RETRY in refused.value.headers
    assert refused.value.reason == "the server is at its connection limit"
    assert hub.opened == 2  # the route callback never saw the third request
    assert names(log) == [EVENT_CONNECT, EVENT_CONNECT]
    assert len(hub.connections) == 2
    stats = client.server.stats
    assert (stats.over_max_connections, stats.rejected, stats.upgrades) == (1, 0, 2)
    # One leaves: its place is free again.
    first.close()
    assert client.server.open_connections == 1
    client.websocket_connect("/ws").send_text("in")
    assert hub.opened == 3


def test_plain_http_is_not_counted_and_not_refused() -> None:
    hub = CountingHub()
    client = TestClient(hub, static={"/": ("text/plain", b"hi")}, max_connections=1)
    client.websocket_connect("/ws")
    assert client.request("GET", "/").status == 200
    assert client.request("GET", "/ws").status == 426  # the route still answers its own way
    assert client.server.stats.over_max_connections == 0


def test_a_hub_refusal_is_counted_as_rejected_not_as_a_limit() -> None:
    client = TestClient(CountingHub(), max_connections=1)
    with pytest.raises(WebSocketRejected) as refused:
        client.websocket_connect("/nowhere")
    assert refused.value.status == 404
    assert client.server.stats.rejected == 1
    assert client.server.open_connections == 0


# -- max_connections_per_ip ----------------------------------------------------------------


@pytest.mark.parametrize("way", ["whole", "bytewise", "trailing"])
def test_per_ip_limit_refuses_that_address_only(way: Any) -> None:
    hub = CountingHub()
    net = Network(hub, max_connections_per_ip=2)
    a1 = net.pair(way=way, host="10.0.0.1")
    a2 = net.pair(way=way, host="10.0.0.1")
    a3 = net.pair(way=way, host="10.0.0.1")
    b1 = net.pair(way=way, host="10.0.0.2")
    for p in (a1, a2, a3, b1):
        p.flush_handshake()
    assert all(p.accepted for p in (a1, a2, b1))
    assert a3.rejection is not None
    status, headers, body = a3.rejection
    assert status == 503
    assert headers[b"retry-after"] == str(RETRY_AFTER).encode()
    assert body == b"too many connections from this address"
    assert a3.transport_closed
    assert hub.opened == 3
    assert net.server.stats.over_max_connections_per_ip == 1
    assert net.server.connections_from("10.0.0.1") == 2
    assert net.server.connections_from("10.0.0.2") == 1
    assert net.server.open_connections == 3


def test_a_connection_without_an_address_is_not_limited_per_ip() -> None:
    hub = CountingHub()
    net = Network(hub, max_connections_per_ip=1)
    anonymous = [net.pair(host=None) for _ in range(3)]
    assert all(p.accepted for p in anonymous)
    assert net.server.open_connections == 3
    for p in anonymous:
        p.close()
    assert net.server.open_connections == 0


def test_the_global_limit_is_checked_before_the_per_ip_limit() -> None:
    net = Network(CountingHub(), max_connections=1, max_connections_per_ip=1)
    net.pair()
    refused = net.pair()
    assert refused.rejection is not None
    assert net.server.stats.over_max_connections == 1
    assert net.server.stats.over_max_connections_per_ip == 0


# -- max_handshakes ------------------------------------------------------------------------


def test_past_max_handshakes_a_connection_is_answered_503_at_once() -> None:
    hub = CountingHub()
    net = Network(hub, max_handshakes=2)
    slow = [net.attach(websocket=False), net.attach(websocket=False)]
    assert net.server.handshakes == 2
    turned_away = net.attach(websocket=False)
    # Nothing was sent: the answer is written and the transport closed already.
    assert turned_away.transport_closed
    assert turned_away.conn.state is ConnectionState.CLOSED
    status, headers, body = turned_away.http_response()
    assert status == 503
    assert headers[b"retry-after"] == str(RETRY_AFTER).encode()
    assert headers[b"connection"] == b"close"
    assert body == b"too many handshakes in progress"
    assert net.server.stats.over_max_handshakes == 1
    assert turned_away.conn not in net.server.connections
    # What it sends afterwards is ignored, and its end changes no count.
    turned_away.feed(b"GET /ws HTTP/1.1\r\n\r\n")
    net.server.connection_lost(turned_away.conn)
    assert net.server.handshakes == 2
    # A slow one finishing its request (here: a 404) frees a place.
    slow[0].feed(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert slow[0].http_response()[0] == 404
    assert net.server.handshakes == 1
    p = net.pair()
    assert p.accepted
    assert counts(net.server) == (1, 1, 1)
    assert hub.opened == 1


def test_an_upgrade_leaves_the_handshakes_and_counts_as_open() -> None:
    net = Network(CountingHub(), max_handshakes=1)
    for _ in range(3):  # one at a time: each upgrade frees the handshake place
        assert net.pair().accepted
    assert counts(net.server) == (3, 3, 0)


def test_the_handshake_timeout_frees_its_place() -> None:
    net = Network(CountingHub(), max_handshakes=1, handshake_timeout=5.0)
    silent = net.attach(websocket=False)
    assert net.attach(websocket=False).transport_closed
    net.tick(5.0)
    assert silent.transport_closed
    assert net.server.handshakes == 0
    assert net.pair().accepted


def test_shutdown_drops_handshakes_and_their_places() -> None:
    net = Network(CountingHub())
    net.attach(websocket=False)
    p = net.pair()
    net.server.shutdown()
    net.drain()
    assert net.server.handshakes == 0
    assert p.close_frames[0].code == 1001
    assert net.server.open_connections == 1  # CLOSING until the peer answers
    p.send(p.close_frames[0].response())
    assert counts(net.server) == (0, 0, 0)


# -- the message entry (ASGI) --------------------------------------------------------------


def test_accept_past_max_connections_returns_503_without_asking_the_hub() -> None:
    hub = CountingHub()
    server = Server(hub, max_connections=1)
    conn = server.accept(request(), now=0.0)
    assert isinstance(conn, ServerConnection)
    refused = server.accept(request("10.0.0.2"), now=0.0)
    assert refused == Reject(
        status=503, reason="the server is at its connection limit", headers=(RETRY,)
    )
    assert hub.opened == 1
    assert server.stats.over_max_connections == 1
    assert server.stats.connections == 2
    conn.receive_close(1000)
    assert server.open_connections == 0
    assert isinstance(server.accept(request(), now=0.0), ServerConnection)


def test_accept_past_the_per_ip_limit_returns_503() -> None:
    hub = CountingHub()
    server = Server(hub, max_connections_per_ip=1)
    first = server.accept(request(), now=0.0)
    assert isinstance(first, ServerConnection)
    refused = server.accept(request(), now=0.0)
    assert isinstance(refused, Reject)
    assert (refused.status, refused.headers) == (503, (RETRY,))
    assert isinstance(server.accept(request("10.0.0.2"), now=0.0), ServerConnection)
    assert isinstance(server.accept(request(None), now=0.0), ServerConnection)
    assert server.stats.over_max_connections_per_ip == 1
    assert (server.open_connections, server.connections_from("10.0.0.1")) == (3, 1)
    first.connection_lost()
    assert server.connections_from("10.0.0.1") == 0


def test_a_server_close_at_the_message_entry_uncounts_once() -> None:
    hub = CountingHub()
    server = Server(hub, max_connections=1)
    conn = server.accept(request(), now=0.0)
    assert isinstance(conn, ServerConnection)
    assert conn.kws is not None
    conn.kws.close(1000)
    server.drain_actions()
    assert server.open_connections == 0
    conn.receive_close(1000)  # the ASGI server reports the end later: no second decrement
    conn.connection_lost()
    assert server.open_connections == 0
    assert server.connections_from("10.0.0.1") == 0


# -- every end path decrements exactly once ------------------------------------------------


def _peer_close(net: Network, p: Pair) -> None:
    p.close(1000)


def _eof(net: Network, p: Pair) -> None:
    net.server.receive_eof(p.conn)
    net.drain()


def _lost(net: Network, p: Pair) -> None:
    net.server.connection_lost(p.conn, OSError("reset"))
    net.drain()


def _protocol_error(net: Network, p: Pair) -> None:
    p.feed(frame(0x3, b"reserved opcode"))


def _too_big(net: Network, p: Pair) -> None:
    p.send_bytes(b"x" * 2048)


def _server_close(net: Network, p: Pair) -> None:
    assert p.conn.kws is not None
    p.conn.kws.close(1000)
    net.drain()
    assert net.server.open_connections == 2  # CLOSING still counts
    p.send(p.close_frames[0].response())


def _close_timeout(net: Network, p: Pair) -> None:
    assert p.conn.kws is not None
    p.conn.kws.close(1000)  # the client never answers the close frame
    net.drain()
    assert net.server.open_connections == 2  # CLOSING still counts
    net.tick(net.now + 0.5)  # the close deadline is stamped
    net.tick(net.now + 1.0)  # and passes


def _keepalive_timeout(net: Network, p: Pair) -> None:
    p.auto_pong = False
    net.tick(net.now + 1.0)  # the ping is scheduled
    net.tick(net.now + 1.0)  # and sent
    net.tick(net.now + 1.0)  # no pong
    net.tick(net.now + 100.0)


def _overflow(net: Network, p: Pair) -> None:
    p.paused = True
    kws = p.conn.kws  # (the engine lets go of it once the overflow ended the connection)
    assert kws is not None
    for _ in range(4):
        kws.emit(b"y" * 600)
        net.drain()


def _shutdown(net: Network, p: Pair) -> None:
    net.server.shutdown()
    net.drain()
    p.send(p.close_frames[0].response())


END_PATHS: list[Callable[[Network, Pair], None]] = [
    _peer_close,
    _eof,
    _lost,
    _protocol_error,
    _too_big,
    _server_close,
    _close_timeout,
    _keepalive_timeout,
    _overflow,
    _shutdown,
]


def _end_paths_network(hub: Hub) -> Network:
    """Two places, small limits and short timeouts: every end path can be taken quickly."""
    return Network(
        hub,
        max_connections=2,
        max_connections_per_ip=2,
        max_message_size=1024,
        max_queue=1000,
        backpressure="close",
        ping_interval=1.0,
        ping_timeout=1.0,
        close_timeout=1.0,
    )


@pytest.mark.parametrize("end", END_PATHS, ids=lambda f: f.__name__.strip("_"))
def test_every_end_path_frees_the_place_exactly_once(end: Callable[[Network, Pair], None]) -> None:
    hub = CountingHub()
    log = record(hub, [EVENT_DISCONNECT, EVENT_CLOSE])
    net = _end_paths_network(hub)
    stays = net.pair(host="10.0.0.9")
    p = net.pair()
    assert counts(net.server) == (2, 1, 0)
    end(net, p)
    assert p.conn.state is ConnectionState.CLOSED
    assert names(log)[-1] in (EVENT_DISCONNECT, EVENT_CLOSE)
    # The leaver's end went through the registry once; repeating end inputs is harmless.
    net.server.connection_lost(p.conn)
    net.server.receive_eof(p.conn)
    net.drain()
    assert net.server.connections_from("127.0.0.1") == 0
    # The other one still counts (CLOSING too, after a shutdown, until it answers).
    assert net.server.open_connections == 1
    assert net.server.connections_from("10.0.0.9") == 1
    if end is _shutdown:
        assert stays.conn.state is ConnectionState.CLOSING
        return
    assert stays.conn.state is ConnectionState.OPEN
    assert net.pair().accepted


@pytest.mark.parametrize("end", END_PATHS, ids=lambda f: f.__name__.strip("_"))
def test_an_ended_connection_needs_no_garbage_collection(
    end: Callable[[Network, Pair], None],
) -> None:
    # The engine's connection and the hub's handle refer to each other while it is open; at
    # its end the engine lets go of the handle, so the handle (with its request and
    # headers) is freed as soon as nothing else holds it: with connections coming and
    # going, nothing waits in reference cycles for the collector. (No listener here keeps
    # the handle, or an error whose traceback would.)
    net = _end_paths_network(CountingHub())
    net.pair(host="10.0.0.9")  # (the end paths expect another connection that stays)
    p = net.pair()
    handle = weakref.ref(p.conn.kws)
    gc.disable()
    try:
        end(net, p)
        net.drain()
        assert p.conn.state is ConnectionState.CLOSED  # (the engine's own, now)
        assert p.conn.kws is None
        assert handle() is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "end",
    ["eof", "lost", "bad request", "too big", "hub refusal", "timeout"],
)
def test_every_end_of_the_http_phase_frees_the_handshake_place(end: str) -> None:
    net = Network(CountingHub(), max_handshakes=1, max_request_size=300, handshake_timeout=1.0)
    p = net.attach(websocket=False)
    if end == "eof":
        net.server.receive_eof(p.conn)
    elif end == "lost":
        net.server.connection_lost(p.conn)
    elif end == "bad request":
        p.feed(b"\x00garbage\r\n\r\n")
    elif end == "too big":
        p.feed(b"GET / HTTP/1.1\r\nx: " + b"y" * 400)
    elif end == "hub refusal":
        net.server.receive_eof(p.conn)
        net.drain()
        assert net.pair("/nowhere").rejection is not None
    else:
        net.tick(1.0)
    net.drain()
    assert net.server.handshakes == 0
    assert net.pair().accepted


# -- an invariant under any sequence -------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "open-b", "peer-close", "eof", "lost", "server-close", "tick"]),
        st.integers(min_value=0, max_value=7),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_counts_match_the_live_connections_and_never_pass_the_limits(
    ops: list[tuple[str, int]],
) -> None:
    hub = CountingHub()
    net = Network(
        hub, max_connections=4, max_connections_per_ip=3, close_timeout=1.0, ping_interval=None
    )
    server = net.server
    pairs: list[Pair] = []
    for op, index in ops:
        if op in ("open", "open-b"):
            pairs.append(net.pair(host="10.0.0.1" if op == "open" else "10.0.0.2"))
        elif op == "tick":
            net.tick(net.now + 2.0)
        elif pairs:
            p = pairs[index % len(pairs)]
            if op == "peer-close" and p.accepted and p.conn.state is ConnectionState.OPEN:
                p.close()
            elif op == "eof":
                server.receive_eof(p.conn)
                net.drain()
            elif op == "lost":
                server.connection_lost(p.conn)
                net.drain()
            elif op == "server-close" and p.conn.kws is not None:
                p.paused = True  # answered only by the close timeout, if at all
                p.conn.kws.close(1000)
                net.drain()
        live = [
            c
            for c in server.connections
            if c.kws is not None and c.state is not ConnectionState.CLOSED
        ]
        assert server.open_connections == len(live) <= 4
        for host in ("10.0.0.1", "10.0.0.2"):
            mine = [c for c in live if c.client is not None and c.client[0] == host]
            assert server.connections_from(host) == len(mine) <= 3
        assert server.handshakes == 0
        assert hub.opened == server.stats.upgrades
        refused = server.stats.over_max_connections + server.stats.over_max_connections_per_ip
        assert server.stats.upgrades + refused == server.stats.connections


def test_the_refusal_reaches_a_wsproto_client_as_a_rejection() -> None:
    net = Network(CountingHub(), max_connections=1)
    net.pair()
    p = net.pair()
    assert p.rejection is not None
    assert p.of(CloseConnection) == []
    assert p.rejection[0] == 503
