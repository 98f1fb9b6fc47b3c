"""The ASGI adapter driven by fake ASGI ``receive``/``send`` callables, on asyncio and trio."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
import sniffio
from adapter_scenarios import watchdog_hub
from anyio.abc import TaskGroup

import ikisocket_adapters.asgi
from ikisocket_adapters._asgi_conn import _Conn
from ikisocket_adapters._asgi_tasks import _Tasks
from ikisocket_adapters.asgi import ASGIApp, asgi_app
from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    AckTimeout,
    ConnectionClosed,
    EventPayload,
    HandlerTimeout,
    Hub,
    IdleTimeout,
    Reject,
    RemoteProtocolError,
    Request,
    SlowConsumer,
    Websocket,
)
from ikisocket_core.protocol import Server, ServerConfig, ServerConnection, ServerStats

Message = MutableMapping[str, Any]

pytestmark = pytest.mark.anyio

#: Every wait in these tests is bounded by this many seconds.
LIMIT = 5.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Box:
    """An unbounded mailbox between the test and the app."""

    def __init__(self) -> None:
        self.items: deque[Message] = deque()
        self._changed = anyio.Event()

    def put(self, message: Message) -> None:
        self.items.append(message)
        self._changed.set()

    @classmethod
    def of(cls, *messages: Message) -> Box:
        box = cls()
        for message in messages:
            box.put(message)
        return box

    async def get(self) -> Message:
        while not self.items:
            await self._changed.wait()
            self._changed = anyio.Event()
        return self.items.popleft()


class Peer:
    """The server side of one ASGI connection, played by the test."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self._in = Box()
        self._out = Box()
        #: While set, ``websocket.send`` messages block the app (a client that stops reading).
        self.stalled = False
        self._unstall = anyio.Event()
        self.send_error: Exception | None = None
        self.finished = anyio.Event()
        #: Every message the app sent, as the very objects it passed to ``send``.
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self._in.get()

    async def send(self, message: Message) -> None:
        if self.send_error is not None and message["type"] == "websocket.send":
            raise self.send_error
        if self.stalled and message["type"] == "websocket.send":
            await self._unstall.wait()
        self.sent.append(message)
        self._out.put(dict(message))

    def stall(self) -> None:
        self.stalled = True

    def unstall(self) -> None:
        self.stalled = False
        self._unstall.set()

    async def put(self, message: Message) -> None:
        self._in.put(message)
        await anyio.lowlevel.checkpoint()

    async def text(self, text: str) -> None:
        await self.put({"type": "websocket.receive", "text": text})

    async def binary(self, data: bytes) -> None:
        await self.put({"type": "websocket.receive", "bytes": data})

    async def disconnect(self, code: int = 1000) -> None:
        await self.put({"type": "websocket.disconnect", "code": code})

    async def get(self) -> Message:
        with anyio.fail_after(LIMIT):
            return await self._out.get()

    async def get_text(self) -> str:
        message = await self.get()
        assert message["type"] == "websocket.send", message
        text = message.get("text")
        assert isinstance(text, str), message
        return text

    def pending(self) -> list[Message]:
        got = list(self._out.items)
        self._out.items.clear()
        return got

    async def connect(self) -> Message:
        await self.put({"type": "websocket.connect"})
        return await self.get()

    async def wait_finished(self) -> None:
        with anyio.fail_after(LIMIT):
            await self.finished.wait()


def ws_scope(
    path: str = "/ws/alice",
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    root_path: str = "",
    response_extension: bool = True,
    kind: str = "websocket",
) -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "scheme": "ws" if kind == "websocket" else "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": headers or [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50123),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if response_extension else {},
    }


class Harness:
    """Runs ASGI calls of one app in a task group."""

    def __init__(self, app: ASGIApp, tg: TaskGroup) -> None:
        self.app = app
        self.tg = tg

    def start(self, scope: dict[str, Any]) -> Peer:
        peer = Peer(scope)

        async def run() -> None:
            # As a server that does not run on anyio calls the app (uvicorn, daphne): no
            # async library named in the context, where anyio's test runner names one. A
            # loop callback (no task) then finds no event loop through anyio by itself.
            sniffio.current_async_library_cvar.set(None)
            try:
                await self.app(peer.scope, peer.receive, peer.send)
            finally:
                peer.finished.set()

        self.tg.start_soon(run)
        return peer

    async def open(self, path: str = "/ws/alice", **kw: Any) -> Peer:
        peer = self.start(ws_scope(path, **kw))
        accept = await peer.connect()
        assert accept["type"] == "websocket.accept", accept
        return peer


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[Harness]:
    with anyio.fail_after(LIMIT * 3):
        async with anyio.create_task_group() as tg:
            yield Harness(app, tg)
            tg.cancel_scope.cancel()


def chat_hub(**options: Any) -> Hub:
    """The seed's chat, reduced: welcome, broadcast of newcomers, echo."""
    hub = Hub(**options)

    @hub.websocket("/ws/:id")
    def on_open(kws: Websocket) -> None:
        kws.set_attribute("user_id", kws.params["id"])
        kws.broadcast(f"New user connected: {kws.params['id']}", except_self=True)
        kws.emit(f"Hello user: {kws.params['id']}")

    @hub.on(EVENT_MESSAGE)
    def echo(ep: EventPayload) -> None:
        ep.kws.emit(ep.data, ep.kind)

    return hub


def log_events(hub: Hub, *events: str) -> list[tuple[str, str, BaseException | None]]:
    log: list[tuple[str, str, BaseException | None]] = []

    def listener(ep: EventPayload) -> None:
        log.append((ep.name, str(ep.socket_attributes.get("user_id")), ep.error))

    for event in events:
        hub.on(event, listener)
    return log


def close_message(code: int, reason: str) -> Message:
    return {"type": "websocket.close", "code": code, "reason": reason}


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(LIMIT):
        while not condition():
            await anyio.sleep(0.005)


# -- the connection's life ---------------------------------------------------------------


async def test_accept_welcome_broadcast_and_echo_keep_the_message_kind() -> None:
    hub = chat_hub()
    app = asgi_app(hub)
    async with serving(app) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        bob = await h.open("/ws/bob")
        assert await bob.get_text() == "Hello user: bob"
        assert await alice.get_text() == "New user connected: bob"
        await alice.text("héllo")
        assert await alice.get() == {"type": "websocket.send", "text": "héllo"}
        await alice.binary(b"\x00\xff")
        assert await alice.get() == {"type": "websocket.send", "bytes": b"\x00\xff"}
        assert bob.pending() == []
        assert app.stats.connections == 2
        assert app.stats.messages_in == 2


