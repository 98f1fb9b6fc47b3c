"""Test an ikisocket application with no network: virtual clients driven by hand.

:class:`TestClient` mirrors Starlette's ``TestClient``::

    client = TestClient(hub)
    with client.websocket_connect("/ws/alice?room=1", headers={"x-token": "t"}) as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "echo: hello"
    client.advance(30)  # move the fake clock (idle timeouts)

Everything happens synchronously inside the calls: when ``send_text`` returns,
every listener it triggered has run and every message the hub sent is waiting
in its recipient's inbox. ``async def`` listeners run to completion with a
small built-in runner when they await nothing that needs an event loop;
otherwise pass ``run_async=asyncio.run`` or ``run_async=trio_runner`` (see
:class:`TestClient`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from ._actions import Close, Reject, Send
from ._errors import IkisocketError
from ._events import MessageKind
from ._hub import Hub
from ._routing import Request
from ._websocket import Websocket

__all__ = [
    "NothingReceived",
    "TestClient",
    "WebSocketDisconnect",
    "WebSocketRejected",
    "WebSocketTestSession",
]


class WebSocketRejected(IkisocketError):
    """The hub refused the connection; ``status`` is the HTTP status it answered with.

    Args:
        status: The HTTP status.
        reason: The response body.
    """

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(
            f"connection rejected with HTTP {status}" + (f": {reason}" if reason else "")
        )
        self.status = status
        self.reason = reason


class WebSocketDisconnect(IkisocketError):
    """The server closed this virtual connection and no message is left to receive.

    Args:
        code: The close code the server sent.
        reason: The close reason.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(
            f"server closed the connection with {code}" + (f": {reason}" if reason else "")
        )
        self.code = code
        self.reason = reason


class NothingReceived(IkisocketError, AssertionError):
    """A ``receive_*`` call found no message waiting, or one of the other kind."""


def _run_without_loop(awaitable: Awaitable[None]) -> None:
    """Run an awaitable that needs no event loop (it awaits only plain coroutines)."""
    it = awaitable.__await__()
    try:
        while True:
            if it.send(None) is not None:
                it.close()
                raise RuntimeError(
                    "an async listener awaited something that needs an event loop; "
                    "pass run_async=asyncio.run (or a trio runner) to TestClient"
                )
    except StopIteration:
        return


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


