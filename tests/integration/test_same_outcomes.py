"""One engine, one behaviour: the same cases give the same outcomes on every driver.

Each case below is written once against :class:`Driver` and run through
``TestClient`` (in memory, fake clock), each socket adapter and the ASGI
adapter behind uvicorn (servers in subprocesses, clients over 127.0.0.1:
``websockets`` where a client behaves, :class:`~proof_peers.RawPeer` where it
must not). A case returns an :class:`Outcome`: the HTTP status, the close code
and reason class the client saw, the messages delivered and the hub's events
in order. Every driver's outcome must equal ``TestClient``'s, except where
:data:`DIFFERENCES` says why a driver cannot show it, and what it shows
instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import pytest
from proof_app import CONFIGS, FLOOD_REQUEST, build_hub
from proof_peers import LIMIT, RawPeer, Record, Served, http_status, records, require, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from wsproto.events import TextMessage

from ikisocket_core import TEXT
from ikisocket_core.testing import TestClient, WebSocketRejected, WebSocketTestSession

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: One delivered message: ``("text" | "binary", data)``.
Msg = tuple[str, bytes]
#: The default ``max_message_size`` (1 MiB).
MAX_MESSAGE = 1024 * 1024
#: Flood requests a slow consumer sends at most: 16 MiB of output, far past any bound.
MAX_FLOOD_ROUNDS = 256
#: A request head over the default ``max_request_size`` (16 KiB).
BIG_HEADERS = {"x-padding": "a" * 20_000}
TERMINAL = ("disconnect", "close")


@dataclass(frozen=True)
class Outcome:
    """What a user of the server can observe of one case.

    Attributes:
        status: The HTTP status of the (last) request: 101 once upgraded.
        close: The close code the client got from the server and the class of
            its reason (digits masked: sizes and timeouts vary), or ``None``
            when the server did not close the connection (the client did,
            or it is still open).
        received: The messages each client got, in order.
        events: The hub's events of the case's connections, in order.
    """

    status: int
    close: tuple[int, str] | None = None
    received: tuple[tuple[str, tuple[Msg, ...]], ...] = ()
    events: tuple[Record, ...] = ()


def reason_class(reason: str) -> str:
    """The reason with every number masked (``message of N+ bytes exceeds N``)."""
    return re.sub(r"\d+(\.\d+)?", "N", reason)


def terminal(found: list[Record]) -> bool:
    return any(event in TERMINAL for _, event, _ in found)


def squash(found: list[Record]) -> tuple[Record, ...]:
    """Collapse runs of equal events (how many flood requests fit varies by buffers)."""
    out: list[Record] = []
    for item in found:
        if not out or out[-1] != item:
            out.append(item)
    return tuple(out)


# -- drivers -------------------------------------------------------------------------------


class Peer(Protocol):
    """A client connection, whatever the driver."""

    def send(self, data: str | bytes) -> None: ...

    def receive(self) -> Msg: ...

    def close(self) -> None:
        """Close from the client side (1000) and wait for the server's answer."""

    def closed_by_server(self) -> tuple[int, str] | None:
        """Read until the server closes: its close code and reason class (``None``: open)."""

    def abort(self) -> None: ...


class Driver(Protocol):
    """One way of serving the proof hub."""

    name: str

    def connect(self, path: str) -> Peer:
        """A well-behaved client (reads, answers pings)."""

    def connect_slow(self, path: str, config: str) -> Peer:
        """A client that reads nothing until ``closed_by_server`` and never answers pings."""

    def http_status(self, path: str, headers: dict[str, str], *, upgrade: bool) -> int: ...

    def records(
        self,
        users: tuple[str, ...],
        config: str = ...,
        until: Callable[[list[Record]], bool] = ...,
    ) -> list[Record]: ...

    def let_time_pass(self, config: str) -> None:
        """Enough time for a keepalive ping and its timeout (fake clock only)."""


class _SessionPeer:
    def __init__(self, session: WebSocketTestSession) -> None:
        self.session = session

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.session.send_text(data)
        else:
            self.session.send_bytes(data)

    def receive(self) -> Msg:
        kind, data = self.session.receive()
        return ("text" if kind is TEXT else "binary", data)

    def close(self) -> None:
        self.session.close(1000)

    def closed_by_server(self) -> tuple[int, str] | None:
        self.session.resume_reading()
        code = self.session.close_code
        return None if code is None else (code, reason_class(self.session.close_reason))

    def abort(self) -> None:
        self.session.abort()