async def test_a_broadcast_hands_the_same_asgi_message_to_every_target() -> None:
    hub = Hub()
    hub.websocket("/ws/:id", lambda kws: None)
    async with serving(asgi_app(hub)) as h:
        peers = [await h.open(f"/ws/user{i}") for i in range(3)]
        hub.broadcast("to everyone")
        hub.broadcast(b"\x00\x01", kind=BINARY)
        for peer in peers:
            assert await peer.get_text() == "to everyone"
            assert await peer.get() == {"type": "websocket.send", "bytes": b"\x00\x01"}
    text = [peer.sent[-2] for peer in peers]
    binary = [peer.sent[-1] for peer in peers]
    # Encoded once per message, whatever the number of targets: one dict, shared.
    assert all(message is text[0] for message in text)
    assert all(message is binary[0] for message in binary)
    assert text[0] is not binary[0]


async def test_text_is_decoded_for_every_reply_but_the_very_bytes_received() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)

    @hub.on(EVENT_MESSAGE)
    def reply(ep: EventPayload) -> None:
        ep.kws.emit(ep.data)  # what arrived: the server's own string goes back
        ep.kws.emit(bytes(bytearray(ep.data)))  # equal bytes, another object
        ep.kws.emit(ep.data.upper())
        hub.broadcast(ep.data)

    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws")
        bob = await h.open("/ws")
        sent = "héllo wörld"
        await alice.text(sent)
        replies = [(await alice.get())["text"] for _ in range(4)]
        assert await bob.get_text() == sent
        await alice.text("second")
        again = [await alice.get_text() for _ in range(4)]
        assert again == ["second", "second", "SECOND", "second"]
    assert replies == [sent, sent, "HéLLO WöRLD", sent]
    assert replies[0] is sent  # not decoded again
    assert replies[1] is not sent


async def test_receive_messages_in_every_servers_shape_keep_their_kind() -> None:
    # uvicorn sends only the key in use, hypercorn and daphne both with the other None.
    hub = chat_hub()
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        await alice.get_text()
        shapes: list[tuple[Message, Message]] = [
            ({"text": "a"}, {"text": "a"}),
            ({"bytes": b"b"}, {"bytes": b"b"}),
            ({"text": "c", "bytes": None}, {"text": "c"}),
            ({"text": None, "bytes": b"d"}, {"bytes": b"d"}),
            ({}, {"text": ""}),  # neither (not ASGI): an empty text message, not a failure
            ({"text": None, "bytes": None}, {"text": ""}),
        ]
        for shape, reply in shapes:
            await alice.put({"type": "websocket.receive", **shape})
            assert await alice.get() == {"type": "websocket.send", **reply}


class YieldingPeer(Peer):
    """A server whose ``send`` first gives the event loop a turn (anyio's memory streams do:
    Starlette's ``TestClient``)."""

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        await super().send(message)


async def test_what_the_route_callback_emits_arrives_when_the_accept_yields() -> None:
    # While the accept is in flight, other tasks run (here the background service, started in
    # this very connection's task group) and drain the route callback's welcome: it must still
    # be written once the connection is accepted.
    app = asgi_app(chat_hub())
    async with serving(app) as harness:
        peer = YieldingPeer(ws_scope("/ws/alice"))

        async def run() -> None:
            try:
                await app(peer.scope, peer.receive, peer.send)
            finally:
                peer.finished.set()

        harness.tg.start_soon(run)
        assert (await peer.connect())["type"] == "websocket.accept"
        assert await peer.get_text() == "Hello user: alice"
        await peer.text("echo me")
        assert await peer.get_text() == "echo me"
        await peer.disconnect()
        await peer.wait_finished()


async def test_request_details_reach_the_connection() -> None:
    hub = Hub(subprotocols=["chat.v1"])
    seen: list[Websocket] = []
    hub.websocket("/ws/:id", seen.append)
    async with serving(asgi_app(hub)) as h:
        headers = [
            (b"host", b"testserver"),
            (b"cookie", b"session=abc; theme=dark"),
            (b"x-token", b"t1"),
            (b"sec-websocket-protocol", b"chat.v2, chat.v1"),
        ]
        peer = h.start(ws_scope("/ws/caf%C3%A9", query=b"room=1&room=2", headers=headers))
        # The server decoded the path already; it must not be decoded again.
        peer.scope["path"] = "/ws/a%41"
        accept = await peer.connect()
    assert accept == {"type": "websocket.accept", "subprotocol": "chat.v1"}
    (kws,) = seen
    assert kws.params == {"id": "a%41"}
    assert kws.query == {"room": "1"}
    assert kws.cookies == {"session": "abc", "theme": "dark"}
    assert kws.headers["X-Token"] == "t1"
    assert kws.request.client == ("127.0.0.1", 50123)


async def test_subprotocols_offered_only_in_the_scope_are_negotiated() -> None:
    # uvicorn's wsproto server strips Sec-WebSocket-Protocol from the headers.
    hub = Hub(subprotocols=["chat.v1"])
    hub.websocket("/ws/:id", lambda kws: None)
    async with serving(asgi_app(hub)) as h:
        peer = h.start(ws_scope("/ws/alice"))
        peer.scope["subprotocols"] = ["chat.v2", "chat.v1"]
        assert await peer.connect() == {"type": "websocket.accept", "subprotocol": "chat.v1"}


async def test_routes_below_a_mount_point_match_without_the_root_path() -> None:
    hub = chat_hub()
    async with serving(asgi_app(hub)) as h:
        peer = await h.open("/ws/alice", root_path="/realtime")
        assert await peer.get_text() == "Hello user: alice"


async def test_peer_disconnect_fires_disconnect_once_with_its_code_and_ends_the_call() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_CONNECT, EVENT_DISCONNECT, EVENT_CLOSE)
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        await alice.disconnect(4001)
        await alice.wait_finished()
    assert [(name, user) for name, user, _ in log] == [
        ("connect", "alice"),
        ("disconnect", "alice"),
    ]
    error = log[1][2]
    assert isinstance(error, ConnectionClosed)
    assert error.code == 4001
    assert len(hub) == 0


async def test_server_close_sends_the_close_fires_close_and_ends_the_call() -> None:
    hub = Hub()

    @hub.websocket("/bye")
    def on_open(kws: Websocket) -> None:
        kws.emit("bye")
        kws.close(4002, "server says bye")

    log = log_events(hub, EVENT_DISCONNECT, EVENT_CLOSE)
    async with serving(asgi_app(hub)) as h:
        peer = await h.open("/bye")
        assert await peer.get_text() == "bye"
        assert await peer.get() == {
            "type": "websocket.close",
            "code": 4002,
            "reason": "server says bye",
        }
        await peer.wait_finished()
    assert [name for name, _, _ in log] == ["close"]
    assert len(hub) == 0


