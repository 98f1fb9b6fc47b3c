"""The protocol engine's HTTP phase: the upgrade, every refusal, static pages, slowloris."""

from __future__ import annotations

import base64

import pytest
from pairing import WAYS, Network, Pair, Way, names, pair, record
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import generate_accept_token

from ikisocket_core import (
    EVENT_CONNECT,
    Accept,
    ConnectionState,
    Hub,
    Reject,
    Request,
    Websocket,
)
from ikisocket_core.protocol import CloseTransport, Server, ServerConfig

KEY = base64.b64encode(b"0123456789abcdef").decode()


def make_hub(**options: object) -> Hub:
    hub = Hub(**options)  # type: ignore[arg-type]
    hub.websocket("/ws", lambda kws: None)
    hub.websocket("/room/:name", lambda kws: kws.emit(b"room " + kws.params["name"].encode()))
    return hub


def raw_request(
    path: str = "/ws",
    *,
    method: str = "GET",
    upgrade: bool = True,
    version: str = "13",
    key: str | None = KEY,
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: example.com"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: keep-alive, Upgrade"]
        lines.append(f"Sec-WebSocket-Version: {version}")
        if key is not None:
            lines.append(f"Sec-WebSocket-Key: {key}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http(
    hub: Hub, request: bytes, way: Way = "whole", **options: object
) -> tuple[Pair, tuple[int, dict[bytes, bytes], bytes]]:
    """Send a raw request (with trailing junk for the ``trailing`` way); parse the answer."""
    net = Network(hub, **options)  # type: ignore[arg-type]
    p = net.attach(way, websocket=False)
    p.feed(request + (b"junk after the request" if way == "trailing" else b""))
    return p, p.http_response(request.split(b" ", 1)[0].decode())


# -- the upgrade ----------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_handshake_upgrades_and_runs_route_then_connect(way: Way) -> None:
    hub = make_hub()
    log = record(hub)
    p = pair(hub, "/room/lobby", way=way)
    p.send_text("first")  # for "trailing", the request and this frame share a chunk
    assert p.accepted is not None
    assert p.messages == ["room lobby"]  # the route callback's emit comes right after the 101
    assert names(log) == [EVENT_CONNECT, "message"]
    assert log[1].data == b"first"
    assert p.conn.state is ConnectionState.OPEN
    assert isinstance(p.conn.kws, Websocket)
    assert p.conn.kws.params == {"name": "lobby"}
    assert p.net.server.stats.upgrades == 1
    assert p.net.server.stats.connections == 1
    assert not p.transport_closed