class WebSocketTestSession:
    """One virtual client connection, made by :meth:`TestClient.websocket_connect`.

    Use it as a context manager: leaving the block closes it with 1000 if it is
    still open.
    """

    def __init__(self, client: TestClient, kws: Websocket) -> None:
        self._client = client
        #: The server-side handle of this connection.
        self.kws = kws
        self._inbox: deque[tuple[MessageKind, bytes]] = deque()
        self._close_code: int | None = None
        self._close_reason = ""
        self._client_closed = False

    @property
    def uuid(self) -> str:
        """The connection's UUID on the server (follows re-keying)."""
        return self.kws.uuid

    @property
    def close_code(self) -> int | None:
        """The close code the server sent, once it closed the connection."""
        self._client.pump()
        return self._close_code

    @property
    def close_reason(self) -> str:
        """The close reason the server sent."""
        self._client.pump()
        return self._close_reason

    @property
    def closed(self) -> bool:
        """Whether either side closed the connection (after performing queued actions)."""
        self._client.pump()
        return self._client_closed or self._close_code is not None

    @property
    def pending(self) -> int:
        """How many received messages are waiting (after performing queued actions)."""
        self._client.pump()
        return len(self._inbox)

    def __enter__(self) -> WebSocketTestSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.closed:
            self.close(1000)

    # -- sending ---------------------------------------------------------------------------

    def send_text(self, data: str) -> None:
        """Send a text message to the hub.

        Args:
            data: The text.
        """
        self._send(data.encode("utf-8"), MessageKind.TEXT)

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message to the hub.

        Args:
            data: The bytes.
        """
        self._send(bytes(data), MessageKind.BINARY)

    def send_json(self, data: Any, mode: str = "text") -> None:
        """Send a value as JSON, in a text (default) or binary message.

        Args:
            data: A JSON-serialisable value.
            mode: ``"text"`` or ``"binary"``.
        """
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self._send(encoded, MessageKind.BINARY if mode == "binary" else MessageKind.TEXT)

    def ping(self, data: bytes = b"") -> None:
        """Send a ping (the hub's ``ping`` listeners run).

        Args:
            data: The ping's application data.
        """
        self._check_open()
        self._client.hub.receive_ping(self.kws, data)
        self._client.pump()

    def pong(self, data: bytes = b"") -> None:
        """Send a pong (the hub's ``pong`` listeners run).

        Args:
            data: The pong's application data.
        """
        self._check_open()
        self._client.hub.receive_pong(self.kws, data)
        self._client.pump()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client side: the hub sees the peer go away (``disconnect``).

        Args:
            code: The close code.
            reason: The close reason.
        """
        if self.closed:
            return
        self._client_closed = True
        self._client._sessions.pop(self.kws, None)
        self._client.hub.receive_disconnect(self.kws, code, reason)
        self._client.pump()

    def abort(self) -> None:
        """Drop the connection without a close frame (the hub sees code 1006)."""
        self.close(1006)

    # -- receiving -------------------------------------------------------------------------

    def receive(self) -> tuple[MessageKind, bytes]:
        """Take the oldest waiting message.

        Returns:
            Its kind and data.

        Raises:
            WebSocketDisconnect: Nothing is waiting and the server closed the connection.
            NothingReceived: Nothing is waiting.
        """
        self._client.pump()
        if self._inbox:
            return self._inbox.popleft()
        if self._close_code is not None:
            raise WebSocketDisconnect(self._close_code, self._close_reason)
        raise NothingReceived("no message is waiting for this client")

    def receive_text(self) -> str:
        """Take the oldest waiting message, which must be text.

        Returns:
            The text.

        Raises:
            NothingReceived: Nothing is waiting, or it is binary.
            WebSocketDisconnect: Nothing is waiting and the server closed the connection.
        """
        return self._receive(MessageKind.TEXT).decode("utf-8")

    def receive_bytes(self) -> bytes:
        """Take the oldest waiting message, which must be binary.

        Returns:
            The bytes.

        Raises:
            NothingReceived: Nothing is waiting, or it is text.
            WebSocketDisconnect: Nothing is waiting and the server closed the connection.
        """
        return self._receive(MessageKind.BINARY)

    def receive_json(self, mode: str = "text") -> Any:
        """Take the oldest waiting message, which must be JSON in a text (or binary) message.

        Args:
            mode: ``"text"`` or ``"binary"``.

        Returns:
            The parsed value.
        """
        kind = MessageKind.BINARY if mode == "binary" else MessageKind.TEXT
        return json.loads(self._receive(kind))

    def _receive(self, kind: MessageKind) -> bytes:
        got, data = self.receive()
        if got is not kind:
            self._inbox.appendleft((got, data))
            raise NothingReceived(f"expected a {kind.name} message, the next one is {got.name}")
        return data

    def _send(self, data: bytes, kind: MessageKind) -> None:
        self._check_open()
        self._client.hub.receive_message(self.kws, data, kind)
        self._client.pump()

    def _check_open(self) -> None:
        if self._client_closed or self._close_code is not None:
            raise WebSocketDisconnect(self._close_code or 1000, self._close_reason)

    # The client forgets a session as soon as either side closes it, so these
    # are only ever called for an open one.
    def _deliver(self, kind: MessageKind, data: bytes) -> None:
        self._inbox.append((kind, data))

    def _server_closed(self, code: int, reason: str) -> None:
        self._close_code = code
        self._close_reason = reason


class TestClient:
    """Drive a :class:`~ikisocket_core.Hub` with virtual clients, without sockets.

    Args:
        hub: The application's hub. The client becomes its driver: do not run
            an adapter on the same hub at the same time.
        run_async: Runs one coroutine to completion, for ``async def`` listeners
            that await an event loop's primitives: ``asyncio.run``, or
            ``lambda coro: trio.run(lambda: coro)``. By default a loop-free
            runner is used.
        start_time: The fake clock's first reading.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        hub: Hub,
        *,
        run_async: Callable[[Any], object] | None = None,
        start_time: float = 0.0,
    ) -> None:
        self.hub = hub
        self._run_async = run_async or _run_without_loop
        self._now = start_time
        self._sessions: dict[Websocket, WebSocketTestSession] = {}
        self._port = 50000
        hub.tick(start_time)
        self.pump()

    @property
    def now(self) -> float:
        """The fake clock's reading."""
        return self._now

    def websocket_connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        cookies: Mapping[str, str] | None = None,
        subprotocols: Iterable[str] = (),
        origin: str | None = None,
    ) -> WebSocketTestSession:
        """Open a virtual connection to ``path`` (which may carry a query string).

        Args:
            path: The request target, e.g. ``"/ws/alice?room=1"``.
            headers: Extra request headers.
            cookies: Cookies to send in a ``Cookie`` header.
            subprotocols: Subprotocols to offer.
            origin: An ``Origin`` header, as a browser sends.

        Returns:
            The session; its route callback and ``connect`` listeners have run.

        Raises:
            WebSocketRejected: The hub refused the request.
        """
        raw: list[tuple[str, str]] = [
            ("host", "testserver"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
        if headers is not None:
            raw.extend(headers.items() if isinstance(headers, Mapping) else headers)
        if cookies:
            raw.append(("cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        offered = list(subprotocols)
        if offered:
            raw.append(("sec-websocket-protocol", ", ".join(offered)))
        if origin is not None:
            raw.append(("origin", origin))
        self._port += 1
        request = Request.from_target(path, raw, client=("testclient", self._port))
        result = self.hub.open(request, conn=self)
        if isinstance(result, Reject):
            raise WebSocketRejected(result.status, result.reason)
        session = WebSocketTestSession(self, result)
        self._sessions[result] = session
        self.pump()
        return session

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward and run the hub's timers.

        Args:
            seconds: How far to move it.
        """
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        self.hub.tick(self._now)
        self.pump()

    def pump(self) -> None:
        """Perform every action the hub has queued (done for you by every call)."""
        while True:
            actions = self.hub.drain_actions()
            if not actions:
                return
            for action in actions:
                if isinstance(action, Send):
                    for target in action.targets:
                        session = self._sessions.get(target)
                        if session is not None:
                            session._deliver(action.kind, action.data)
                elif isinstance(action, Close):
                    session = self._sessions.pop(action.target, None)
                    if session is not None:
                        session._server_closed(action.code, action.reason)
                    # The virtual peer answers the close frame at once.
                    self.hub.receive_disconnect(action.target, action.code, action.reason)
                else:  # a RunHandler; runners such as asyncio.run want a coroutine
                    self._run_async(_as_coroutine(action.awaitable))