async def test_send_failure_is_not_fatal_and_the_disconnect_still_arrives() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_DISCONNECT)
    async with serving(asgi_app(hub)) as h:
        peer = h.start(ws_scope("/ws/alice"))
        await peer.put({"type": "websocket.connect"})
        assert (await peer.get())["type"] == "websocket.accept"
        peer.send_error = OSError("client gone")
        await peer.text("lost")
        await peer.disconnect(1006)
        await peer.wait_finished()
    assert [name for name, _, _ in log] == ["disconnect"]


async def test_cancelling_the_call_still_ends_the_connection_in_the_hub() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_DISCONNECT)
    app = asgi_app(hub)
    async with anyio.create_task_group() as tg:
        peer = Peer(ws_scope("/ws/alice"))

        async def run() -> None:
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                await app(peer.scope, peer.receive, peer.send)

        scopes: list[anyio.CancelScope] = []
        tg.start_soon(run)
        assert (await peer.connect())["type"] == "websocket.accept"
        scopes[0].cancel()
    assert [name for name, _, _ in log] == ["disconnect"]
    assert len(hub) == 0


async def test_cancelling_the_call_cancels_its_listeners_and_waits_for_them() -> None:
    # The connection's own tasks (here an async listener) end with the ASGI call: they are
    # cancelled, and the call returns only once they have finished, even one that takes
    # a while to (its cleanup shielded), while the call's scope keeps cancelling it.
    hub = Hub()
    hub.websocket("/ws/:id")(lambda kws: None)
    started = anyio.Event()
    steps: list[str] = []

    @hub.on(EVENT_MESSAGE)
    async def slow(ep: EventPayload) -> None:
        started.set()
        try:
            await anyio.sleep(LIMIT * 10)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)
            steps.append("listener cleaned up")

    app = asgi_app(hub)
    scope = anyio.CancelScope()
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            peer = Peer(ws_scope("/ws/alice"))

            async def run() -> None:
                with scope:
                    await app(peer.scope, peer.receive, peer.send)
                steps.append("call returned")

            tg.start_soon(run)
            assert (await peer.connect())["type"] == "websocket.accept"
            await peer.text("work")
            await started.wait()
            scope.cancel()
    assert steps == ["listener cleaned up", "call returned"]
    assert len(hub) == 0


def test_a_connection_task_that_fails_is_logged_and_ends_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # On asyncio a connection's own tasks run in _Tasks; none should fail (each handles its
    # own errors), and one that does anyway is logged with its traceback, not raised into
    # the ASGI call; the others still run to their end.
    finished: list[str] = []

    async def fails() -> None:
        raise ValueError("a bug")

    async def works() -> None:
        await asyncio.sleep(0.01)
        finished.append("works")

    async def main() -> None:
        async with _Tasks() as tasks:
            tasks.start_soon(fails)
            tasks.start_soon(works)

    with caplog.at_level(logging.ERROR, logger="ikisocket"):
        asyncio.run(main())
    assert finished == ["works"]
    assert "a task of an ASGI connection failed" in caplog.text
    assert "ValueError: a bug" in caplog.text


async def test_a_client_that_leaves_before_the_handshake_is_never_opened() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_CONNECT)
    async with serving(asgi_app(hub)) as h:
        peer = h.start(ws_scope("/ws/alice"))
        await peer.disconnect(1001)
        await peer.wait_finished()
        assert peer.pending() == []
    assert log == []


async def test_a_failed_accept_ends_the_connection_with_1006() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_CONNECT, EVENT_DISCONNECT)

    async def refuse(message: Message) -> None:
        raise OSError("client vanished during the handshake")

    app = asgi_app(hub)
    with anyio.fail_after(LIMIT):
        await app(ws_scope("/ws/alice"), Box.of({"type": "websocket.connect"}).get, refuse)
    assert [name for name, _, _ in log] == ["connect", "disconnect"]
    error = log[1][2]
    assert isinstance(error, ConnectionClosed)
    assert error.code == 1006
    assert len(hub) == 0


async def test_async_disconnect_listeners_still_run_when_the_call_is_cancelled() -> None:
    hub = chat_hub()
    ran: list[str] = []

    @hub.on(EVENT_DISCONNECT)
    async def cleanup(ep: EventPayload) -> None:
        await anyio.sleep(0)
        ran.append(str(ep.socket_attributes["user_id"]))

    app = asgi_app(hub)
    async with serving(app) as h, app.lifespan():
        peer = Peer(ws_scope("/ws/alice"))
        scope = anyio.CancelScope()

        async def run() -> None:
            with scope:
                await app(peer.scope, peer.receive, peer.send)

        h.tg.start_soon(run)
        assert (await peer.connect())["type"] == "websocket.accept"
        scope.cancel()
        # The connection's own tasks are gone: the lifespan's service runs the listener.
        await until(lambda: ran == ["alice"])


async def test_other_scope_types_go_to_the_fallback_or_are_refused() -> None:
    seen: list[str] = []

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        raise AssertionError("not called")

    async def ignore(message: Message) -> None:
        raise AssertionError("not called")

    await asgi_app(Hub(), fallback=fallback)({"type": "webtransport"}, nothing, ignore)
    assert seen == ["webtransport"]
    with pytest.raises(RuntimeError, match="webtransport"):
        await asgi_app(Hub())({"type": "webtransport"}, nothing, ignore)


# -- refusing ------------------------------------------------------------------------------


async def test_unknown_path_gets_a_real_404_when_the_server_allows_http_responses() -> None:
    app = asgi_app(chat_hub())
    async with serving(app) as h:
        peer = h.start(ws_scope("/nope"))
        start = await peer.connect()
        body = await peer.get()
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 404
    assert (b"content-type", b"text/plain; charset=utf-8") in start["headers"]
    assert body == {
        "type": "websocket.http.response.body",
        "body": b"no WebSocket route for this path",
    }
    assert app.stats.rejected == 1


async def test_refusal_without_the_extension_closes_before_accepting() -> None:
    hub = chat_hub()
    hub.before_upgrade(lambda request: Reject(status=401, reason="token required"))
    async with serving(asgi_app(hub)) as h:
        peer = h.start(ws_scope("/ws/alice", response_extension=False))
        assert (await peer.connect())["type"] == "websocket.close"
        await peer.wait_finished()
    assert len(hub) == 0