def test_101_carries_the_accept_token_and_comes_first() -> None:
    hub = make_hub()
    p = Network(hub).attach(websocket=False)
    p.feed(raw_request("/room/a"))
    head, _, rest = bytes(p.received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    token = generate_accept_token(KEY.encode())
    assert b"sec-websocket-accept: " + token in head
    assert rest.startswith(b"\x81")  # then the route callback's text frame


def test_request_details_reach_the_connection() -> None:
    hub = make_hub()
    seen: list[Websocket] = []
    hub.websocket("/details", seen.append)
    net = Network(hub)
    conn = net.server.connect(now=0, client=("10.0.0.7", 5555), scheme="wss", transport="T")
    net.server.receive_data(
        conn, raw_request("/details?room=1", extra=("Cookie: sid=abc", "X-Token: t"))
    )
    assert conn.transport == "T"
    (kws,) = seen
    assert kws.query == {"room": "1"}
    assert kws.cookies == {"sid": "abc"}
    assert kws.headers["x-token"] == "t"
    assert kws.request.client == ("10.0.0.7", 5555)
    assert kws.request.scheme == "wss"
    assert kws.conn is conn


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_unknown_path_is_404_and_closes(way: Way) -> None:
    hub = make_hub()
    log = record(hub)
    p = pair(hub, "/nowhere", way=way)
    p.flush_handshake()
    assert p.rejection is not None
    assert p.rejection[0] == 404
    assert p.transport_closed
    assert p.net.closed == [p.conn]
    assert p.conn not in p.net.server.connections
    assert log == []
    assert len(hub) == 0


@pytest.mark.parametrize("way", WAYS)
def test_plain_get_to_a_websocket_route_is_426(way: Way) -> None:
    p, (status, headers, body) = http(make_hub(), raw_request(upgrade=False), way)
    assert status == 426
    assert headers[b"upgrade"] == b"websocket"
    assert headers[b"sec-websocket-version"] == b"13"
    assert b"upgrade required" in body
    assert p.transport_closed


def test_post_with_upgrade_headers_is_426() -> None:
    _, (status, _, _) = http(make_hub(), raw_request(method="POST"))
    assert status == 426


def test_unsupported_websocket_version_is_426_naming_13() -> None:
    _, (status, headers, _) = http(make_hub(), raw_request(version="8"))
    assert status == 426
    assert headers[b"sec-websocket-version"] == b"13"


@pytest.mark.parametrize(
    "key",
    [None, "not base64!", base64.b64encode(b"short").decode(), "\xe9\xe9\xe9\xe9"],
    ids=["missing", "not-base64", "wrong-length", "not-ascii"],
)
def test_bad_websocket_key_is_400(key: str | None) -> None:
    hub = make_hub()
    log = record(hub)
    _, (status, _, body) = http(hub, raw_request(key=key))
    assert status == 400
    assert b"Sec-WebSocket-Key" in body
    assert log == []


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"this is not http\r\n\r\n",
        b"GET /ws HTTP/1.1\r\n\r\n",  # no Host
        b"GET /ws HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://example.com/ws HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["garbage", "no-host", "bad-header", "asterisk", "absolute-form"],
)
def test_malformed_request_is_400(request_bytes: bytes, way: Way) -> None:
    hub = make_hub()
    log = record(hub)
    p, (status, headers, _) = http(hub, request_bytes, way)
    assert status == 400
    assert headers[b"connection"] == b"close"
    assert p.transport_closed
    assert p.net.lingers(p.conn)  # the rest of the request must not reset the answer away
    assert p.conn not in p.net.server.connections
    assert log == []


@pytest.mark.parametrize("way", ["whole", "bytewise"])
def test_oversized_request_head_is_431(way: Way) -> None:
    hub = make_hub()
    request = raw_request(extra=("X-Big: " + "a" * 3000,))
    p, (status, _, _) = http(hub, request, way, max_request_size=1024)
    assert status == 431
    assert p.transport_closed
    assert p.net.lingers(p.conn)
    # The limit counts the whole head, however it arrived.
    exact = raw_request(extra=("X-Pad: " + "b" * 900,))
    _, (status, _, _) = http(hub, exact, way, max_request_size=len(exact) - 1)
    assert status == 431
    fits = Network(hub, max_request_size=len(exact)).attach(way, websocket=False)
    fits.feed(exact)
    assert fits.received.startswith(b"HTTP/1.1 101 ")
    # Just under the limit nothing is refused yet: the head is still incomplete.
    net = Network(hub, max_request_size=1024)
    q = net.attach(websocket=False)
    q.feed(request[:1024])
    assert q.received == b""
    assert not q.transport_closed


@pytest.mark.parametrize("way", WAYS)
def test_origin_check(way: Way) -> None:
    hub = make_hub(allowed_origins=["https://good.example"])
    bad = pair(hub, way=way, headers=[("Origin", "https://evil.example")])
    bad.flush_handshake()
    assert bad.rejection is not None
    assert bad.rejection[0] == 403
    assert bad.transport_closed
    assert bad.net.server.stats.rejected == 1
    good = pair(hub, way=way, headers=[("Origin", "https://good.example")])
    good.flush_handshake()
    assert good.accepted is not None
    no_origin = pair(hub, way=way)  # not a browser: no Origin header, allowed
    no_origin.flush_handshake()
    assert no_origin.accepted is not None


