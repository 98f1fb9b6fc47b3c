"""Socket.IO acks across nodes: asking another node's clients, and answering for ours.

One layer of :class:`~ikisocket_core.Hub`, between the federation layer and
the Socket.IO layer. On a federated hub, :meth:`emit_with_ack` of a
connection of another node, and a broadcast with acks
(:meth:`~ikisocket_core.Hub.emit_with_acks`) whose targets may be on other
nodes, go out as one :class:`~ikisocket_core.AckRequestRelay` per node (or
one for every node: a room or everyone); see ``_ack_relays`` for the wire.

The asking node keeps each request in a table (:class:`_Asks`) with one
timer on the Socket.IO mount's heap of deadlines, the one local acks use:
when it fires, every answer still missing becomes an
:class:`~ikisocket_core.AckTimeout` and the callback runs with what arrived.
An answer that comes after that (or for a node that is no longer waited for)
is dropped and counted in :attr:`late_acks`, never delivered twice. A node
that answers has no timer of its own for the request: its clients' local
acks bound its table (``max_pending_acks`` each, forgotten after the
timeout plus as much again, at most 5 s more: an answer a little late still
reaches the asking node, which counts it), and a client that times out there
sends nothing.

When the node of a target is forgotten (:meth:`forget_node`, after
``node_ttl`` of silence), the answers still awaited from it become a
:class:`~ikisocket_core.ConnectionClosed` (1006) at once; when a client ends
on its node, that node answers with the ``ConnectionClosed`` a local ack
gets. When relays are lost (pub/sub while Redis is away), the timeout decides.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from ikisocket_core._ack_relays import (
    _MAX_TIMEOUT,
    AckAnswerRelay,
    AckRequestRelay,
    AckTargetsRelay,
)
from ikisocket_core._actions import RunHandler
from ikisocket_core._errors import (
    AckTimeout,
    ConnectionClosed,
    LocalProtocolError,
    RelayTooLarge,
    UnknownConnection,
)
from ikisocket_core._events import AckCallback
from ikisocket_core._federation import _Federation
from ikisocket_core._log import logger
from ikisocket_core._relays import _PRESENCE_CHUNK
from ikisocket_core._state import ConnectionState

from ._acks import check_event
from ._namespace import AcksCallback, emit_with_acks
from ._packets import PacketError, _deconstruct, _loads, _reconstruct, dumps
from ._timer import Timer

if TYPE_CHECKING:
    from ikisocket_core._websocket import Websocket

    from ._mount import SocketIO

__all__: list[str] = []

_OPEN = ConnectionState.OPEN
#: The longest error reason an answer carries (see ``AckAnswerRelay``).
_REASON = 1024
#: Request ids wrap here (below what a JSON number holds exactly).
_IDS = 2**53
#: How much longer than the timeout (at most) an answering node waits for its client, so
#: that an answer a little late still reaches the asking node, which counts it.
_GRACE = 5.0


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise LocalProtocolError("an ack needs a positive timeout (seconds)")


def _check_remote_timeout(timeout: float) -> None:
    """What an ack asked of another node's clients may wait: a relay carries at most a day."""
    _check_timeout(timeout)
    if not timeout <= _MAX_TIMEOUT:
        raise LocalProtocolError("an ack asked of another node waits at most 86,400 s")


def _encode(values: Iterable[Any]) -> tuple[bytes, tuple[bytes, ...]]:
    """Arguments as a relay carries them: a JSON array with placeholders, and the bytes."""
    attachments: list[bytes] = []
    data = dumps(_deconstruct(list(values), attachments)).encode("utf-8")
    return data, tuple(attachments)


def _decode(data: bytes, attachments: tuple[bytes, ...]) -> list[Any]:
    """What :func:`_encode` made (``PacketError``/``UnicodeDecodeError`` when it is not)."""
    values = _reconstruct(_loads(data.decode("utf-8")), attachments)
    if not isinstance(values, list):
        raise PacketError("the arguments are not a JSON array")
    return values