async def test_before_upgrade_status_headers_and_body_are_sent() -> None:
    hub = chat_hub()

    @hub.before_upgrade
    def check(request: Request) -> Reject | None:
        if request.headers.get("x-token") != "secret":
            return Reject(status=401, reason="token required", headers=(("x-why", "token"),))
        return None

    async with serving(asgi_app(hub)) as h:
        peer = h.start(ws_scope("/ws/alice"))
        start = await peer.connect()
        assert start["status"] == 401
        assert (b"x-why", b"token") in start["headers"]
        assert (await peer.get())["body"] == b"token required"
        ok = await h.open("/ws/alice", headers=[(b"x-token", b"secret")])
        assert await ok.get_text() == "Hello user: alice"


async def test_past_the_per_ip_limit_the_upgrade_gets_503_with_retry_after() -> None:
    hub = chat_hub()
    app = asgi_app(hub, max_connections_per_ip=1)
    async with serving(app) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        peer = h.start(ws_scope("/ws/bob"))  # the same client address
        start = await peer.connect()
        assert start["type"] == "websocket.http.response.start"
        assert start["status"] == 503
        assert (b"retry-after", b"5") in start["headers"]
        assert (await peer.get())["body"] == b"too many connections from this address"
        await peer.wait_finished()
        assert len(hub) == 1  # bob never reached the hub
    assert app.stats.over_max_connections_per_ip == 1
    assert app.stats.rejected == 0


async def test_allowed_origins_refuses_other_sites_with_403() -> None:
    hub = chat_hub(allowed_origins=["https://chat.example"])
    async with serving(asgi_app(hub)) as h:
        evil = h.start(ws_scope("/ws/alice", headers=[(b"origin", b"https://evil.example")]))
        assert (await evil.connect())["status"] == 403
        good = await h.open("/ws/bob", headers=[(b"origin", b"https://chat.example")])
        assert await good.get_text() == "Hello user: bob"


async def test_a_failing_before_upgrade_hook_answers_500(caplog: pytest.LogCaptureFixture) -> None:
    hub = chat_hub()

    @hub.before_upgrade
    def broken(request: Request) -> None:
        raise RuntimeError("hook bug")

    async with serving(asgi_app(hub)) as h:
        peer = h.start(ws_scope("/ws/alice"))
        with caplog.at_level(logging.ERROR, logger="ikisocket"):
            start = await peer.connect()
    assert start["status"] == 500
    assert "hook bug" in caplog.text


# -- plain HTTP, the fallback app and the lifespan ----------------------------------------


async def call_http(app: ASGIApp, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    with anyio.fail_after(LIMIT):
        await app(ws_scope(path, kind="http"), receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


async def test_http_requests_get_426_on_websocket_routes_and_404_elsewhere() -> None:
    app = asgi_app(chat_hub())
    status, headers, _ = await call_http(app, "/ws/alice")
    assert status == 426
    assert headers[b"upgrade"] == b"websocket"
    status, _, body = await call_http(app, "/index.html")
    assert (status, body) == (404, b"Not Found\n")


async def test_the_fallback_app_gets_everything_that_is_not_a_hub_route() -> None:
    calls: list[tuple[str, str]] = []

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope["type"], scope.get("path", "")))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"from the host app"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "host socket"})

    app = asgi_app(chat_hub(), fallback=fallback)
    assert await call_http(app, "/") == (200, {}, b"from the host app")
    status, _, _ = await call_http(app, "/ws/alice")
    assert status == 426
    async with serving(app) as h:
        other = await h.open("/other")
        assert await other.get_text() == "host socket"
        mine = await h.open("/ws/alice")
        assert await mine.get_text() == "Hello user: alice"
    assert calls == [("http", "/"), ("websocket", "/other")]


async def run_lifespan(app: ASGIApp, body: Callable[[], Awaitable[None]]) -> list[str]:
    """Run a lifespan: startup, ``body``, shutdown; returns what the app sent."""
    to_app = Box()
    sent: list[str] = []
    started = anyio.Event()
    done = anyio.Event()

    async def send(message: Message) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            started.set()
        if message["type"] == "lifespan.shutdown.complete":
            done.set()

    async with anyio.create_task_group() as tg:
        scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}}
        tg.start_soon(app, scope, to_app.get, send)
        with anyio.fail_after(LIMIT):
            to_app.put({"type": "lifespan.startup"})
            await started.wait()
        await body()
        with anyio.fail_after(LIMIT):
            to_app.put({"type": "lifespan.shutdown"})
            await done.wait()
    return sent


async def test_lifespan_shutdown_closes_every_connection_with_1001() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_CLOSE)
    app = asgi_app(hub)
    async with serving(app) as h:
        peers: list[Peer] = []

        async def body() -> None:
            peers.append(await h.open("/ws/alice"))

        sent = await run_lifespan(app, body)
        (alice,) = peers
        assert await alice.get_text() == "Hello user: alice"
        assert await alice.get() == {
            "type": "websocket.close",
            "code": 1001,
            "reason": "server shutting down",
        }
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [name for name, _, _ in log] == ["close"]


async def test_lifespan_is_relayed_to_the_fallback_app() -> None:
    seen: list[str] = []

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    hub = chat_hub()
    app = asgi_app(hub, fallback=fallback)

    async def body() -> None:
        hub.broadcast("nobody listens")

    sent = await run_lifespan(app, body)
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# -- async listeners and work from outside -------------------------------------------------


def gated_hub() -> tuple[Hub, anyio.Event]:
    """``/gate``: an async listener that waits for a message on ``/opener``."""
    hub = Hub()
    gate = anyio.Event()

    @hub.websocket("/gate")
    def gated(kws: Websocket) -> None:
        async def wait(ep: EventPayload) -> None:
            await gate.wait()
            ep.kws.emit(b"after the gate: " + ep.data)

        kws.on(EVENT_MESSAGE, wait)

    @hub.websocket("/opener")
    def opener(kws: Websocket) -> None:
        def open_gate(ep: EventPayload) -> None:
            gate.set()
            ep.kws.emit("opened")

        kws.on(EVENT_MESSAGE, open_gate)

    return hub, gate


async def test_an_async_listener_holds_its_connection_but_not_the_others() -> None:
    hub, _ = gated_hub()
    async with serving(asgi_app(hub)) as h:
        waiting = await h.open("/gate")
        await waiting.text("one")
        await waiting.text("two")
        opener = await h.open("/opener")
        # If the waiting listener blocked every connection, this would never arrive.
        await opener.text("open")
        assert await opener.get_text() == "opened"
        assert await waiting.get_text() == "after the gate: one"
        assert await waiting.get_text() == "after the gate: two"