@pytest.mark.parametrize("way", WAYS)
def test_before_upgrade_reject_401_with_headers(way: Way) -> None:
    hub = make_hub()
    log = record(hub)

    @hub.before_upgrade
    def auth(request: Request) -> Reject | None:
        if request.headers.get("authorization") != "Bearer ok":
            return Reject(
                status=401, reason="login first", headers=(("WWW-Authenticate", "Bearer"),)
            )
        return None

    p = pair(hub, way=way)
    p.flush_handshake()
    assert p.rejection is not None
    status, headers, body = p.rejection
    assert status == 401
    assert headers[b"www-authenticate"] == b"Bearer"
    assert body == b"login first"
    assert p.transport_closed
    assert log == []
    ok = pair(hub, way=way, headers=[("Authorization", "Bearer ok")])
    ok.flush_handshake()
    assert ok.accepted is not None
    assert names(log) == [EVENT_CONNECT]


def test_before_upgrade_false_is_403() -> None:
    hub = make_hub()
    hub.before_upgrade(lambda request: False)
    p = pair(hub)
    assert p.rejection is not None
    assert p.rejection[0] == 403
    assert p.net.server.stats.rejected == 1


def test_reject_with_a_status_without_a_standard_phrase() -> None:
    hub = make_hub()
    hub.before_upgrade(lambda request: Reject(status=499))
    p, (status, _, body) = http(hub, raw_request())
    assert status == 499
    assert body == b""
    assert b"HTTP/1.1 499 \r\n" in p.received


def test_draining_hub_answers_503() -> None:
    hub = make_hub()
    hub.stop_accepting()
    p = pair(hub)
    assert p.rejection is not None
    assert p.rejection[0] == 503


def test_subprotocol_negotiation() -> None:
    hub = make_hub(subprotocols=["chat.v2", "chat.v1"])
    p = pair(hub, subprotocols=["chat.v1", "chat.v2"])
    assert p.accepted is not None
    assert p.accepted.subprotocol == "chat.v2"  # the server's preference wins
    assert p.conn.kws is not None
    assert p.conn.kws.subprotocol == "chat.v2"
    none = pair(hub, subprotocols=["other"])
    assert none.accepted is not None
    assert none.accepted.subprotocol is None
    assert b"sec-websocket-protocol" not in none.received.lower()


def test_before_upgrade_accept_picks_uuid_and_subprotocol() -> None:
    hub = make_hub(subprotocols=["a"])
    hub.before_upgrade(lambda request: Accept(uuid="alice", subprotocol="b"))
    p = pair(hub, subprotocols=["a", "b"])
    assert p.accepted is not None
    assert p.accepted.subprotocol == "b"
    assert hub.connections == ("alice",)


# -- compression (RFC 7692) -----------------------------------------------------------------


def test_permessage_deflate_negotiated_when_offered() -> None:
    hub = make_hub()
    hub.on("message", lambda ep: ep.kws.emit(ep.data, ep.kind))
    p = pair(hub, extensions=[PerMessageDeflate()])
    assert p.accepted is not None
    assert [e.name for e in p.accepted.extensions] == ["permessage-deflate"]
    assert p.conn.compressed
    text = "all work and no play " * 500
    p.send_text(text)
    before = len(p.received)
    p.send_bytes(bytes(5000))
    assert p.messages == [text, bytes(5000)]
    assert len(p.received) - before < 500  # the echo really travelled compressed


def test_no_compression_when_the_client_does_not_offer_it() -> None:
    p = pair(make_hub())
    assert p.accepted is not None
    assert p.accepted.extensions == []
    assert not p.conn.compressed


def test_no_compression_when_disabled_in_config() -> None:
    p = pair(make_hub(), extensions=[PerMessageDeflate()], compression=False)
    assert p.accepted is not None
    assert p.accepted.extensions == []
    assert b"sec-websocket-extensions" not in p.received.lower()
    assert not p.conn.compressed


@pytest.mark.parametrize(
    "offer",
    ["x-unknown-extension", "permessage-deflate; client_max_window_bits=abc"],
    ids=["unknown", "invalid-parameter"],
)
def test_unusable_extension_offers_are_declined(offer: str) -> None:
    hub = make_hub()
    log = record(hub)
    p = Network(hub).attach(websocket=False)
    p.feed(raw_request(extra=(f"Sec-WebSocket-Extensions: {offer}",)))
    head = bytes(p.received).split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 101 ")
    assert b"sec-websocket-extensions" not in head
    assert not p.conn.compressed
    assert names(log) == [EVENT_CONNECT]