class TestClientDriver:
    """The reference: ``TestClient`` over the engine, one per server config."""

    __test__ = False
    name = "testclient"

    def __init__(self) -> None:
        self._clients: dict[str, TestClient] = {}
        self._records: dict[str, list[Record]] = {}

    def _client(self, config: str) -> TestClient:
        if config not in self._clients:
            found: list[Record] = []
            hub = build_hub(lambda user, event, detail: found.append((user, event, detail)))
            self._records[config] = found
            self._clients[config] = TestClient(hub, **CONFIGS[config])
        return self._clients[config]

    def connect(self, path: str) -> Peer:
        return _SessionPeer(self._client("main").websocket_connect(path))

    def connect_slow(self, path: str, config: str) -> Peer:
        session = self._client(config).websocket_connect(path)
        session.stop_reading()
        session.auto_pong = False
        return _SessionPeer(session)

    def http_status(self, path: str, headers: dict[str, str], *, upgrade: bool) -> int:
        client = self._client("main")
        if not upgrade:
            return client.request("GET", path, headers=headers).status
        try:
            client.websocket_connect(path, headers=headers).close()
        except WebSocketRejected as exc:
            return exc.status
        return 101

    def records(
        self,
        users: tuple[str, ...],
        config: str = "main",
        until: Callable[[list[Record]], bool] = lambda found: True,
    ) -> list[Record]:
        self._client(config)
        found = [r for r in self._records[config] if r[0] in users]
        assert until(found), found  # everything already happened, synchronously
        return found

    def let_time_pass(self, config: str) -> None:
        limits = CONFIGS[config]
        self._client(config).advance(3 * (limits["ping_interval"] + limits["ping_timeout"]))


class _WebsocketsPeer:
    def __init__(self, url: str) -> None:
        # Entered by hand: the peer outlives any one block of the case.
        self._cm = connect(
            url, open_timeout=LIMIT, close_timeout=LIMIT, ping_interval=None, compression=None
        )
        self.ws: ClientConnection = self._cm.__enter__()

    def send(self, data: str | bytes) -> None:
        self.ws.send(data)

    def receive(self) -> Msg:
        data = self.ws.recv(LIMIT)
        return ("text", data.encode()) if isinstance(data, str) else ("binary", data)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def closed_by_server(self) -> tuple[int, str] | None:
        try:
            while True:
                self.ws.recv(LIMIT)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return (1006, "")
            return (exc.rcvd.code, reason_class(exc.rcvd.reason))

    def abort(self) -> None:
        self._cm.__exit__(None, None, None)


class _RawPeer:
    def __init__(self, port: int, path: str) -> None:
        self.raw = RawPeer(port, path)

    def send(self, data: str | bytes) -> None:
        assert isinstance(data, str)
        self.raw.send(TextMessage(data=data))

    def receive(self) -> Msg:
        raise NotImplementedError("a slow peer reads only until closed")

    def close(self) -> None:
        raise NotImplementedError("a slow peer only aborts")

    def closed_by_server(self) -> tuple[int, str] | None:
        frame = self.raw.read_until_closed()
        return None if frame is None else (int(frame.code), reason_class(frame.reason or ""))

    def abort(self) -> None:
        self.raw.abort()