async def test_async_listeners_keep_each_connections_order() -> None:
    hub = Hub()
    hub.websocket("/ws/:id", lambda kws: None)
    started: list[str] = []

    @hub.on(EVENT_MESSAGE)
    async def reply(ep: EventPayload) -> None:
        started.append(ep.text)
        # The first message of each connection waits longest: order must not depend on it.
        await anyio.sleep(0.02 if ep.text.endswith("-0") else 0)
        ep.kws.emit("done " + ep.text)

    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.emit("sync " + ep.text))
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        bob = await h.open("/ws/bob")
        for i in range(3):
            await alice.text(f"a-{i}")
            await bob.text(f"b-{i}")
        for peer, name in ((alice, "a"), (bob, "b")):
            got = [await peer.get_text() for _ in range(6)]
            # Each message's listeners, sync and async, finish before the next message.
            assert got == [
                line for i in range(3) for line in (f"sync {name}-{i}", f"done {name}-{i}")
            ]
    # The two connections did not wait for each other.
    assert started.index("b-0") < started.index("a-1")


async def test_async_terminal_listeners_run_to_completion() -> None:
    hub = chat_hub()
    finished: list[str] = []

    @hub.on(EVENT_DISCONNECT)
    async def slow_cleanup(ep: EventPayload) -> None:
        await anyio.sleep(0.01)
        finished.append(ep.socket_attributes["user_id"])

    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        await alice.disconnect()
        await alice.wait_finished()
        assert finished == ["alice"]


async def test_an_async_route_callback_runs_before_connect_and_before_messages() -> None:
    hub = Hub()
    order: list[str] = []

    @hub.websocket("/slow-open")
    async def slow_open(kws: Websocket) -> None:
        await anyio.sleep(0.01)
        order.append("route")
        kws.emit("ready")

    hub.on(EVENT_CONNECT, lambda ep: order.append("connect"))
    hub.on(EVENT_MESSAGE, lambda ep: order.append("message"))
    async with serving(asgi_app(hub)) as h:
        peer = await h.open("/slow-open")
        await peer.text("early")
        assert await peer.get_text() == "ready"
        await until(lambda: len(order) == 3)
    assert order == ["route", "connect", "message"]


@pytest.mark.parametrize("with_lifespan", [False, True], ids=["in-connection", "in-lifespan"])
async def test_emits_from_background_tasks_are_delivered(with_lifespan: bool) -> None:
    hub = chat_hub()
    app = asgi_app(hub)
    async with serving(app) as h:
        peers: list[Peer] = []

        async def body() -> None:
            alice = await h.open("/ws/alice")
            assert await alice.get_text() == "Hello user: alice"
            # Outside any input call: only the wakeup makes the adapter drain.
            hub.broadcast("tick")
            hub.fire(EVENT_MESSAGE, "fired")
            assert await alice.get_text() == "tick"
            assert await alice.get_text() == "fired"
            peers.append(alice)

        if with_lifespan:
            await run_lifespan(app, body)
        else:
            await body()
            # The service moves to another connection when its host leaves.
            bob = await h.open("/ws/bob")
            assert await bob.get_text() == "Hello user: bob"
            await peers[0].disconnect()
            await peers[0].wait_finished()
            hub.emit_to_list(hub.connections, "still delivered")
            assert await bob.get_text() == "still delivered"


async def test_the_lifespan_context_manager_hosts_the_service() -> None:
    hub = chat_hub(idle_timeout=0.2)
    app = asgi_app(hub)
    async with serving(app) as h, app.lifespan():
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        assert await alice.get() == {
            "type": "websocket.close",
            "code": 1001,
            "reason": "idle timeout",
        }


async def test_idle_connections_are_closed_by_the_timer() -> None:
    hub = chat_hub(idle_timeout=0.2)
    log = log_events(hub, EVENT_DISCONNECT, EVENT_CLOSE)
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        assert await alice.get() == {
            "type": "websocket.close",
            "code": 1001,
            "reason": "idle timeout",
        }
        await alice.wait_finished()
    # The peer timed out: that is a disconnect, caused by IdleTimeout.
    assert [name for name, _, _ in log] == ["disconnect"]
    error = log[0][2]
    assert isinstance(error, ConnectionClosed)
    assert isinstance(error.cause, IdleTimeout)


async def test_the_service_moves_to_another_connection_when_its_host_leaves() -> None:
    # Without a lifespan the service runs among a connection's own tasks; when that
    # connection ends, it moves to another's, and the timers keep firing there.
    hub = chat_hub(idle_timeout=0.3)
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")  # (the first: the service starts among its tasks)
        assert await alice.get_text() == "Hello user: alice"
        bob = await h.open("/ws/bob")
        assert await bob.get_text() == "Hello user: bob"
        assert await alice.get_text() == "New user connected: bob"
        await alice.disconnect()
        await alice.wait_finished()
        started = time.monotonic()
        await bob.text("still here")
        assert await bob.get_text() == "still here"
        assert await bob.get() == {
            "type": "websocket.close",
            "code": 1001,
            "reason": "idle timeout",
        }
        assert time.monotonic() - started >= 0.25
        await bob.wait_finished()


async def test_the_service_sleeps_until_the_next_deadline_instead_of_polling() -> None:
    hub = chat_hub(idle_timeout=0.3)
    ticks: list[float] = []
    tick = hub.tick

    def counting_tick(now: float) -> None:
        ticks.append(now)
        tick(now)

    hub.tick = counting_tick  # type: ignore[method-assign]
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        await alice.text("still here")  # activity moves the deadline
        assert await alice.get_text() == "still here"
        assert await alice.get() == {
            "type": "websocket.close",
            "code": 1001,
            "reason": "idle timeout",
        }
        await alice.wait_finished()
        # Nothing is connected: no deadline, so the service sleeps for good.
        assert app_server(hub).next_deadline() is None
    # A tick per input (the accept and the message stamp the time) and one per deadline
    # the service slept until (the first was moved by the message; one more for float
    # rounding at most): never a tick per period (every 75 ms would be about eight).
    assert 3 <= len(ticks) <= 5


