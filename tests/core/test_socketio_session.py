"""Engine.IO sessions over the engine: handshake, heartbeat, timeouts, hostile clients.

Every test drives the real engine through :class:`TestClient`: the bytes a
socket.io-client would send, no network.
"""

from __future__ import annotations

import gc
import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikisocket_core import (
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    TEXT,
    Accept,
    ConnectionClosed,
    EventPayload,
    Hub,
    LocalProtocolError,
    Reject,
    RemoteProtocolError,
    Request,
    SocketIO,
    Websocket,
)
from ikisocket_core._socketio._session import ConnectTimeout, EngineSession, Joined, PingTimeout
from ikisocket_core.testing import (
    SocketIOTestSession,
    TestClient,
    WebSocketDisconnect,
    WebSocketRejected,
)

WS = "/socket.io/?EIO=4&transport=websocket"


def recording_hub(**options: object) -> tuple[Hub, list[tuple[str, object]]]:
    hub = Hub(uuid_factory=iter(f"c{i}" for i in range(1, 100)).__next__)
    hub.socketio(sid_factory=lambda: "sid1", **options)  # type: ignore[arg-type]
    seen: list[tuple[str, object]] = []
    for name in (EVENT_CONNECT, EVENT_DISCONNECT, EVENT_ERROR):

        def record(ep: EventPayload, name: str = name) -> None:
            seen.append((name, ep.error))

        hub.on(name, record)
    return hub, seen


def raw(client: TestClient) -> tuple[object, list[str]]:
    """A raw WebSocket to the endpoint and the text of the open packet."""
    ws = client.websocket_connect(WS)
    return ws, [ws.receive_text()]


def test_the_open_packet_carries_the_settings() -> None:
    hub, _ = recording_hub(ping_interval=10, ping_timeout=5, max_payload=5000)
    ws = TestClient(hub).websocket_connect(WS)
    kind_text = ws.receive_text()
    assert kind_text[0] == "0"
    assert json.loads(kind_text[1:]) == {
        "sid": "sid1",
        "upgrades": [],
        "pingInterval": 10000,
        "pingTimeout": 5000,
        "maxPayload": 5000,
    }
    assert ws.pending == 0  # nothing else until the client connects a namespace


def test_the_transport_is_not_a_hub_connection() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    client.websocket_connect(WS)
    assert not hub.connections
    assert seen == []
    assert hub._sio is not None
    assert hub._sio.sessions == 1
    assert "1 sessions" in repr(hub._sio)


def test_connect_makes_a_hub_connection_and_answers_with_its_uuid() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    assert sio.uuid == "c1"
    assert hub.connections == ("c1",)
    assert seen == [(EVENT_CONNECT, None)]
    assert sio.kws.transport == "websocket"
    assert sio.kws.namespace == "/"
    assert sio.kws.auth == {}
    assert sio.handshake["sid"] == "sid1"


def test_the_server_pings_and_a_pong_keeps_the_session() -> None:
    hub, _ = recording_hub(ping_interval=10, ping_timeout=5)
    client = TestClient(hub)
    sio = client.socketio_connect()
    client.advance(10)
    assert sio.pings == 1
    client.advance(5)  # answered: no timeout
    client.advance(10)
    assert sio.pings == 2
    assert not sio.disconnected
    assert hub.connections == ("c1",)


def test_a_missing_pong_ends_the_session() -> None:
    hub, seen = recording_hub(ping_interval=10, ping_timeout=5)
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.auto_pong = False
    assert not sio.auto_pong
    client.advance(10)
    assert sio.pings == 1
    client.advance(4.9)
    assert hub.connections == ("c1",)
    client.advance(0.2)
    assert sio.disconnected
    assert sio.ws.close_code == 1001
    assert not hub.connections
    (error_name, error), (gone, closed) = seen[1:]
    assert (error_name, gone) == (EVENT_ERROR, EVENT_DISCONNECT)
    assert isinstance(error, PingTimeout)
    assert isinstance(closed, ConnectionClosed)
    assert closed.code == 1001
    assert closed.cause is error


def test_an_unsolicited_pong_is_ignored() -> None:
    hub, _ = recording_hub(ping_interval=10, ping_timeout=5)
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.ws.send_text("3")
    client.advance(10)
    assert sio.pings == 1


def test_a_probe_ping_is_answered() -> None:
    hub, _ = recording_hub()
    ws = TestClient(hub).websocket_connect(WS)
    ws.receive_text()
    ws.send_text("2probe")
    assert ws.receive_text() == "3probe"


def test_noop_is_ignored_and_close_ends_the_session() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.ws.send_text("6")
    assert hub.connections == ("c1",)
    sio.ws.send_text("1")
    assert not hub.connections
    assert sio.ws.close_code == 1000
    disconnect = seen[-1]
    assert disconnect[0] == EVENT_DISCONNECT
    assert isinstance(disconnect[1], ConnectionClosed)
    assert disconnect[1].reason == "client closed the session"


