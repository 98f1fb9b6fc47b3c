"""Engine.IO's HTTP long-polling transport and its upgrade to WebSocket, over the engine.

Every test drives the real engine through :class:`TestClient`: the keep-alive
HTTP/1.1 requests a socket.io-client sends, no network. Hostile requests each
have a stated outcome (status, body) and leave nothing behind.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import pytest
from pairing import frame
from wsproto.events import TextMessage

from ikisocket_core import (
    BINARY,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    TEXT,
    EventPayload,
    Hub,
    IkisocketError,
    Reject,
    Request,
)
from ikisocket_core._socketio._polling import (
    PROBE_NOOPS,
    Polling,
    decode_payload,
    encode_payload,
)
from ikisocket_core._socketio._polltest import HTTPTestConnection, PollingTestTransport
from ikisocket_core.testing import TestClient, WebSocketDisconnect, WebSocketRejected

POLL = "/socket.io/?EIO=4&transport=polling"
TEXT_PLAIN = "text/plain; charset=UTF-8"


def unknown(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}, separators=(",", ":")).encode()


class Responses:
    """A virtual keep-alive connection and the answers it got."""

    def __init__(self, client: TestClient) -> None:
        self.got: list[tuple[int, dict[str, str], bytes]] = []
        self.http = HTTPTestConnection(client, lambda *answer: self.got.append(answer))

    def send(self, method: str, target: str, body: bytes = b"", **headers: str) -> None:
        pairs = tuple((k.replace("_", "-"), v) for k, v in headers.items())
        self.http.send(method, target, body, pairs)

    def last(self) -> tuple[int, dict[str, str], bytes]:
        return self.got[-1]


def sessions(hub: Hub) -> int:
    assert hub._sio is not None
    return hub._sio.sessions


def recording_hub(**options: Any) -> tuple[Hub, list[tuple[str, object]]]:
    hub = Hub(uuid_factory=iter(f"c{i}" for i in range(1, 100)).__next__)
    hub.socketio(sid_factory=iter(f"sid{i}" for i in range(1, 100)).__next__, **options)
    seen: list[tuple[str, object]] = []
    for name in (EVENT_CONNECT, EVENT_DISCONNECT, EVENT_ERROR):

        def record(ep: EventPayload, name: str = name) -> None:
            seen.append((name, ep.error))

        hub.on(name, record)
    return hub, seen


def opened(client: TestClient) -> tuple[Responses, str]:
    """A handshake on a raw connection: the connection and the sid."""
    conn = Responses(client)
    conn.send("GET", POLL)
    status, headers, body = conn.last()
    assert status == 200
    assert headers["content-type"] == TEXT_PLAIN
    return conn, json.loads(body[1:])["sid"]


# -- the payload encoding ------------------------------------------------------------------


def test_payloads_join_packets_with_the_record_separator_and_base64_binary() -> None:
    packets = [(b"4hello", TEXT), (b"\x01\x02\x03\x04", BINARY), (b"2", TEXT)]
    body = encode_payload(packets)
    assert body == b"4hello\x1ebAQIDBA==\x1e2"  # the example of the Engine.IO v4 spec
    assert decode_payload(body) == packets


# -- the handshake and the session -------------------------------------------------------


def test_the_handshake_get_is_answered_with_the_open_packet() -> None:
    hub, _ = recording_hub(ping_interval=10, ping_timeout=5, max_payload=5000)
    conn, _sid = opened(TestClient(hub))
    _status, _, body = conn.last()
    assert body[:1] == b"0"
    assert json.loads(body[1:]) == {
        "sid": "sid1",
        "upgrades": ["websocket"],
        "pingInterval": 10000,
        "pingTimeout": 5000,
        "maxPayload": 5000,
    }
    assert not hub.connections  # no namespace yet


def test_a_polling_session_carries_events_acks_binary_and_rooms() -> None:
    hub, seen = recording_hub()
    asked: list[tuple[Any, ...]] = []

    @hub.on("hello")
    def hello(ep: EventPayload) -> Any:
        asked.append(ep.args)
        ep.kws.join("lobby")
        return ep.args[0] * 2

    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    assert sio.kws.transport == "polling"
    assert seen == [(EVENT_CONNECT, None)]
    assert sio.call("hello", 21, b"\x00\xff") == (42,)
    assert asked == [(21, b"\x00\xff")]
    hub.to("lobby").emit_event("news", {"n": 1}, b"\x01")
    assert sio.receive_event("news") == ({"n": 1}, b"\x01")
    answers: list[Any] = []
    sio.kws.emit_event("question", 7, ack=answers.append, timeout=5)
    event = sio.receive()
    sio.ack(event, "yes", b"\x02")
    client.pump()
    assert answers == [("yes", b"\x02")]
    hub.broadcast("plain")
    assert sio.receive_event("message") == ("plain",)


def test_one_connection_carries_many_requests() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    conn, sid = opened(client)
    conn.send("POST", f"{POLL}&sid={sid}", b"40")
    assert conn.last()[:3:2] == (200, b"ok")
    conn.send("GET", f"{POLL}&sid={sid}")
    assert conn.last()[2].startswith(b'40{"sid":"c1"}')
    assert len(conn.got) == 3
    assert not conn.http.closed
    assert client.server.stats.connections == 1  # one TCP connection for the three


def test_a_get_waits_for_the_ping_and_a_pong_keeps_the_session() -> None:
    hub, _seen = recording_hub(ping_interval=10, ping_timeout=5)
    client = TestClient(hub)
    getter, sid = opened(client)
    getter.send("GET", f"{POLL}&sid={sid}")
    assert len(getter.got) == 1  # held
    client.advance(9)
    assert len(getter.got) == 1
    client.advance(2)
    assert getter.last()[2] == b"2"
    poster = Responses(client)
    poster.send("POST", f"{POLL}&sid={sid}", b"3")
    client.advance(12)
    assert len(getter.got) == 2  # no GET was pending for the second ping: it waits
    assert getter.http.closed  # idle for handshake_timeout: the engine closed it
    getter = Responses(client)
    getter.send("GET", f"{POLL}&sid={sid}")
    assert getter.last()[2] == b"2"
    client.advance(6)  # no pong: the session ends
    getter.send("GET", f"{POLL}&sid={sid}")
    assert getter.last()[:3:2] == (400, unknown(1, "Session ID unknown"))


def test_a_missing_pong_ends_a_session_with_namespaces() -> None:
    hub, seen = recording_hub(ping_interval=10, ping_timeout=5)
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    sio.auto_pong = False
    client.advance(30)
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    assert sio.disconnected
    assert not hub.connections


def test_the_client_closing_ends_the_session() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    sio.close()
    client.pump()
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_DISCONNECT]
    assert sio.disconnected
    assert sessions(hub) == 0


def test_a_server_disconnect_reaches_the_pending_get() -> None:
    hub, _seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    hub.close(sio.uuid)
    client.pump()
    assert sio.disconnected  # the DISCONNECT, then the close packet
    assert sessions(hub) == 0
    hub.close_all()  # nothing left to close


def test_close_all_answers_pending_gets() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    first = client.socketio_connect(transport="polling")
    second = client.socketio_connect(transport="polling")
    client.server.shutdown()
    client.pump()
    assert first.disconnected
    assert second.disconnected
    assert sessions(hub) == 0
    assert EVENT_DISCONNECT not in [name for name, _ in seen]  # the server closed them


# -- hostile and broken requests ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "status", "body"),
    [
        ("GET", f"{POLL}&sid=nope", 400, unknown(1, "Session ID unknown")),
        ("POST", f"{POLL}&sid=nope", 400, unknown(1, "Session ID unknown")),
        ("POST", POLL, 400, unknown(2, "Bad handshake method")),
        (
            "GET",
            "/socket.io/?EIO=3&transport=polling",
            400,
            unknown(5, "Unsupported protocol version"),
        ),
        ("GET", "/socket.io/?transport=polling", 400, unknown(5, "Unsupported protocol version")),
        ("GET", "/socket.io/?EIO=4", 400, unknown(0, "Transport unknown")),
        ("GET", "/socket.io/?EIO=4&transport=flash", 400, unknown(3, "Bad request")),
        ("GET", "/socket.io/?EIO=4&transport=websocket", 400, unknown(3, "Bad request")),
    ],
)
def test_requests_that_name_no_valid_session_get_the_reference_errors(
    method: str, target: str, status: int, body: bytes
) -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    conn = Responses(client)
    conn.send(method, target, b"40" if method == "POST" else b"")
    assert conn.last()[0] == status
    assert conn.last()[2] == body
    assert conn.last()[1]["content-type"] == "application/json"
    assert sessions(hub) == 0
    assert not seen


def test_a_second_get_is_refused_and_closes_the_session() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")  # its GET is pending
    sid = sio.polling.sid
    intruder = Responses(client)
    intruder.send("GET", f"{POLL}&sid={sid}")
    assert intruder.last()[:3:2] == (400, unknown(3, "Bad request"))
    assert sio.disconnected  # the pending GET got the close packet
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    assert sessions(hub) == 0


def test_a_body_over_max_payload_is_413_and_closes_the_session() -> None:
    hub, _seen = recording_hub(max_payload=100)
    client = TestClient(hub)
    conn, sid = opened(client)
    conn.send("POST", f"{POLL}&sid={sid}", b"4" + b"x" * 200)
    assert conn.last()[:3:2] == (413, b"Payload Too Large")
    assert conn.http.closed  # the body was not read: the connection cannot go on
    assert sessions(hub) == 0


def test_a_chunked_body_over_max_payload_is_413_too() -> None:
    hub, _ = recording_hub(max_payload=100)
    client = TestClient(hub)
    _, sid = opened(client)
    peer = Responses(client)
    h = peer.http._h11
    data = h.send(
        h11.Request(
            method="POST",
            target=f"{POLL}&sid={sid}",
            headers=[("host", "t"), ("transfer-encoding", "chunked")],
        )
    )
    for _ in range(3):
        data = (data or b"") + (h.send(h11.Data(data=b"x" * 60)) or b"")
    peer.http.waiting = True
    client._feed(peer.http.conn, data or b"")
    assert peer.last()[0] == 413
    assert sessions(hub) == 0


@pytest.mark.parametrize(
    "body", [b"b!!notbase64", b"\xff\xfe", b"9", b"4not a socket.io packet", b""]
)
def test_a_malformed_payload_closes_the_session(body: bytes) -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    conn, sid = opened(client)
    conn.send("POST", f"{POLL}&sid={sid}", b"40")
    conn.send("POST", f"{POLL}&sid={sid}", body)
    status = conn.last()[0]
    # Undecodable payloads get 400; packets that decode but break the protocol 200, and the
    # session is failed either way: nothing more is served for it.
    assert status in (200, 400)
    if status == 400:
        assert conn.last()[2] == unknown(3, "Bad request")
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    conn.send("GET", f"{POLL}&sid={sid}")
    assert conn.last()[0] == 400


def test_an_unknown_method_with_a_sid_is_400() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    conn, sid = opened(client)
    conn.send("PUT", f"{POLL}&sid={sid}")
    assert conn.last()[:3:2] == (400, unknown(3, "Bad request"))
    assert sessions(hub) == 1


def test_the_queue_waiting_for_a_get_is_bounded() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub, max_queue=2000)
    conn, sid = opened(client)
    conn.send("POST", f"{POLL}&sid={sid}", b"40")
    for _ in range(30):
        hub.emit_event("big", "x" * 100)
        client.pump()
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    assert "max_queue" in str(seen[1][1])
    conn.send("GET", f"{POLL}&sid={sid}")
    assert conn.last()[0] == 400


def test_a_get_whose_connection_drops_ends_the_session() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    getter = sio.polling._get
    client.server.connection_lost(getter.conn)
    client.pump()
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_DISCONNECT]
    assert sessions(hub) == 0


class RawPeer:
    """A connection that sends raw bytes and keeps what comes back."""

    _reading = True

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.data = bytearray()
        self.closed = False
        self.conn = client._connect()
        self.conn.transport = self

    def send(self, data: bytes) -> None:
        self.client._feed(self.conn, data)

    def deliver(self, data: bytes) -> None:
        self.data += data

    def transport_closed(self) -> None:
        self.closed = True


def raw_request(method: str, target: str, body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def test_a_request_sent_while_a_get_waits_is_served_after_it() -> None:
    hub, _ = recording_hub(ping_interval=10)
    client = TestClient(hub)
    _, sid = opened(client)
    peer = RawPeer(client)
    peer.send(raw_request("GET", f"{POLL}&sid={sid}"))
    peer.send(raw_request("POST", f"{POLL}&sid={sid}", b"40"))  # pipelined
    assert peer.data == b""
    client.advance(11)  # the ping answers the GET, then the POST is served
    text = bytes(peer.data)
    assert text.index(b"\r\n\r\n2") < text.index(b"\r\n\r\nok")
    assert hub.connections  # the POST's CONNECT was read
    assert not peer.closed


def test_too_many_bytes_while_a_get_waits_drop_the_connection() -> None:
    hub, _seen = recording_hub()
    client = TestClient(hub, max_request_size=1000)
    _, sid = opened(client)
    peer = RawPeer(client)
    peer.send(raw_request("GET", f"{POLL}&sid={sid}"))
    peer.send(b"x" * 2000)
    assert peer.closed
    assert sessions(hub) == 0  # its GET went with it


def test_an_idle_keep_alive_connection_is_closed_after_handshake_timeout() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub, handshake_timeout=5)
    conn, _ = opened(client)
    assert not conn.http.closed
    client.advance(6)
    assert conn.http.closed
    assert sessions(hub) == 1  # the session lives on: its GET may come on another
    assert client.server.stats.handshake_timeouts == 0  # an idle connection, not a failure


def test_a_body_that_never_ends_times_out_like_a_request_head() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub, handshake_timeout=5)
    _, sid = opened(client)
    peer = RawPeer(client)
    peer.send(raw_request("POST", f"{POLL}&sid={sid}", b"40")[:-1])
    client.advance(6)
    assert peer.closed
    assert client.server.stats.handshake_timeouts == 1


def test_a_request_asking_to_close_gets_its_answer_then_the_close() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    conn = Responses(client)
    conn.send("GET", POLL, connection="close")
    assert conn.last()[0] == 200
    assert conn.http.closed


# -- origins, hooks, limits --------------------------------------------------------------


def test_a_preflight_is_answered_for_an_allowed_origin() -> None:
    hub, _ = recording_hub()
    hub.allowed_origins = frozenset({"https://app.example"})
    client = TestClient(hub)
    conn = Responses(client)
    conn.send(
        "OPTIONS", POLL, origin="https://app.example", access_control_request_headers="x-token"
    )
    status, headers, body = conn.last()
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-credentials"] == "true"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "x-token"
    conn.send("GET", POLL, origin="https://app.example")
    assert conn.last()[0] == 200
    assert conn.last()[1]["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize("where", ["hub", "mount"])
def test_an_origin_not_allowed_is_403(where: str) -> None:
    if where == "hub":
        hub, _ = recording_hub()
        hub.allowed_origins = frozenset({"https://app.example"})
    else:
        hub, _ = recording_hub(cors_allowed_origins=["https://app.example"])
    client = TestClient(hub)
    conn = Responses(client)
    for method in ("OPTIONS", "GET"):
        conn.send(method, POLL, origin="https://evil.example")
        assert conn.last()[:3:2] == (403, unknown(4, "Forbidden"))
    assert sessions(hub) == 0
    conn.send("GET", POLL)  # same origin (no Origin header): served
    assert conn.last()[0] == 200
    assert "access-control-allow-origin" not in conn.last()[1]


def test_before_upgrade_applies_to_the_polling_handshake() -> None:
    hub, _ = recording_hub()

    @hub.before_upgrade
    def hook(request: Request) -> Reject | None:
        if request.query().get("token") != "good":
            return Reject(status=401, reason="who are you")
        return None

    client = TestClient(hub)
    conn = Responses(client)
    conn.send("GET", POLL + "&token=bad")
    assert conn.last()[:3:2] == (401, b"who are you")
    sio = client.socketio_connect("/socket.io/?token=good", transport="polling")
    assert sio.uuid == "c1"


def test_a_draining_or_full_server_refuses_new_polling_sessions() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    hub.stop_accepting()
    conn = Responses(client)
    conn.send("GET", POLL)
    assert conn.last()[0] == 503
    hub.resume_accepting()
    other, _ = recording_hub()
    other.websocket("/ws", lambda kws: None)
    full = TestClient(other, max_connections=1)
    full.websocket_connect("/ws")
    conn = Responses(full)
    conn.send("GET", POLL)
    assert conn.last()[0] == 503


# -- the upgrade ---------------------------------------------------------------------------


def test_the_upgrade_moves_the_session_to_a_websocket_with_nothing_lost() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport: PollingTestTransport = sio.polling
    target = f"/socket.io/?EIO=4&transport=websocket&sid={transport.sid}"
    ws = client.websocket_connect(target)
    transport._polling = False  # socket.io-client pauses polling once it probes
    ws.send_text("2probe")
    assert ws.receive_text() == "3probe"
    assert transport._get.waiting is False  # the pending GET was answered (a noop)
    hub.emit_event("during", 1)  # after the probe, before 5: waits in the polling queue
    hub.emit_event("during", 2, b"\x07")
    client.pump()
    ws.send_text("5")
    assert ws.receive_text() == '42["during",1]'
    assert ws.receive_text() == '451-["during",2,{"_placeholder":true,"num":0}]'
    assert ws.receive_bytes() == b"\x07"
    assert sio.kws.transport == "websocket"
    hub.emit_event("after", 3)
    assert ws.receive_text() == '42["after",3]'
    ws.send_text('42["hello"]')  # the session reads the WebSocket now
    client.advance(30)
    assert ws.receive_text() == "2"  # the heartbeat moved too
    assert [name for name, _ in seen] == [EVENT_CONNECT]


def test_the_test_client_upgrades_like_socket_io_client() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    hub.emit_event("before")
    sio.polling.upgrade()
    hub.emit_event("after")
    assert sio.receive_event("before") == ()
    assert sio.receive_event("after") == ()
    assert sio.call("anything") == ()
    sio.close()
    client.pump()
    assert sio.disconnected


def test_an_upgrade_of_an_unknown_or_websocket_session_is_refused() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    with pytest.raises(WebSocketRejected) as caught:
        client.websocket_connect("/socket.io/?EIO=4&transport=websocket&sid=nope")
    assert caught.value.status == 400
    client.socketio_connect()  # a WebSocket session: sid2
    with pytest.raises(WebSocketRejected):
        client.websocket_connect("/socket.io/?EIO=4&transport=websocket&sid=sid1")


def test_a_bad_probe_is_closed_and_the_session_stays_on_polling() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    ws = client.websocket_connect(f"/socket.io/?EIO=4&transport=websocket&sid={sio.polling.sid}")
    ws.send_text("5")  # the upgrade before the probe
    with pytest.raises(WebSocketDisconnect) as caught:
        ws.receive_text()
    assert caught.value.code == 1002
    assert sio.call("still") == ()
    assert [name for name, _ in seen] == [EVENT_CONNECT]


def test_a_probe_of_a_session_that_ended_is_closed() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    ws = client.websocket_connect(f"/socket.io/?EIO=4&transport=websocket&sid={sio.polling.sid}")
    hub.close(sio.uuid)
    client.pump()
    ws.send_text("2probe")
    with pytest.raises(WebSocketDisconnect):
        ws.receive_text()


# -- the edges of the transport and of the virtual client --------------------------------


def test_a_body_that_arrives_in_pieces_is_read_whole() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    _, sid = opened(client)
    peer = RawPeer(client)
    request = raw_request("POST", f"{POLL}&sid={sid}", b"40")
    peer.send(request[:-1])
    assert peer.data == b""
    peer.send(request[-1:])
    assert peer.data.endswith(b"\r\n\r\nok")
    assert hub.connections


def test_a_malformed_chunked_body_is_400_and_ends_the_connection() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    _, sid = opened(client)
    peer = RawPeer(client)
    head = f"POST {POLL}&sid={sid} HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    peer.send(head.encode() + b"zz\r\n")
    assert peer.data.startswith(b"HTTP/1.1 400 ")
    assert peer.closed
    assert sessions(hub) == 1  # the session itself did nothing wrong


def test_a_post_that_closes_the_session_stops_there() -> None:
    hub, _seen = recording_hub()
    client = TestClient(hub)
    conn, sid = opened(client)
    conn.send("POST", f"{POLL}&sid={sid}", b"1\x1e40")  # close, then a CONNECT
    assert conn.last()[:3:2] == (200, b"ok")
    assert not hub.connections  # the CONNECT after the close was not read
    assert sessions(hub) == 0


def test_a_queue_overflow_drops_the_rest_and_answers_the_get_with_close() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub, max_queue=1000)
    sio = client.socketio_connect(transport="polling")
    transport = sio.polling
    transport._polling = False  # no GET follows the next answer: packets pile up
    hub.emit_event("first")
    client.pump()
    getter = Responses(client)
    hub.emit_event("big", "x" * 600, b"\x00" * 600)  # the attachment passes the bound
    client.pump()
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    getter.send("GET", f"{POLL}&sid={transport.sid}")
    assert getter.last()[0] == 400  # the session is gone


def test_the_pending_get_of_an_overflowing_session_gets_the_close_packet() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub, max_queue=1000)
    sio = client.socketio_connect(transport="polling")
    kws = sio.kws
    session = kws.conn.session
    transport = session.socket.conn
    assert isinstance(transport, Polling)
    assert repr(transport).startswith("<Polling ")
    kws.emit_event("a", "x" * 600)
    kws.emit_event("b", "x" * 600)  # both reach the queue in one drain: past the bound
    client.pump()
    assert sio.polling.closed  # its pending GET got the close packet
    assert sessions(hub) == 0


def test_a_get_answered_elsewhere_before_the_drain_is_skipped() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.kws.conn.session.socket.conn
    assert isinstance(transport, Polling)
    waiter = transport.waiter
    assert waiter is not None
    transport.push(b"4x", TEXT)  # scheduled for the next drain...
    transport.gone(waiter)  # ...but its connection went first
    client.pump()
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_DISCONNECT]


def test_a_get_that_drops_after_the_session_ended_changes_nothing() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    getter = sio.polling._get
    hub.close(sio.uuid)  # not drained yet: its close packet is on the way
    client.server.connection_lost(getter.conn)
    client.pump()
    assert EVENT_DISCONNECT not in [name for name, _ in seen]
    assert sessions(hub) == 0


def test_sends_to_a_session_whose_get_dropped_are_dropped() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.kws.conn.session.socket.conn
    hub.emit_event("lost")  # queued in the hub, not drained yet
    client.server.connection_lost(sio.polling._get.conn)
    client.pump()
    assert transport.queue == []


def test_a_get_sent_after_the_noop_is_answered_at_once_until_the_upgrade() -> None:
    # socket.io-client may read the noop before 3probe and poll again before it
    # pauses; that GET must not wait for packets (here: for the next ping, 25 s).
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.polling
    ws = transport.probe()  # polling pauses: from now on, one GET at a time, sent by the test
    assert transport.probe_answer == "3probe"
    assert not transport._get.waiting  # the noop
    for _ in range(2):
        transport._get.send("GET", transport._with_sid())
        assert not transport._get.waiting  # another noop, at once
    assert transport.responses[-3:] == [200, 200, 200]
    hub.emit_event("queued")  # a GET with packets waiting gets them, not a noop
    client.pump()
    transport._get.send("GET", transport._with_sid())
    assert sio.receive_event("queued") == ()
    transport._get.send("GET", transport._with_sid())
    ws.send_text("5")
    assert not transport._get.waiting
    assert sio.kws.transport == "websocket"


def test_a_client_that_polls_through_a_probe_without_pausing_does_not_spin() -> None:
    # Only the first PROBE_NOOPS GETs after 2probe are answered at once; the next one
    # waits for packets as any GET does, and the upgrade (or a packet) answers it.
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.polling
    ws = transport.probe()
    for _ in range(PROBE_NOOPS):
        transport._get.send("GET", transport._with_sid())
        assert not transport._get.waiting
    transport._get.send("GET", transport._with_sid())
    assert transport._get.waiting  # no noop this time
    ws.send_text("5")
    assert not transport._get.waiting
    assert sio.kws.transport == "websocket"


def test_a_second_probe_gets_its_own_noops() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.polling
    first = transport.probe()
    for _ in range(PROBE_NOOPS + 1):
        transport._get.send("GET", transport._with_sid())
    assert transport._get.waiting  # the first probe's noops are spent
    first.abort()
    client.pump()
    hub.emit_event("wake")
    client.pump()
    assert sio.receive_event("wake") == ()
    transport.probe()  # another WebSocket probes: it may be the one that upgrades
    for _ in range(PROBE_NOOPS):
        transport._get.send("GET", transport._with_sid())
        assert not transport._get.waiting


def test_a_get_read_in_the_same_batch_as_the_upgrade_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An adapter may read both before it drains the engine once: the GET's noop is not
    # sent yet when 5 moves the queue to the WebSocket, so the upgrade answers the GET.
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.polling
    transport.probe()
    with monkeypatch.context() as patch:
        patch.setattr(client, "pump", lambda: None)
        transport._get.send("GET", transport._with_sid())
        transport.finish()  # 5
    client.pump()
    assert not transport._get.waiting
    assert transport.responses[-1] == 200
    assert sio.kws.transport == "websocket"
    assert sio.call("upgraded") == ()


def test_a_probe_that_drops_leaves_the_session_on_polling_as_before() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.polling
    transport.probe().abort()
    client.pump()
    transport._polling = True
    transport._get.send("GET", transport._with_sid())
    assert transport._get.waiting  # polling as before: the GET waits for packets
    assert isinstance(sio.kws.conn.session.socket.conn, Polling)
    assert sio.call("still") == ()


def test_what_waits_at_the_upgrade_arrives_first_on_the_websocket() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    transport = sio.polling
    assert repr(transport) == f"<PollingTestTransport {transport.sid}>"
    transport.probe()
    assert transport.probe_answer == "3probe"
    hub.emit_event("between", b"\x01")  # after the noop: it waits for the upgrade
    transport.finish()
    hub.emit_event("after")
    assert sio.receive_event("between") == (b"\x01",)
    assert sio.receive_event("after") == ()
    assert sio.ws is transport.ws
    sio.emit("binary", b"\x02")  # the upgraded client sends on the WebSocket


def test_the_virtual_client_refuses_what_does_not_apply() -> None:

    hub, _ = recording_hub()
    client = TestClient(hub)
    on_polling = client.socketio_connect(transport="polling")
    with pytest.raises(IkisocketError, match="polling"):
        _ = on_polling.ws
    on_websocket = client.socketio_connect()
    with pytest.raises(IkisocketError, match="WebSocket"):
        _ = on_websocket.polling
    hub.stop_accepting()
    with pytest.raises(IkisocketError, match="503"):
        client.socketio_connect(transport="polling")


def test_a_refused_post_closes_the_virtual_client_and_later_sends_do_nothing() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    sio.polling.post(b"b!!")  # not base64: 400, the session ends
    assert 400 in sio.polling.responses
    assert sio.polling.closed
    sio.emit("ignored", b"\x00")  # nothing is sent any more
    assert sessions(hub) == 0


def test_the_engine_serves_polling_to_a_server_that_parses_http_itself() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    server = client.server

    class Waiter:
        def __init__(self) -> None:
            self.node = server
            self.answers: list[Any] = []
            self.transport: Any = None

        def answer(self, answer: Any) -> None:
            self.answers.append(answer)

        def held(self, transport: Any) -> None:
            self.transport = transport

    waiter = Waiter()
    request = Request.from_target(POLL, client=("10.0.0.1", 5000))
    assert server.serve_poll(request, "GET", b"", waiter, now=1.0) is True
    assert waiter.answers == []
    server.drain_actions()
    (answer,) = waiter.answers
    assert (answer.status, answer.body[:1]) == (200, b"0")
    bad = Waiter()
    assert server.serve_poll(Request.from_target(POLL), "POST", b"", bad, now=1.0) is False
    assert bad.answers[0].status == 400


def test_frames_that_follow_the_upgrade_in_one_read_reach_the_session() -> None:

    hub, seen = recording_hub()
    heard: list[tuple[Any, ...]] = []
    hub.on("hello", lambda ep: heard.append(ep.args))
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    ws = sio.polling.probe()
    frames = ws._ws.send(TextMessage(data="5")) + ws._ws.send(TextMessage(data='42["hello",1]'))
    ws.send_raw(frames)  # one read: the upgrade, then an event
    assert heard == [(1,)]
    ws.send_text("41")  # the namespace's DISCONNECT, on the WebSocket
    ws.close()
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_DISCONNECT]
    assert sessions(hub) == 0


def test_an_upgraded_session_ends_when_its_websocket_drops() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    sio.polling.upgrade()
    sio.ws.abort()
    client.pump()
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_DISCONNECT]
    assert sessions(hub) == 0


BAD_UTF8_FRAME = b"\x81\x81\x00\x00\x00\x00\xff"  # a masked text frame that is not UTF-8


def test_a_websocket_error_after_the_upgrade_reaches_the_namespaces() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    sio.polling.upgrade()
    sio.ws.send_raw(BAD_UTF8_FRAME)
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]


def test_a_websocket_error_while_probing_leaves_the_session_alone() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    ws = client.websocket_connect(f"/socket.io/?EIO=4&transport=websocket&sid={sio.polling.sid}")
    ws.send_raw(BAD_UTF8_FRAME)
    assert ws.close_code == 1007
    assert seen == [(EVENT_CONNECT, None)]
    assert sio.call("still") == ()


class NotReading:
    """A transport the test client's pump leaves alone: its output stays in the engine."""

    _reading = False