async def test_a_socketio_session_gets_its_pings_from_a_service_that_slept_without_deadline() -> (
    None
):
    # A plain WebSocket adds no deadline, so its accept leaves a sleeping service asleep;
    # a Socket.IO session's accept arms its ping, and that one must wake the service.
    hub = chat_hub()
    hub.socketio(ping_interval=0.2, ping_timeout=5.0)
    async with serving(asgi_app(hub)) as h:
        plain = await h.open("/ws/alice")
        assert await plain.get_text() == "Hello user: alice"
        server = app_server(hub)
        assert server.next_deadline() is None
        started = time.monotonic()
        sio = await h.open("/socket.io/", query=b"EIO=4&transport=websocket")
        opened = await sio.get_text()
        assert opened.startswith("0{")
        assert '"pingInterval":200' in opened
        # The second: the pong arms the next ping, due before the pong deadline (5 s) the
        # service slept until meanwhile.
        for _ in range(2):
            assert await sio.get_text() == "2"
            await sio.text("3")
        assert time.monotonic() - started >= 0.35
        for peer in (sio, plain):
            await peer.disconnect()
            await peer.wait_finished()


async def test_an_ack_asked_in_a_reply_times_out_on_time_though_the_service_slept() -> None:
    # The reply is the input's only output (written by the reader at once, no drain), and
    # it arms the ack's timeout: earlier than anything the service sleeps until (the next
    # ping, 30 s away), so it must be woken for it.
    hub = Hub()
    hub.socketio(ping_interval=30.0, ping_timeout=20.0)
    outcomes: list[Any] = []

    @hub.on("ask")
    def ask(ep: EventPayload) -> None:
        ep.kws.emit_event("question", ack=outcomes.append, timeout=0.2)

    async with serving(asgi_app(hub)) as h:
        sio = await h.open("/socket.io/", query=b"EIO=4&transport=websocket")
        assert (await sio.get_text()).startswith("0{")
        await sio.text("40")
        assert (await sio.get_text()).startswith("40{")
        started = time.monotonic()
        await sio.text('42["ask"]')
        assert await sio.get_text() == '420["question"]'
        with anyio.fail_after(3):
            while not outcomes:
                await anyio.sleep(0.02)
        assert isinstance(outcomes[0], AckTimeout)
        assert time.monotonic() - started >= 0.2
        await sio.disconnect()
        await sio.wait_finished()


async def test_an_ended_connection_frees_the_servers_objects_without_the_cycle_collector() -> None:
    # What the ASGI server made for a connection (here the peer, whose send the app
    # holds) goes when the connection ends, by reference counting: a reference cycle
    # through the app's connection would keep it (transport, protocol, parser on a real
    # server) until a cyclic collection, which a busy server runs over every object.
    hub = chat_hub()
    gc.collect()
    gc.disable()
    try:
        async with serving(asgi_app(hub)) as h:
            alice = await h.open("/ws/alice")
            assert await alice.get_text() == "Hello user: alice"
            await alice.disconnect()
            await alice.wait_finished()
            for _ in range(3):  # (the task that ran the call is let go of)
                await anyio.lowlevel.checkpoint()
            gone = weakref.ref(alice)
            del alice
            assert gone() is None
            # Nor does anything of ours wait in a cycle (the engine's connection, its handle,
            # the adapter's connection object): the collector would free none of them.
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            ours = (ServerConnection, Websocket, _Conn)
            assert [type(o).__name__ for o in gc.garbage if isinstance(o, ours)] == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def app_server(hub: Hub) -> Server:
    server = asgi_app(hub)._driver.server
    assert server is not None
    return server


# -- limits and backpressure ----------------------------------------------------------------


async def test_a_message_over_max_message_size_closes_with_1009() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_ERROR, EVENT_DISCONNECT, EVENT_CLOSE)
    async with serving(asgi_app(hub, max_message_size=10)) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        await alice.text("0123456789")
        assert await alice.get_text() == "0123456789"
        await alice.text("0123456789+")
        assert await alice.get() == {
            "type": "websocket.close",
            "code": 1009,
            "reason": "message of 11+ bytes exceeds 10",  # the engine's, as on sockets
        }
    assert [name for name, _, _ in log] == ["error", "disconnect"]
    error = log[0][2]
    assert isinstance(error, RemoteProtocolError)
    assert error.close_code == 1009
    ended = log[1][2]
    assert isinstance(ended, ConnectionClosed)
    assert (ended.code, ended.cause) == (1009, error)


async def test_drop_policy_drops_for_the_slow_client_only_and_reports_once() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_ERROR)
    app = asgi_app(hub, max_queue=1000, backpressure="drop")
    async with serving(app) as h:
        fast = await h.open("/ws/fast")
        slow = await h.open("/ws/slow")
        assert await fast.get_text() == "Hello user: fast"
        assert await fast.get_text() == "New user connected: slow"
        assert await slow.get_text() == "Hello user: slow"
        slow.stall()
        for i in range(30):
            hub.broadcast(f"{i:03d}" + "x" * 97)
            # The fast client reads each one; only the stalled one falls behind.
            assert (await fast.get_text())[:3] == f"{i:03d}"
        assert app.stats.dropped_messages > 0
        assert [(name, user) for name, user, _ in log] == [("error", "slow")]
        assert isinstance(log[0][2], SlowConsumer)
        slow.unstall()
        got = [
            m["text"][:3]
            for m in [await slow.get() for _ in range(30 - app.stats.dropped_messages)]
        ]
        # What was kept arrives in order, and the connection stays open.
        assert got == sorted(got)
        assert slow.pending() == []
        assert len(hub) == 2


async def test_each_burst_past_max_queue_is_reported_once_after_what_was_kept_is_written() -> None:
    # A burst queued in one go (one drain) overflows a reading client's buffer: what fits
    # is written when the drain comes, the rest dropped and reported once. Once written,
    # the next burst that overflows is reported again.
    hub = Hub()
    uuids: dict[str, str] = {}

    @hub.websocket("/ws/:id")
    def route(kws: Websocket) -> None:
        kws.set_attribute("user_id", kws.params["id"])
        uuids[kws.params["id"]] = kws.uuid

    log = log_events(hub, EVENT_ERROR)

    @hub.on(EVENT_MESSAGE)
    def burst(ep: EventPayload) -> None:
        for i in range(10):
            hub.emit_to(ep.text, f"{i}" + "y" * 199)

    app = asgi_app(hub, max_queue=1000, backpressure="drop")
    async with serving(app) as h:
        sender = await h.open("/ws/sender")
        target = await h.open("/ws/target")
        for bursts in (1, 2):
            await sender.text(uuids["target"])
            got = [(await target.get_text())[0] for _ in range(5)]
            assert got == ["0", "1", "2", "3", "4"]  # 1,000 bytes fit, the others went
            assert len(log) == bursts  # (reported as it was dropped, before the drain)
            assert app.stats.dropped_messages == 5 * bursts
        assert target.pending() == []
    assert [(name, user) for name, user, _ in log] == [("error", "target")] * 2