# -- static pages ---------------------------------------------------------------------------

PAGE = b"<!doctype html><h1>chat</h1>"


@pytest.mark.parametrize("way", WAYS)
def test_static_page_is_served(way: Way) -> None:
    hub = make_hub()
    p, (status, headers, body) = http(
        hub, raw_request("/", upgrade=False), way, static={"/": ("text/html", PAGE)}
    )
    assert status == 200
    assert headers[b"content-type"] == b"text/html"
    assert headers[b"content-length"] == str(len(PAGE)).encode()
    assert body == PAGE
    assert p.transport_closed
    assert len(hub) == 0


def test_static_head_has_no_body() -> None:
    p, (status, headers, _) = http(
        make_hub(), raw_request("/", method="HEAD", upgrade=False), static={"/": ("x/y", PAGE)}
    )
    assert status == 200
    assert headers[b"content-length"] == str(len(PAGE)).encode()
    assert p.received.endswith(b"\r\n\r\n")


def test_static_paths_answer_only_get_and_head() -> None:
    _, (status, _, _) = http(
        make_hub(), raw_request("/", method="POST", upgrade=False), static={"/": ("x/y", PAGE)}
    )
    assert status == 404
    _, (status, _, _) = http(make_hub(), raw_request("/other", upgrade=False))
    assert status == 404


# -- the HTTP phase's clock and ends ---------------------------------------------------------


@pytest.mark.parametrize("way", ["whole", "bytewise"])
def test_slowloris_is_cut_off_after_handshake_timeout(way: Way) -> None:
    hub = make_hub()
    net = Network(hub, handshake_timeout=5)
    net.now = 100.0
    p = net.attach(way, websocket=False)
    p.feed(raw_request()[:30])
    assert net.server.next_deadline() == 105.0
    net.tick(104.9)
    p.feed(raw_request()[30:40])  # trickling bytes does not extend the deadline
    net.tick(104.99)
    assert not p.transport_closed
    net.tick(105.0)
    assert p.transport_closed
    assert not net.lingers(p.conn)
    assert p.received == b""  # no answer, just the transport closed
    assert net.server.stats.handshake_timeouts == 1
    assert net.server.connections == ()
    assert net.server.next_deadline() is None


def test_handshake_completed_in_time_cancels_the_timer() -> None:
    net = Network(make_hub(), handshake_timeout=5, ping_interval=None)
    p = net.pair()
    assert p.accepted is not None
    net.tick(1000)
    assert not p.transport_closed
    assert net.server.next_deadline() is None


def test_eof_during_http_phase_closes_quietly() -> None:
    hub = make_hub()
    log = record(hub)
    net = Network(hub)
    p = net.attach(websocket=False)
    p.feed(b"GET /ws HT")
    net.server.receive_eof(p.conn)
    actions = net.server.drain_actions()
    assert actions == [CloseTransport(p.conn, linger=False)]
    assert net.server.connections == ()
    assert log == []


def test_connection_lost_during_http_phase_forgets_it() -> None:
    net = Network(make_hub())
    p = net.attach(websocket=False)
    p.feed(b"GET /")
    net.server.connection_lost(p.conn, OSError("reset"))
    assert net.server.drain_actions() == []
    assert net.server.connections == ()
    assert p.conn.state is ConnectionState.CLOSED


def test_bytes_after_a_refusal_are_ignored() -> None:
    hub = make_hub()
    p, (status, _, _) = http(hub, raw_request("/nowhere"))
    assert status == 404
    size = len(p.received)
    p.feed(raw_request())
    p.net.server.receive_data(p.conn, b"")  # empty data is ignored too
    assert len(p.received) == size
    assert len(hub) == 0


def test_server_options_override_config() -> None:
    base = ServerConfig(max_queue=10, compression=False)
    server = Server(make_hub(), base, max_queue=20)
    assert server.config.max_queue == 20
    assert server.config.compression is False
    assert Server(make_hub(), base).config is base
    assert Server(make_hub()).config == ServerConfig()