def test_a_read_whose_broadcast_answers_a_waiting_get_is_not_taken() -> None:
    # take=True hands a read's output back only when it is all there is to do: here the
    # broadcast also has a polling session's waiting GET to answer, which only the drain does.
    hub, _ = recording_hub()

    @hub.websocket("/ws")
    def on_open(kws: Any) -> None:
        pass

    @hub.on(EVENT_MESSAGE)
    def relay(ep: EventPayload) -> None:
        ep.kws.emit(ep.data)  # its own reply, onto it at once
        hub.broadcast(ep.data, exclude=ep.kws)

    client = TestClient(hub)
    sio = client.socketio_connect(transport="polling")
    ws = client.websocket_connect("/ws")
    server = client.server
    assert server.receive_data(ws.conn, frame(0x1, b"hi"), take=True) is None
    client.pump()
    assert ws.receive_text() == "hi"
    assert sio.receive_event("message") == ("hi",)
    # The same at the message entry (an ASGI server's connection), with no other plain
    # connection to broadcast to.
    ws.close()
    request = Request.from_target("/ws", [("host", "t")], client=("10.0.0.1", 1), scheme="ws")
    conn = server.accept(request, now=client.now, transport=NotReading())
    assert not isinstance(conn, Reject)
    client.pump()
    assert conn.receive_message(b"again", TEXT, take=True) is None
    client.pump()
    assert conn.take() == [(TEXT, b"again")]
    assert sio.receive_event("message") == ("again",)