async def test_output_held_to_the_end_of_the_turn_reaches_a_client_whose_send_waits() -> None:
    # A broadcast from an input waits in the engine for the end of the loop's turn, which
    # writes it from a loop callback, in no task. A send that has to wait there (a client
    # not reading) goes to that connection's sender task, started from the callback.
    hub = chat_hub()
    hub.on(EVENT_MESSAGE, lambda ep: hub.broadcast(ep.data) if ep.text == "all" else None)
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        bob = await h.open("/ws/bob")
        assert [await alice.get_text() for _ in range(2)] == [
            "Hello user: alice",
            "New user connected: bob",
        ]
        assert await bob.get_text() == "Hello user: bob"
        bob.stall()
        await alice.text("all")
        assert [await alice.get_text() for _ in range(2)] == ["all", "all"]  # echo, broadcast
        await anyio.sleep(0.05)
        bob.unstall()
        assert await bob.get_text() == "all"
        await bob.text("still")
        assert await bob.get_text() == "still"


async def test_close_policy_closes_the_slow_client_with_1013_even_if_its_send_is_stuck() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_ERROR, EVENT_DISCONNECT, EVENT_CLOSE)
    # What was taken gets close_timeout to be written; then it is abandoned for the close.
    app = asgi_app(hub, max_queue=1000, backpressure="close", close_timeout=0.2)
    async with serving(app) as h:
        fast = await h.open("/ws/fast")
        slow = await h.open("/ws/slow")
        assert await slow.get_text() == "Hello user: slow"
        assert await fast.get_text() == "Hello user: fast"
        assert await fast.get_text() == "New user connected: slow"
        slow.stall()
        for i in range(30):
            hub.broadcast(f"{i:03d}" + "x" * 97)
            assert (await fast.get_text())[:3] == f"{i:03d}"
        # The stuck send was abandoned; the close went out instead.
        assert await slow.get() == {
            "type": "websocket.close",
            "code": 1013,
            "reason": "output buffer overflow",
        }
        await slow.wait_finished()
        assert [(name, user) for name, user, _ in log] == [
            ("error", "slow"),
            ("disconnect", "slow"),
        ]
    assert isinstance(log[0][2], SlowConsumer)
    assert app.stats.overflow_closes == 1
    assert hub.connections == ()


async def test_a_stalled_client_gets_every_broadcast_in_order_once_it_reads_again() -> None:
    # On asyncio the task that broadcasts runs each receiver's send itself while that
    # receiver's sender is idle; a send that has to wait, and what comes after it, go
    # to the receiver's own task. Neither may reorder, lose or hold up anyone else.
    hub = chat_hub()
    app = asgi_app(hub, max_queue=1_000_000)
    async with serving(app) as h:
        fast = await h.open("/ws/fast")
        slow = await h.open("/ws/slow")
        assert await fast.get_text() == "Hello user: fast"
        assert await fast.get_text() == "New user connected: slow"
        assert await slow.get_text() == "Hello user: slow"
        slow.stall()
        for batch in range(10):
            for i in range(3):  # queued together: taken together, the first send waits
                hub.broadcast(f"{batch * 3 + i:03d}")
            for i in range(3):
                assert await fast.get_text() == f"{batch * 3 + i:03d}"
        await fast.text("echo")  # a broadcaster's own reader is not held up either
        assert await fast.get_text() == "echo"
        slow.unstall()
        assert [await slow.get_text() for _ in range(30)] == [f"{i:03d}" for i in range(30)]
        assert slow.pending() == []
        assert app.stats.dropped_messages == 0


async def test_an_echo_whose_send_waits_keeps_its_place_before_later_output() -> None:
    # On asyncio the reader writes its own message's reply itself; output another task
    # produces meanwhile waits for that write, then goes out in order.
    hub = chat_hub()
    app = asgi_app(hub)
    async with serving(app) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        alice.stall()
        await alice.text("one")
        await until(lambda: app.stats.messages_in == 1)  # its reply's send is waiting
        hub.broadcast("two")
        alice.unstall()
        assert [await alice.get_text(), await alice.get_text()] == ["one", "two"]
        await alice.text("three")
        assert await alice.get_text() == "three"
        assert alice.pending() == []


@pytest.mark.parametrize("reads", [True, False])
async def test_a_close_during_an_echos_waiting_send_comes_after_it(reads: bool) -> None:
    # The close waits for the reader's write of the reply, within close_timeout: a client
    # that reads gets the reply, what followed it and the close; one that never reads
    # again has its call ended at close_timeout.
    hub = chat_hub()
    app = asgi_app(hub, close_timeout=0.3)
    async with serving(app) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        alice.stall()
        await alice.text("one")
        await until(lambda: app.stats.messages_in == 1)
        hub.broadcast("two")
        (uuid,) = hub.connections
        hub.close(uuid, 4000, "bye")
        if reads:
            await anyio.sleep(0.05)
            alice.unstall()
            assert [await alice.get_text(), await alice.get_text()] == ["one", "two"]
            assert await alice.get() == close_message(4000, "bye")
        await alice.wait_finished()
        assert hub.connections == ()


async def test_sends_keep_their_calls_context_whichever_task_produced_the_output() -> None:
    # A middleware sets a context variable for the whole call (a request id), and its send
    # wrapper reads it and sets one of its own around the server's send (tracing does both).
    # Output produced by another task (here the test's, with a request id of its own) is
    # written by that task while the receiver keeps up; a send of it that has to wait, and
    # what follows, are finished by a task of the receiver's. Every send must see its own
    # call's request id, and the wrapper's variable is reset in the context where it was set.
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
    current: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="")
    seen: dict[str, list[str]] = {"/ws/fast": [], "/ws/slow": []}
    reset: list[str] = []
    inner = asgi_app(chat_hub(), max_queue=1_000_000)
    hub = inner.hub

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        request_id.set(path)

        async def traced(message: Message) -> None:
            if message["type"] == "websocket.send":
                seen[path].append(request_id.get())
            token = current.set("sending")
            try:
                await send(message)
            finally:
                reset.append(current.get())
                current.reset(token)

        await inner(scope, receive, traced)

    async with serving(cast(ASGIApp, app)) as harness:
        fast = await harness.open("/ws/fast")
        slow = await harness.open("/ws/slow")
        assert await fast.get_text() == "Hello user: fast"
        assert await fast.get_text() == "New user connected: slow"
        assert await slow.get_text() == "Hello user: slow"
        request_id.set("the broadcaster")
        slow.stall()
        for i in range(5):
            hub.broadcast(f"{i}")
            assert await fast.get_text() == f"{i}"
        slow.unstall()
        assert [await slow.get_text() for _ in range(5)] == [f"{i}" for i in range(5)]
        for i in range(5, 8):  # once it keeps up again
            hub.broadcast(f"{i}")
            assert await slow.get_text() == f"{i}"
        assert len(hub) == 2
        await fast.disconnect()
        await slow.disconnect()
        await fast.wait_finished()
        await slow.wait_finished()
    assert seen["/ws/fast"] == ["/ws/fast"] * 10  # its welcome, the newcomer, 8 broadcasts
    assert seen["/ws/slow"] == ["/ws/slow"] * 9  # its welcome, 8 broadcasts
    assert reset
    assert set(reset) == {"sending"}