def test_a_client_that_never_connects_is_closed_after_connect_timeout() -> None:
    hub, seen = recording_hub(connect_timeout=3)
    client = TestClient(hub)
    ws = client.websocket_connect(WS)
    client.advance(2.9)
    assert not ws.closed
    client.advance(0.2)
    assert ws.close_code == 1008
    assert "no namespace joined" in ws.close_reason
    assert seen == []
    assert hub._sio is not None
    assert hub._sio.sessions == 0


def test_leaving_the_last_namespace_restarts_the_connect_timeout() -> None:
    hub, _ = recording_hub(connect_timeout=3)
    client = TestClient(hub)
    sio = client.socketio_connect()
    client.advance(10)  # joined: no timeout
    assert not sio.ws.closed
    sio.disconnect()
    assert not hub.connections
    client.advance(3.1)
    assert sio.ws.close_code == 1008


def test_timers_never_fire_early_when_the_hub_clock_is_stale() -> None:
    # The session is opened at t=100 while the hub last heard t=0: the heartbeat is
    # stamped by the next tick, so it cannot fire before t=100+interval.
    hub, _ = recording_hub(ping_interval=10, ping_timeout=5)
    client = TestClient(hub)
    client._now = 100.0  # the driver's clock moved without ticking the hub
    sio = client.socketio_connect()
    client.advance(9)
    assert sio.pings == 0
    client.advance(1.5)
    assert sio.pings == 1


@pytest.mark.parametrize(
    "packet",
    ["", "x", "0", "5", "9hello", "4", "4x", "42", "4[", '44{"message":"no"}', "40[1]"],
)
def test_a_malformed_packet_closes_the_session_with_1002(
    packet: str, caplog: pytest.LogCaptureFixture
) -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    with caplog.at_level(logging.INFO, logger="ikisocket"):
        sio.ws.send_text(packet)
    assert sio.ws.close_code == 1002
    assert not hub.connections
    names = [name for name, _ in seen]
    assert names == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    assert isinstance(seen[1][1], RemoteProtocolError)
    assert "failed Socket.IO session sid1" in caplog.text


def test_a_binary_message_nobody_announced_closes_the_session() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.ws.send_bytes(b"\x01")
    assert sio.ws.close_code == 1002


def test_an_attachment_count_that_lies_closes_the_session() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.ws.send_text('452-["e",{"_placeholder":true,"num":0}]')
    sio.ws.send_bytes(b"one")
    assert not sio.ws.closed  # still waiting for the second
    sio.ws.send_text('42["e"]')
    assert sio.ws.close_code == 1002


def test_too_many_attachments_close_the_session() -> None:
    hub, _ = recording_hub(max_attachments=2)
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.ws.send_text('453-["e",{"_placeholder":true,"num":0}]')
    assert sio.ws.close_code == 1002


def test_a_packet_over_max_payload_closes_with_1009() -> None:
    hub, _ = recording_hub(max_payload=100)
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.emit("e", "x" * 200)
    assert sio.ws.close_code == 1009


def test_a_second_connect_to_the_same_namespace_is_answered_again() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    again = sio.connect("/")
    assert again.uuid == sio.uuid
    assert hub.connections == (sio.uuid,)
    assert [name for name, _ in seen] == [EVENT_CONNECT]


def test_packets_for_a_namespace_not_joined_are_ignored() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    for packet in ('42/other,["e"]', '43/other,1["a"]', "41/other,"):
        sio.ws.send_text(packet)
    assert not sio.ws.closed
    assert [name for name, _ in seen] == [EVENT_CONNECT]


def test_a_wrong_version_or_transport_or_sid_is_refused_with_400() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    for target, reason in (
        ("/socket.io/?EIO=3&transport=websocket", "EIO=4"),
        ("/socket.io/?transport=websocket", "EIO=4"),
        ("/socket.io/?EIO=4&transport=polling", "transport=websocket"),
        ("/socket.io/?EIO=4", "transport=websocket"),
        ("/socket.io/?EIO=4&transport=websocket&sid=abc", "session id"),
    ):
        with pytest.raises(WebSocketRejected) as caught:
            client.websocket_connect(target)
        assert caught.value.status == 400
        assert reason in caught.value.reason


def test_plain_requests_elsewhere_keep_their_answers() -> None:
    hub, _ = recording_hub()
    hub.websocket("/ws", lambda kws: None)
    client = TestClient(hub)
    assert client.request("GET", "/ws").status == 426  # other routes keep their answer
    assert client.request("GET", "/elsewhere").status == 404