class _Detached:
    """An ``async def`` ack callback's awaitable that belongs to no connection.

    Awaiting it never raises an ``Exception``: a failure is logged (there may
    be no connection of this node whose ``error`` listeners could hear it).
    """

    __slots__ = ("_awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, None, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        try:
            await self._awaitable
        except Exception:
            logger.exception("an ack callback failed")

    def close(self) -> None:
        """Discard it unrun (an adapter shutting down): close the callback's coroutine."""
        close = getattr(self._awaitable, "close", None)
        if close is not None:
            close()


class _Ask(Timer):
    """One request of the asking node: the answers so far, and who is still awaited.

    ``answers`` holds ``None`` for every client whose answer is awaited (this
    node's and other nodes'), in the order they were asked; ``waiting`` the
    other nodes' clients still awaited, with their node; ``nodes`` the nodes
    that have not said which clients they asked (a room or everyone).
    """

    __slots__ = (
        "answers",
        "broadcast",
        "callback",
        "done",
        "id",
        "local",
        "nodes",
        "single",
        "table",
        "timeout",
        "waiting",
    )

    def __init__(
        self, table: _Asks, ask_id: int, callback: Any, timeout: float, single: str | None
    ) -> None:
        super().__init__()
        self.table = table
        self.id = ask_id
        self.callback = callback
        self.timeout = timeout
        self.single = single
        self.answers: dict[str, Any] = {}
        self.waiting: dict[str, str] = {}
        self.nodes: set[str] = set()
        self.local = 0
        self.broadcast = False  # counted in the table's ``broadcasts``
        self.done = False

    def local_answer(self, uuid: str) -> Callable[[Any], None]:
        """The ack callback of one of this node's clients."""

        def answered(answer: Any) -> None:
            if self.done:  # the request timed out first
                return
            self.answers[uuid] = answer
            self.local -= 1
            self.table.settle(self)

        return answered

    def fire(self, now: float) -> None:
        """The request's time is up: settle it with the answers so far."""
        self.table.expire(self)


class _Asks:
    """The asking node's table of requests to other nodes, by id."""

    __slots__ = ("asks", "broadcasts", "hub", "late", "next_id", "per_uuid")

    def __init__(self, hub: _RemoteAcks) -> None:
        self.hub = hub
        self.asks: dict[int, _Ask] = {}
        self.next_id = 0
        #: How many answers each client of another node owes (bounded by max_pending_acks).
        self.per_uuid: dict[str, int] = {}
        #: How many requests to a room or everyone wait (bounded by max_pending_acks).
        self.broadcasts = 0
        self.late = 0

    def new(self, callback: Any, timeout: float, single: str | None = None) -> _Ask:
        ask_id = self.next_id
        while ask_id in self.asks:  # after 2**53 requests, one may still wait
            ask_id = (ask_id + 1) % _IDS
        self.next_id = (ask_id + 1) % _IDS
        ask = self.asks[ask_id] = _Ask(self, ask_id, callback, timeout, single)
        return ask

    def wait_for(self, ask: _Ask, uuid: str, node: str) -> None:
        ask.answers[uuid] = None
        ask.waiting[uuid] = node
        self.per_uuid[uuid] = self.per_uuid.get(uuid, 0) + 1

    def _release(self, uuid: str) -> None:
        left = self.per_uuid[uuid] - 1
        if left:
            self.per_uuid[uuid] = left
        else:
            del self.per_uuid[uuid]

    def answered(self, ask: _Ask, uuid: str, value: Any) -> None:
        """A client of another node answered (or cannot): ``None`` leaves it out."""
        del ask.waiting[uuid]
        self._release(uuid)
        if value is None:
            del ask.answers[uuid]
        else:
            ask.answers[uuid] = value

    def settle(self, ask: _Ask) -> None:
        if not ask.done and not ask.local and not ask.waiting and not ask.nodes:
            self.finish(ask)

    def expire(self, ask: _Ask) -> None:
        answers = ask.answers
        for uuid, answer in answers.items():
            if answer is None:  # one exception each, as for local acks
                answers[uuid] = AckTimeout(ask.timeout)
        self.finish(ask)

    def finish(self, ask: _Ask) -> None:
        ask.done = True
        del self.asks[ask.id]
        hub = self.hub
        sio = hub._sio
        assert sio is not None  # requests are made on a mount, which stays
        sio._disarm(ask)
        for uuid in ask.waiting:
            self._release(uuid)
        if ask.broadcast:
            self.broadcasts -= 1
        value = ask.answers if ask.single is None else ask.answers[ask.single]
        hub._call_detached(ask.callback, value)

    def node_gone(self, node: str) -> None:
        for ask in tuple(self.asks.values()):
            ask.nodes.discard(node)
            for uuid in [u for u, n in ask.waiting.items() if n == node]:
                self.answered(ask, uuid, ConnectionClosed(1006, f"node {node} is gone"))
            self.settle(ask)


class _RemoteAcks(_Federation):
    """The hub's layer for acks across nodes: asking, answering, and the table of requests."""

    _asks: _Asks | None = None

    if TYPE_CHECKING:  # the Socket.IO layer above asks this node's clients

        def _emit_event_one(
            self,
            kws: Websocket,
            event: str,
            args: tuple[Any, ...],
            ack: AckCallback | None,
            timeout: float | None,
        ) -> None: ...

    @property
    def late_acks(self) -> int:
        """How many answers from other nodes' clients came too late and were dropped.

        Too late: after their request's timeout, or after their node was
        forgotten. Answers of this node's own clients after their timeout are
        ignored as well, and not counted here.
        """
        return 0 if self._asks is None else self._asks.late

    def emit_with_ack(
        self,
        uuid: str,
        event: str,
        *args: Any,
        callback: AckCallback,
        timeout: float,
    ) -> None:
        """Send a named event to one Socket.IO connection, on any node, and ask for its ack.

        For a connection of this node it is :meth:`Websocket.emit_event` with
        ``ack=callback``. For one of another node (federated hubs), the event
        goes to that node only, which sends it to its client and sends the
        answer back; the timeout runs here, on this node's Socket.IO mount.
        ``callback`` is called once, with the tuple of the client's answer, or
        an :class:`AckTimeout`, or a :class:`ConnectionClosed` when the
        connection ends first (code 1006 when its node is forgotten, see
        :meth:`forget_node`); for a connection of another node, what a local
        one would raise is given to ``callback`` instead (an
        :class:`UnknownConnection` when it ended before the event arrived,
        a ``LocalProtocolError`` for a plain WebSocket connection or too
        many acks pending there). A failing callback of a connection of
        another node is logged on the ``ikisocket`` logger.

        Args:
            uuid: The connection's UUID.
            event: The event name.
            *args: Its arguments (JSON values, ``bytes``).
            callback: Called once with the answer (sync or ``async def``).
            timeout: Seconds to wait for the answer.

        Raises:
            UnknownConnection: No live connection has that UUID (on any node).
            LocalProtocolError: Socket.IO is not mounted here (for another
                node's connection), a timeout that is not a positive number,
                a reserved event name, a plain WebSocket connection of this
                node, or ``max_pending_acks`` acks already pending on the
                connection (counted on the asking node for another node's).
            TypeError: An argument cannot travel as JSON.
            RelayTooLarge: The encoded arguments are larger than the hub's
                ``max_relay_size`` (another node's connection).
        """
        kws = self._conns.get(uuid)
        if kws is not None:
            self._emit_event_one(kws, event, args, callback, timeout)
            return
        node = self.node_of(uuid)
        if node is None:
            raise UnknownConnection(uuid)
        sio = self._acks_mount()
        _check_remote_timeout(timeout)
        check_event(event)
        asks = self._ask_table()
        pending = asks.per_uuid.get(uuid, 0)
        if pending >= sio.max_pending_acks:
            raise LocalProtocolError(
                f"{pending} acks are pending on {uuid}: no more than"
                f" max_pending_acks={sio.max_pending_acks}"
            )
        data, attachments = self._ack_args(args)
        ask = asks.new(callback, float(timeout), single=uuid)
        asks.wait_for(ask, uuid, node)
        self._push_relay(
            AckRequestRelay(
                node=self._node_id(),
                request=ask.id,
                event=event,
                timeout=float(timeout),
                data=data,
                attachments=attachments,
                uuids=(uuid,),
                to=node,
            )
        )
        self._arm_ask(sio, ask)

    # -- the asking node -----------------------------------------------------------------

    def _acks_mount(self) -> SocketIO:
        sio = self._sio
        if sio is None:
            raise LocalProtocolError("acks need Socket.IO: mount it with hub.socketio()")
        return sio

    def _node_id(self) -> str:
        node = self._node
        assert node is not None  # only federated hubs ask other nodes
        return node

    def _ask_table(self) -> _Asks:
        asks = self._asks
        if asks is None:
            asks = self._asks = _Asks(self)
        return asks

    def _ack_args(self, args: Iterable[Any]) -> tuple[bytes, tuple[bytes, ...]]:
        """Encoded arguments for a relay; refused before anything is sent when too large."""
        data, attachments = _encode(args)
        size = len(data) + sum(len(a) for a in attachments)
        if size > self._max_relay_size:
            raise RelayTooLarge(size, self._max_relay_size)
        return data, attachments

    def _ask_everywhere(
        self,
        sio: SocketIO,
        targets: list[Websocket],
        event: str,
        args: tuple[Any, ...],
        *,
        callback: AcksCallback,
        timeout: float,
        room: str | None = None,
        uuids: Iterable[str] | None = None,
        namespace: str | None = None,
        exclude: str | None = None,
    ) -> None:
        """A broadcast with acks on a federated hub: this node's ``targets`` and other nodes'.

        ``uuids`` (when given) are the UUIDs asked, on any node; else the
        members of ``room``, or everyone, on every node this one knows of.
        Without targets on other nodes it is the local broadcast with acks.
        """
        check_event(event)
        _check_timeout(timeout)
        if room is not None and (not isinstance(room, str) or not room):
            raise LocalProtocolError("a room name is a non-empty string")
        by_node: dict[str, list[str]] = {}
        if uuids is not None:
            conns = self._conns
            for uuid in dict.fromkeys(uuids):
                node = None if uuid in conns else self.node_of(uuid)
                if node is not None:
                    by_node.setdefault(node, []).append(uuid)
        everywhere = uuids is None and bool(self._remote)
        if not by_node and not everywhere:
            emit_with_acks(sio, targets, event, args, callback=callback, timeout=timeout)
            return
        _check_remote_timeout(timeout)
        asks = self._ask_table()
        if everywhere and asks.broadcasts >= sio.max_pending_acks:
            raise LocalProtocolError(
                f"{asks.broadcasts} broadcasts with acks are pending: no more than"
                f" max_pending_acks={sio.max_pending_acks}"
            )
        data, attachments = self._ack_args(args)
        ask = asks.new(callback, float(timeout))
        asked = [k for k in targets if k.transport is not None and k.state is _OPEN]
        ask.answers = dict.fromkeys(k.uuid for k in asked)
        ask.local = len(asked)
        relays: list[AckRequestRelay] = []
        common: dict[str, Any] = {
            "node": self._node_id(),
            "request": ask.id,
            "event": event,
            "timeout": float(timeout),
            "data": data,
            "attachments": attachments,
            "namespace": namespace,
        }
        if everywhere:
            ask.broadcast = True
            asks.broadcasts += 1
            ask.nodes = set(self._remote)
            relays.append(AckRequestRelay(room=room, exclude=exclude, **common))
        for node, listed in by_node.items():
            sent = []
            for uuid in listed:
                if asks.per_uuid.get(uuid, 0) >= sio.max_pending_acks:
                    ask.answers[uuid] = LocalProtocolError(
                        f"acks pending on {uuid}: no more than"
                        f" max_pending_acks={sio.max_pending_acks}"
                    )
                else:
                    asks.wait_for(ask, uuid, node)
                    sent.append(uuid)
            if sent:
                relays.append(AckRequestRelay(uuids=tuple(sent), to=node, **common))
        for relay in relays:
            self._push_relay(relay)
        self._arm_ask(sio, ask)
        for kws in asked:
            answered = ask.local_answer(kws.uuid)
            try:
                sio._emit_with_ack(kws, event, args, answered, float(timeout))
            except LocalProtocolError as exc:  # too many acks pending on that one
                answered(exc)
        asks.settle(ask)

    def _arm_ask(self, sio: SocketIO, ask: _Ask) -> None:
        """Arm a request's timer; outside an input, tell the driver (it has a new deadline).

        A local ack also writes a packet, whose action wakes the driver up; a
        request to another node queues no action, so the wakeup is called
        directly (not marked pending: there may be nothing to drain).
        """
        sio._arm(ask, ask.timeout)
        if self._depth == 0 and self._wakeup is not None and not self._wakeup_pending:
            self._wakeup()

    def _call_detached(self, callback: Callable[[Any], Any], value: Any) -> None:
        """Run a callback that belongs to no connection (a failure is logged)."""
        self._depth += 1
        try:
            result = callback(value)
        except Exception:
            logger.exception("an ack callback failed")
            return
        finally:
            self._depth -= 1
        if result is not None and inspect.isawaitable(result):
            self._push(RunHandler(target=None, awaitable=_Detached(result)))

    def _acks_node_gone(self, node: str) -> None:
        """Another node was forgotten: the answers awaited from it fail."""
        if self._asks is not None:
            self._asks.node_gone(node)

    # -- relays in -----------------------------------------------------------------------

    def _apply_ack(self, relay: AckRequestRelay | AckTargetsRelay | AckAnswerRelay) -> None:
        """An ack relay from another node (ignored when addressed to yet another)."""
        if relay.to is not None and relay.to != self._node:
            return
        if isinstance(relay, AckRequestRelay):
            self._answer_request(relay)
            return
        asks = self._asks
        ask = None if asks is None else asks.asks.get(relay.request)
        if isinstance(relay, AckTargetsRelay):
            if ask is None:  # it ended: the answers that follow are late
                logger.debug("ignoring the ack targets of node %s", relay.node)
                return
            assert asks is not None
            # A node this one did not know of when it asked is waited for all the same.
            for uuid in relay.uuids:
                if uuid not in ask.answers:
                    asks.wait_for(ask, uuid, relay.node)
            if relay.final:
                ask.nodes.discard(relay.node)
            asks.settle(ask)
            return
        if ask is None or ask.waiting.get(relay.uuid) != relay.node:
            self._late(relay)
            return
        assert asks is not None
        asks.answered(ask, relay.uuid, self._answer_of(relay, ask.single is not None))
        asks.settle(ask)

    def _late(self, relay: AckAnswerRelay) -> None:
        asks = self._ask_table()
        asks.late += 1
        logger.debug("dropping a late ack answer of %s from node %s", relay.uuid, relay.node)

    def _answer_of(self, relay: AckAnswerRelay, single: bool) -> Any:
        """What the callback gets for an answer relay (``None``: left out of the answers)."""
        error = relay.error
        if error is None:
            try:
                return tuple(_decode(relay.data, relay.attachments))
            except (UnicodeDecodeError, PacketError) as exc:
                logger.warning("a malformed ack answer from node %s: %s", relay.node, exc)
                return LocalProtocolError(f"node {relay.node} sent a malformed answer: {exc}")
        if error == "closed":
            return ConnectionClosed(relay.code, relay.reason)
        if error == "refused":
            return LocalProtocolError(relay.reason)
        if not single:  # as locally: unknown and plain connections are not in the answers
            return None
        if error == "unknown":
            return UnknownConnection(relay.uuid)
        return LocalProtocolError("a plain WebSocket connection cannot answer acks")

    # -- the answering node --------------------------------------------------------------

    def _answer_request(self, relay: AckRequestRelay) -> None:
        """Ask this node's targets of another node's request; their answers go back to it."""
        try:
            check_event(relay.event)
            args = tuple(_decode(relay.data, relay.attachments))
        except (UnicodeDecodeError, PacketError, LocalProtocolError) as exc:
            logger.warning("ignoring ack request %r from node %s: %s", relay.event, relay.node, exc)
            return
        sio = self._sio
        conns = self._conns
        namespace = relay.namespace
        asked: list[Websocket] = []
        if relay.uuids:
            for uuid in relay.uuids:
                kws = conns.get(uuid)
                if kws is None or (namespace is not None and kws.namespace != namespace):
                    self._send_answer(relay, uuid, error="unknown")
                elif kws.transport is None:
                    self._send_answer(relay, uuid, error="plain")
                else:
                    asked.append(kws)
        else:
            found = conns.values() if relay.room is None else self._room_members(relay.room)
            asked = [
                k
                for k in found
                if k.transport is not None
                and (namespace is None or k.namespace == namespace)
                and k.uuid != relay.exclude
            ]
            uuids = [k.uuid for k in asked]
            chunk = _PRESENCE_CHUNK  # so that a large node never makes one oversized relay
            last = max(0, len(uuids) - 1) // chunk
            for part in range(last + 1):
                self._push_relay(
                    AckTargetsRelay(
                        node=self._node_id(),
                        to=relay.node,
                        request=relay.request,
                        uuids=tuple(uuids[part * chunk : (part + 1) * chunk]),
                        final=part == last,
                    )
                )
        # Waiting longer than the asking node lets a late answer reach it (dropped there, and
        # counted in its ``late_acks``); the table here stays bounded all the same.
        timeout = relay.timeout + min(relay.timeout, _GRACE)
        for kws in asked:
            assert sio is not None  # a Socket.IO connection exists only on a mount
            answered = self._relay_answer(relay, kws.uuid)
            try:
                sio._emit_with_ack(kws, relay.event, args, answered, timeout)
            except LocalProtocolError as exc:  # too many acks pending on that one
                answered(exc)

    def _relay_answer(self, relay: AckRequestRelay, uuid: str) -> Callable[[Any], None]:
        """The local ack callback that sends one client's answer back to the asking node."""

        def answered(answer: Any) -> None:
            if isinstance(answer, AckTimeout):
                return  # the asking node's own timeout decides
            if isinstance(answer, ConnectionClosed):
                self._send_answer(
                    relay, uuid, error="closed", code=answer.code, reason=answer.reason
                )
                return
            if not isinstance(answer, tuple):
                self._send_answer(relay, uuid, error="refused", reason=str(answer))
                return
            data, attachments = _encode(answer)
            size = len(data) + sum(len(a) for a in attachments)
            if size > self._max_relay_size:
                reason = f"the answer ({size} bytes) is larger than max_relay_size"
                self._send_answer(relay, uuid, error="refused", reason=reason)
                return
            self._send_answer(relay, uuid, data=data, attachments=attachments)

        return answered

    def _send_answer(
        self,
        relay: AckRequestRelay,
        uuid: str,
        *,
        data: bytes = b"[]",
        attachments: tuple[bytes, ...] = (),
        error: str | None = None,
        code: int = 0,
        reason: str = "",
    ) -> None:
        self._push_relay(
            AckAnswerRelay(
                node=self._node_id(),
                to=relay.node,
                request=relay.request,
                uuid=uuid,
                data=data,
                attachments=attachments,
                error=error,
                code=code,
                reason=reason[:_REASON],
            )
        )