async def test_a_send_failing_for_one_receiver_of_a_broadcast_ends_only_that_connection() -> None:
    hub = chat_hub()
    log = log_events(hub, EVENT_DISCONNECT)
    async with serving(asgi_app(hub)) as h:
        alice = await h.open("/ws/alice")
        bob = await h.open("/ws/bob")
        assert await alice.get_text() == "Hello user: alice"
        assert await alice.get_text() == "New user connected: bob"
        assert await bob.get_text() == "Hello user: bob"
        bob.send_error = OSError("client gone")
        hub.broadcast("one")
        assert await alice.get_text() == "one"
        await until(lambda: len(hub) == 1)
        assert [(name, user) for name, user, _ in log] == [("disconnect", "bob")]
        hub.broadcast("two")
        assert await alice.get_text() == "two"
        await bob.disconnect(1006)
        await bob.wait_finished()
        assert bob.pending() == []


async def test_a_single_message_larger_than_max_queue_is_still_sent() -> None:
    hub = chat_hub()
    async with serving(asgi_app(hub, max_queue=10)) as h:
        alice = await h.open("/ws/alice")
        assert await alice.get_text() == "Hello user: alice"
        hub.emit_to(hub.connections[0], b"\x01" * 100, BINARY)
        assert await alice.get() == {"type": "websocket.send", "bytes": b"\x01" * 100}


def test_options_are_checked() -> None:
    hub = Hub()
    with pytest.raises(ValueError, match="backpressure"):
        asgi_app(hub, backpressure="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_queue"):
        asgi_app(hub, max_queue=0)
    with pytest.raises(ValueError, match="max_message_size"):
        asgi_app(hub, max_message_size=0)


def test_apps_of_one_hub_share_one_engine() -> None:
    hub = Hub()
    app = asgi_app(hub)
    assert asgi_app(hub).stats is app.stats
    assert asgi_app(Hub()).stats is not app.stats
    assert isinstance(app.stats, ServerStats)
    with pytest.raises(ValueError, match="other limits"):
        asgi_app(hub, max_queue=1)  # one hub, one engine: its limits are the same


def test_every_engine_limit_is_a_keyword() -> None:
    app = asgi_app(Hub(), backpressure="close", close_timeout=1.5, compression=False)
    assert app.config == ServerConfig(backpressure="close", close_timeout=1.5, compression=False)
    with pytest.raises(TypeError):
        asgi_app(Hub(), no_such_limit=1)


def test_the_old_stats_name_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="ServerStats"):
        from ikisocket_adapters.asgi import ASGIStats  # noqa: PLC0415
    assert ASGIStats is ServerStats
    with pytest.raises(AttributeError):
        ikisocket_adapters.asgi.NoSuchName  # noqa: B018


async def test_a_broken_before_upgrade_verdict_is_logged_and_refused_with_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = chat_hub()

    @hub.before_upgrade
    def broken(request: Request) -> Any:
        # Anything but None, a bool, Accept or Reject: the hub refuses with 500.
        return "not a verdict" if request.path.endswith("alice") else None

    app = asgi_app(hub)
    async with serving(app) as h:
        peer = h.start(ws_scope("/ws/alice"))
        with caplog.at_level(logging.ERROR, logger="ikisocket"):
            start = await peer.connect()
        assert (await peer.get())["type"] == "websocket.http.response.body"
        await peer.wait_finished()
    assert start["status"] == 500
    assert caplog.text.count("refusing the WebSocket request for /ws/alice") == 1
    assert len(hub) == 0
    # The engine goes on serving.
    async with serving(app) as h:
        peer = await h.open("/ws/bob")
        assert await peer.get_text() == "Hello user: bob"


# -- the handler watchdog ------------------------------------------------------------------


def hanging_hub(**options: Any) -> tuple[Hub, list[BaseException]]:
    return watchdog_hub("/ws/:id", **options)


async def test_a_hung_async_listener_is_cancelled_at_handler_timeout() -> None:
    hub, errors = hanging_hub()
    app = asgi_app(hub, handler_timeout=0.2)
    async with serving(app) as h:
        hung, other = await h.open("/ws/a"), await h.open("/ws/b")
        await hung.text("hang")
        await hung.text("next")  # runs once "hang" is cancelled
        await other.text("meanwhile")
        assert await other.get_text() == "done meanwhile"
        assert await hung.get_text() == "done next"
        assert [type(e) for e in errors] == [HandlerTimeout]
        assert app.stats.handler_timeouts == 1


async def test_a_hung_async_listener_closes_with_1011_when_configured() -> None:
    hub, errors = hanging_hub(on_listener_error="close")
    app = asgi_app(hub, handler_timeout=0.2)
    async with serving(app) as h:
        hung, other = await h.open("/ws/a"), await h.open("/ws/b")
        await hung.text("hang")
        closed = await hung.get()
        assert closed["type"] == "websocket.close"
        assert closed["code"] == 1011
        await other.text("fine")
        assert await other.get_text() == "done fine"
        assert len(errors) == 1


async def test_a_raising_async_listener_affects_no_other_connection() -> None:
    hub, errors = hanging_hub()
    async with serving(asgi_app(hub)) as h:
        bad, good = await h.open("/ws/a"), await h.open("/ws/b")
        await bad.text("boom")
        await good.text("hello")
        assert await good.get_text() == "done hello"
        await bad.text("again")
        assert await bad.get_text() == "done again"
        assert [str(e) for e in errors] == ["boom"]


async def test_a_blocking_listener_is_logged_once_behind_asgi(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)

    @hub.on(EVENT_MESSAGE)
    def blocker(ep: EventPayload) -> None:
        time.sleep(0.15)  # a blocking call: the ASGI app's clock sees the loop held
        ep.kws.emit(ep.data)

    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        async with serving(asgi_app(hub)) as h:
            peer = await h.open("/ws")
            for word in ("one", "two"):
                await peer.text(word)
                assert await peer.get_text() == word
    blocked = [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]
    assert len(blocked) == 1
    assert "blocker (message)" in blocked[0]