def test_the_path_without_its_final_slash_is_served_too() -> None:
    hub, _ = recording_hub()
    ws = TestClient(hub).websocket_connect("/socket.io?EIO=4&transport=websocket")
    assert ws.receive_text().startswith("0{")


def test_origins_are_checked_by_the_hub_and_the_mount() -> None:
    hub = Hub(allowed_origins=["https://a.example", "https://b.example"])
    hub.socketio(cors_allowed_origins=["https://a.example"])
    client = TestClient(hub)
    client.websocket_connect(WS, origin="https://a.example")
    client.websocket_connect(WS)  # no Origin: not a browser
    for origin in ("https://b.example", "https://evil.example"):
        with pytest.raises(WebSocketRejected) as caught:
            client.websocket_connect(WS, origin=origin)
        assert caught.value.status == 403


def test_before_upgrade_applies_and_its_accept_names_the_first_connection() -> None:
    hub = Hub()
    hub.socketio()

    @hub.before_upgrade
    def hook(request: Request) -> Accept | Reject | bool | None:
        token = request.query().get("token")
        if token == "no":
            return False
        if token == "teapot":
            return Reject(status=418, reason="short and stout")
        if token == "boom":
            raise RuntimeError("hook failed")
        if token == "weird":
            return 42  # type: ignore[return-value]
        return Accept(uuid="alice", attributes={"role": "admin"})

    hub.socketio  # noqa: B018 (the mount is kept)
    client = TestClient(hub)
    for token, status in (("no", 403), ("teapot", 418), ("boom", 500), ("weird", 500)):
        with pytest.raises(WebSocketRejected) as caught:
            client.socketio_connect(f"/socket.io/?token={token}")
        assert caught.value.status == status
    sio = client.socketio_connect("/socket.io/?token=yes")
    assert sio.uuid == "alice"
    assert sio.kws.get_attribute("role") == "admin"
    assert hub._sio is not None
    hub._sio.namespace("/two")
    other = sio.connect("/two")
    assert other.uuid != "alice"
    assert other.kws.get_attribute("role") == "admin"


def test_a_failing_sid_factory_is_a_500() -> None:
    hub = Hub()

    def broken() -> str:
        raise RuntimeError("no sid")

    hub.socketio(sid_factory=broken)
    with pytest.raises(WebSocketRejected) as caught:
        TestClient(hub).websocket_connect(WS)
    assert caught.value.status == 500


def test_a_draining_hub_refuses_sessions_and_namespaces() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    ws = client.websocket_connect(WS)
    ws.receive_text()
    hub.stop_accepting()
    with pytest.raises(WebSocketRejected) as caught:
        client.websocket_connect(WS)
    assert caught.value.status == 503
    ws.send_text("40")
    assert ws.receive_text() == '44{"message":"the server is not accepting connections"}'


def test_close_all_closes_every_session() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    bare = client.websocket_connect(WS)
    hub.close_all(1001, "bye")
    assert sio.ws.close_code == 1001
    assert bare.close_code == 1001
    assert hub._sio is not None
    assert hub._sio.sessions == 0
    assert EVENT_DISCONNECT not in [name for name, _ in seen]  # the server closed them


def test_the_transport_dropping_ends_the_namespaces() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.ws.abort()
    assert not hub.connections
    name, error = seen[-1]
    assert name == EVENT_DISCONNECT
    assert isinstance(error, ConnectionClosed)
    assert error.code == 1006


def test_a_websocket_level_error_reaches_the_namespaces() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub, max_message_size=50)
    sio = client.socketio_connect()
    sio.ws.send_text("4" + "x" * 100)  # too big for the WebSocket layer: 1009
    assert sio.ws.close_code == 1009
    assert [name for name, _ in seen] == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]


def test_websocket_pings_of_the_transport_are_not_hub_events() -> None:
    hub, _ = recording_hub()
    pings: list[str] = []
    hub.on("ping", lambda ep: pings.append("ping"))
    hub.on("pong", lambda ep: pings.append("pong"))
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.ws.ping(b"x")
    sio.ws.pong(b"y")
    assert pings == []


def test_settings_are_checked() -> None:
    for options in (
        {"ping_interval": 0},
        {"ping_timeout": -1},
        {"connect_timeout": True},
        {"max_payload": 0},
        {"max_pending_acks": 1.5},
        {"max_attachments": "2"},
        {"recovery": -1},
        {"recovery": "120"},
        {"recovery": True},
    ):
        with pytest.raises(LocalProtocolError):
            Hub().socketio(**options)
    with pytest.raises(LocalProtocolError, match="starts with"):
        Hub().socketio("socket.io")
    hub = Hub()
    mount = hub.socketio("/io/", namespaces=["/a"])
    assert isinstance(mount, SocketIO)
    assert mount.namespaces == {"/", "/a"}
    assert mount.namespace("/b") is mount
    for bad in ("b", "/a,b", "/" + "x" * 300):
        with pytest.raises(LocalProtocolError):
            mount.namespace(bad)
    with pytest.raises(TypeError):  # on both builds (the compiled mount says it its own way)
        mount.namespace(3)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="already mounted"):
        hub.socketio()


