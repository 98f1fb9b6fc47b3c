"""Relays for Socket.IO acks across nodes: asking other nodes' clients, and their answers.

A node that asks an ack of a connection of another node (or of every
connection, a room's members, a list of UUIDs on several nodes) queues an
:class:`AckRequestRelay`; each node that has targets sends the event to its
clients with its own local ack ids, and sends every answer back to the asking
node only, as an :class:`AckAnswerRelay`. When the request named no UUIDs (a
room, or everyone), each node first says which of its clients it asked with an
:class:`AckTargetsRelay`, so the asking node knows whose answers to wait for.

The timeout stays with the asking node: the other nodes only bound their own
table of pending acks with it. These relays are addressed to one node (``to``):
a backplane that can reach one node only (the Redis backplane on a Cluster:
that node's ``to:<node>`` channel) sends them there; any other node that
receives one ignores it. Nodes of an older version refuse the new ``op``
names: an ack asked of their clients times out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ._errors import LocalProtocolError
from ._relays import _BY_OP, Relay, _ConcreteRelayType

__all__ = ["AckAnswerRelay", "AckRequestRelay", "AckTargetsRelay"]

#: The largest request id (ids stay exact in JSON numbers of every language).
_MAX_REQUEST = 2**53 - 1
#: The longest ack timeout a relay may carry, in seconds (a day).
_MAX_TIMEOUT = 86_400.0
#: The longest reason an answer's error carries, in characters.
_MAX_REASON = 1024
#: The errors an :class:`AckAnswerRelay` may report instead of an answer.
ACK_ERRORS = frozenset({"closed", "refused", "unknown", "plain"})


def _check_request(relay: AckRequestRelay | AckTargetsRelay | AckAnswerRelay) -> None:
    request = relay.request
    if request.__class__ is not int or not 0 <= request <= _MAX_REQUEST:
        raise LocalProtocolError("an ack relay's request id is an int from 0 to 2**53 - 1")


def _check_node(value: str | None, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise LocalProtocolError(f"an ack relay's {what} is a non-empty string")


@dataclass(frozen=True, slots=True, kw_only=True)
class AckRequestRelay(Relay, metaclass=_ConcreteRelayType):
    """A named event that asks other nodes' Socket.IO clients for acks.

    The targets are the listed connections when ``uuids`` is not empty, else
    the members of ``room``, else every connection; of those, the Socket.IO
    ones in ``namespace`` (unless it is ``None``), never ``exclude``. The
    arguments are encoded as in :class:`EventRelay`.

    Attributes:
        node: The id of the asking node (where the answers go).
        request: The request's id, unique on the asking node while it waits.
        event: The event name.
        timeout: The ack timeout, in seconds (the asking node's; the others
            forget their pending acks after it).
        data: The arguments, as UTF-8 JSON (an array, with placeholders).
        attachments: The binary arguments, in placeholder order.
        namespace: The namespace of the targets, or ``None`` for any.
        room: Only the members of this room, or ``None``.
        uuids: Only these connections (when not empty).
        exclude: A connection UUID not to ask, or ``None``.
        to: The only node meant to apply it, or ``None`` for every node.
    """

    op: ClassVar[str] = "ack_request"
    node: str
    request: int
    event: str
    timeout: float
    data: bytes = b"[]"
    attachments: tuple[bytes, ...] = ()
    namespace: str | None = None
    room: str | None = None
    uuids: tuple[str, ...] = ()
    exclude: str | None = None
    to: str | None = None

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        _check_request(self)
        _check_node(self.to, "to")
        if not isinstance(self.event, str) or not self.event:
            raise LocalProtocolError("an ack request relay needs an event name")
        timeout = self.timeout
        if (
            timeout.__class__ not in (int, float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= _MAX_TIMEOUT
        ):
            raise LocalProtocolError("an ack request relay's timeout is from 0 to 86,400 s")
        if self.room is not None and (not isinstance(self.room, str) or not self.room):
            raise LocalProtocolError("an ack request relay's room is a non-empty string")
        if not all(isinstance(a, bytes) for a in self.attachments):
            raise LocalProtocolError("an ack request relay's attachments are bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class AckTargetsRelay(Relay, metaclass=_ConcreteRelayType):
    """Which clients a node asked, for a request that named no UUIDs (sent before any answer).

    A node that asked more than 1,000 clients says so in several relays in a
    row, the last one ``final``.

    Attributes:
        node: The id of the node that asked its clients.
        to: The asking node.
        request: The request's id.
        uuids: The connections asked (their answers follow, one relay each).
        final: Whether this is the node's last such relay for the request.
    """

    op: ClassVar[str] = "ack_targets"
    node: str
    to: str
    request: int
    uuids: tuple[str, ...] = ()
    final: bool = True

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        _check_node(self.to, "to")
        _check_request(self)
        if self.final.__class__ is not bool:
            raise LocalProtocolError("an ack targets relay's final is a bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class AckAnswerRelay(Relay, metaclass=_ConcreteRelayType):
    """One client's answer to an :class:`AckRequestRelay`, for the asking node only.

    Either the answer's arguments (``data`` and ``attachments``, encoded as in
    :class:`EventRelay`), or an ``error`` instead: ``"closed"`` (the
    connection ended or is held for recovery: ``code`` and ``reason`` say
    how), ``"refused"`` (too many acks pending on it, or an answer too large
    to relay: ``reason``), ``"unknown"`` (no such connection there, or not in
    the request's namespace) or ``"plain"`` (a plain WebSocket connection,
    which cannot answer acks). A client that does not answer in time gets no
    relay: the asking node's timeout decides.

    Attributes:
        node: The id of the node of the client.
        to: The asking node.
        request: The request's id.
        uuid: The client's connection.
        data: The answer's arguments, as UTF-8 JSON (an array).
        attachments: The answer's binary arguments.
        error: ``None`` for an answer, else one of the errors above.
        code: The close code, for ``"closed"``.
        reason: Why, for an error.
    """

    op: ClassVar[str] = "ack_answer"
    node: str
    to: str
    request: int
    uuid: str
    data: bytes = b"[]"
    attachments: tuple[bytes, ...] = ()
    error: str | None = None
    code: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        _check_node(self.to, "to")
        _check_request(self)
        if not isinstance(self.uuid, str) or not self.uuid:
            raise LocalProtocolError("an ack answer relay names its connection")
        if self.error is not None and self.error not in ACK_ERRORS:
            raise LocalProtocolError(f"unknown ack error {self.error!r}")
        if self.code.__class__ is not int or not 0 <= self.code <= 4999:
            raise LocalProtocolError("an ack answer relay's code is a close code")
        if not isinstance(self.reason, str) or len(self.reason) > _MAX_REASON:
            raise LocalProtocolError("an ack answer relay's reason is a short string")
        if not all(isinstance(a, bytes) for a in self.attachments):
            raise LocalProtocolError("an ack answer relay's attachments are bytes")


for _cls in (AckRequestRelay, AckTargetsRelay, AckAnswerRelay):
    _BY_OP[_cls.op] = _cls