class ProcessDriver:
    """A socket adapter or the ASGI adapter, serving in subprocesses (one per config)."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self._directory = directory
        self._stack: dict[str, ExitStack] = {}
        self._served: dict[str, Served] = {}

    def _server(self, config: str) -> Served:
        if config not in self._served:
            stack = ExitStack()
            self._served[config] = stack.enter_context(serve(self.name, config, self._directory))
            self._stack[config] = stack
        return self._served[config]

    def close(self) -> None:
        for stack in self._stack.values():
            stack.close()

    def connect(self, path: str) -> Peer:
        return _WebsocketsPeer(self._server("main").url(path))

    def connect_slow(self, path: str, config: str) -> Peer:
        return _RawPeer(self._server(config).port, path)

    def http_status(self, path: str, headers: dict[str, str], *, upgrade: bool) -> int:
        return http_status(self._server("main").port, path, headers, upgrade=upgrade)

    def records(
        self,
        users: tuple[str, ...],
        config: str = "main",
        until: Callable[[list[Record]], bool] = lambda found: True,
    ) -> list[Record]:
        return records(self._server(config), users, until)

    def let_time_pass(self, config: str) -> None:
        pass  # real time passes while the peer waits for the close (closed_by_server)


# -- the cases ------------------------------------------------------------------------------


def echo_and_broadcast_order(d: Driver) -> Outcome:
    """Two clients: echoes to the sender, relays to the other, joins and leaves, in order."""
    listener = d.connect("/chat/eb-listener")
    talker = d.connect("/chat/eb-talker")
    for data in ("one", "two", b"\x00\x01three"):
        talker.send(data)
    got_talker = tuple(talker.receive() for _ in range(3))
    got_listener = [listener.receive() for _ in range(4)]
    talker.close()
    got_listener.append(listener.receive())  # left:eb-talker
    listener.close()
    users = ("eb-listener", "eb-talker")
    found = d.records(users, until=lambda f: sum(e in TERMINAL for _, e, _ in f) == 2)
    return Outcome(
        101,
        None,
        (("eb-talker", got_talker), ("eb-listener", tuple(got_listener))),
        tuple(found),
    )


def message_too_big(d: Driver) -> Outcome:
    """A message one byte over ``max_message_size``: 1009, and the hub sees why."""
    peer = d.connect("/chat/big")
    peer.send(b"x" * (MAX_MESSAGE + 1))
    close = peer.closed_by_server()
    return Outcome(101, close, (), tuple(d.records(("big",), until=terminal)))


def slow_consumer(d: Driver) -> Outcome:
    """A client that stops reading while the hub floods it: 1013 with ``backpressure="close"``."""
    peer = d.connect_slow("/chat/slow", "main")
    closed = False
    for rounds in range(1, MAX_FLOOD_ROUNDS + 1):
        peer.send(FLOOD_REQUEST)

        def handled(found: list[Record], rounds: int = rounds) -> bool:
            # connect, then one message per request so far (or the end of it).
            return terminal(found) or len(found) - 1 >= rounds

        found = d.records(("slow",), until=handled)
        if terminal(found):
            closed = True
            break
    close = peer.closed_by_server() if closed else None
    peer.abort()
    return Outcome(101, close, (), squash(d.records(("slow",), until=terminal)))


def keepalive_timeout(d: Driver) -> Outcome:
    """A client that never answers pings: 1011 once ``ping_timeout`` passes."""
    peer = d.connect_slow("/chat/mute", "keepalive")
    d.let_time_pass("keepalive")
    close = peer.closed_by_server()
    peer.abort()
    return Outcome(101, close, (), tuple(d.records(("mute",), "keepalive", until=terminal)))


def plain_get_on_websocket_route(d: Driver) -> Outcome:
    """A plain GET on a WebSocket route: 426 Upgrade Required, nothing reaches the hub."""
    status = d.http_status("/chat/plain", {}, upgrade=False)
    return Outcome(status, None, (), tuple(d.records(("plain",))))


def request_head_too_big(d: Driver) -> Outcome:
    """An upgrade request whose head is over ``max_request_size``: 431, nothing reaches the hub."""
    status = d.http_status("/chat/huge", BIG_HEADERS, upgrade=True)
    # Had it opened after all, the client has left already: wait for the end of it.
    found = d.records(("huge",), until=terminal if status == 101 else lambda f: True)
    return Outcome(status, None, (), tuple(found))


def uuid_taken(d: Driver) -> Outcome:
    """A second connection asking for a UUID that is connected: 409, the first one unharmed."""
    first = d.connect("/chat/twin-a")
    status = d.http_status("/chat/twin-b", {}, upgrade=True)
    first.send("still here")
    got = (first.receive(),)
    first.close()
    found = d.records(("twin-a", "twin-b"), until=terminal)
    return Outcome(status, None, (("twin-a", got),), tuple(found))


def broken_hook(d: Driver) -> Outcome:
    """A ``before_upgrade`` hook that raises: 500, nothing reaches the hub, the server goes on."""
    status = d.http_status("/chat/broken", {}, upgrade=True)
    after = d.connect("/chat/after-broken")
    after.send("ok?")
    got = (after.receive(),)
    after.close()
    found = d.records(("broken", "after-broken"), until=terminal)
    return Outcome(status, None, (("after-broken", got),), tuple(found))


CASES: dict[str, Callable[[Driver], Outcome]] = {
    "echo-broadcast": echo_and_broadcast_order,
    "1009-too-big": message_too_big,
    "1013-slow-consumer": slow_consumer,
    "1011-keepalive": keepalive_timeout,
    "426-plain-get": plain_get_on_websocket_route,
    "431-head-too-big": request_head_too_big,
    "409-uuid-taken": uuid_taken,
    "500-broken-hook": broken_hook,
}

#: What the reference outcome of each case must show, whatever the engine's details.
ESSENCE: dict[str, tuple[int, int | None]] = {
    "echo-broadcast": (101, None),
    "1009-too-big": (101, 1009),
    "1013-slow-consumer": (101, 1013),
    "1011-keepalive": (101, 1011),
    "426-plain-get": (426, None),
    "431-head-too-big": (431, None),
    "409-uuid-taken": (409, None),
    "500-broken-hook": (500, None),
}


@dataclass(frozen=True)
class Difference:
    """Why a driver cannot show the reference outcome of a case, and what it shows instead.

    Attributes:
        reason: Why.
        expect: Makes the outcome the driver must show from the reference one.
    """

    reason: str
    expect: Callable[[Outcome], Outcome]


#: The only places where a driver's outcome differs from ``TestClient``'s, and why.
DIFFERENCES: dict[tuple[str, str], Difference] = {
    ("uvicorn", "1011-keepalive"): Difference(
        "Behind ASGI the server owns the socket, so keepalive is its job: uvicorn's own "
        "ping closes with 1011 and its own reason, then tells the app only that the "
        "connection is gone (uvicorn reports 1005): no error event, no keepalive cause.",
        lambda ref: replace(
            ref,
            close=(1011, "keepalive ping timeout"),
            events=(("mute", "connect", ""), ("mute", "disconnect", "1005:-")),
        ),
    ),
    ("uvicorn", "431-head-too-big"): Difference(
        "Behind ASGI the server parses the request head, and the app sees only the scope: "
        "uvicorn (h11) takes a 20 KiB head that arrives whole, so the connection opens "
        "(the client then leaves: uvicorn reports 1005).",
        lambda ref: replace(
            ref,
            status=101,
            events=(("huge", "connect", ""), ("huge", "disconnect", "1005:-")),
        ),
    ),
}

DRIVERS = ("testclient", "asyncio", "trio", "anyio-asyncio", "uvicorn")
_REQUIRES = {"trio": "trio", "anyio-asyncio": "anyio", "uvicorn": "uvicorn"}


@pytest.fixture(scope="module")
def reference() -> dict[str, Outcome]:
    """``TestClient``'s outcome of each case, computed on first use."""
    return {}


@pytest.fixture(scope="module", params=DRIVERS)
def driver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Driver]:
    name: str = request.param
    if name == "testclient":
        yield TestClientDriver()
        return
    if name in _REQUIRES:
        require(_REQUIRES[name])
    process_driver = ProcessDriver(name, tmp_path_factory.mktemp(name))
    try:
        yield process_driver
    finally:
        process_driver.close()


@pytest.mark.parametrize("case", list(CASES))
def test_same_outcome(driver: Driver, case: str, reference: dict[str, Outcome]) -> None:
    if case not in reference:
        reference[case] = CASES[case](TestClientDriver())
    expected = reference[case]
    assert (expected.status, expected.close and expected.close[0]) == ESSENCE[case]
    difference = DIFFERENCES.get((driver.name, case))
    if difference is not None:
        expected = difference.expect(expected)
    assert CASES[case](driver) == expected


def test_differences_name_real_rows() -> None:
    """Every listed difference names a driver and a case that exist."""
    for driver_name, case in DIFFERENCES:
        assert driver_name in DRIVERS
        assert case in CASES