def test_the_session_object_describes_itself() -> None:
    hub, _ = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    socket = sio.ws.kws
    assert "sid1" in repr(socket.session)
    assert repr(next(iter(socket.session.joined.values()))) == "<Joined / c1>"


def test_a_closed_session_ignores_what_still_arrives() -> None:
    hub, seen = recording_hub()
    client = TestClient(hub)
    sio = client.socketio_connect()
    socket = sio.ws.kws
    hub.close_all(1001)
    socket.session.receive(b'42["late"]', TEXT)
    assert [name for name, _ in seen] == [EVENT_CONNECT]
    with pytest.raises(WebSocketDisconnect):
        sio.ws.receive()


@pytest.mark.parametrize("how", ["client disconnect", "transport closed", "server disconnect"])
def test_an_ended_socketio_connection_needs_no_garbage_collection(how: str) -> None:
    # A namespace connection's handle and the session's record of it (Joined) refer to
    # each other while it is open, as do the Engine.IO session and its transport's handle;
    # at the end each lets go, so that nothing of the session waits in a reference cycle
    # for the collector.
    hub = Hub()
    hub.on("ping", lambda ep: ep.kws.emit_event("pong", 1))
    hub.socketio()
    client = TestClient(hub)
    client.socketio_connect().close()  # (a first session: imports, caches)
    gc.collect()
    gc.disable()
    try:
        sio = client.socketio_connect()
        sio.emit("ping")
        if how == "client disconnect":
            sio.disconnect()
        elif how == "transport closed":
            sio.close()
        else:
            sio.kws.close()
        client.advance(1)
        del sio
        control: list[object] = []
        control.append(control)  # a cycle of the test's own: proof that the collector looked
        del control
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        assert any(type(o) is list and o and o[0] is o for o in gc.garbage)
        # (The test client's session and the engine's connection refer to each other, and
        # the test session keeps the transport's handle, an EngineSocket: the test client's
        # objects. The library's own, over real sockets: tests/integration.)
        ours = (Websocket, Joined, EngineSession)
        assert [type(o).__name__ for o in gc.garbage if type(o) in ours] == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_a_connect_timeout_error_has_its_close_code() -> None:
    assert ConnectTimeout(3).close_code == 1008
    assert PingTimeout(3).close_code == 1001
    assert isinstance(SocketIOTestSession, type)


def test_the_socketio_path_comes_before_a_wildcard_route() -> None:
    hub, _ = recording_hub()
    hub.websocket("/*", lambda kws: None)
    client = TestClient(hub)
    sio = client.socketio_connect()
    assert sio.kws.transport == "websocket"
    with client.websocket_connect("/elsewhere") as ws:
        assert ws.kws.transport is None


# -- whatever a client sends: a documented outcome, and nothing left behind ---------------

client_messages = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "40",
                "40/admin,",
                '40{"token":1}',
                '42["e",1]',
                '421["e"]',
                '43/admin,0["a"]',
                "41",
                "41/admin,",
                '451-["e",{"_placeholder":true,"num":0}]',
                "3",
                "2probe",
                "6",
                "1",
            ]
        ),
        st.text(max_size=12).map(lambda s: "4" + s),
        st.text(max_size=6),
        st.binary(max_size=6),
    ),
    max_size=12,
)


@settings(max_examples=120, deadline=None)
@given(messages=client_messages, later=st.floats(min_value=0, max_value=100))
def test_any_client_input_ends_in_a_documented_state(
    messages: list[str | bytes], later: float
) -> None:
    hub = Hub()
    mount = hub.socketio(namespaces=["/admin"], ping_interval=10, ping_timeout=5)
    hub.on("e", lambda ep: ep.kws.emit_event("back", *ep.args, ack=lambda a: None, timeout=3))
    client = TestClient(hub)
    ws = client.websocket_connect(WS)
    for message in messages:
        if ws.closed:
            break
        if isinstance(message, bytes):
            ws.send_bytes(message)
        else:
            ws.send_text(message)
    assert ws.close_code in (None, 1000, 1002)  # open, closed by "1", or malformed input
    client.advance(later)
    client.advance(100)  # pings unanswered by the raw client: the session times out
    assert ws.closed
    assert not hub.connections
    assert mount.sessions == 0
    assert len(mount._deadlines) == 0  # every heartbeat, connect and ack timer is gone
