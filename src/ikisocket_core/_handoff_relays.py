"""The relays of Socket.IO connection-state recovery across nodes: a claim and its handoff.

A client that comes back to node B with the private id (``pid``) of a
connection that node A holds makes B queue a :class:`ClaimRelay`; A answers
with a :class:`HandoffRelay` for B (the connection's state and the events
it missed), or a refusal. See ``_socketio/_handoff`` for the protocol and
:doc:`/explanation/socketio-recovery` for what it guarantees.

They are kept apart from ``_relays`` (and registered in its table of wire
names here) so that the relay kinds of other features stay easy to merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._errors import LocalProtocolError
from ._relays import _BY_OP, Relay, _ConcreteRelayType

__all__ = ["ClaimRelay", "HandoffRelay"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRelay(Relay, metaclass=_ConcreteRelayType):
    """A node asks the cluster for a held Socket.IO connection its client came back with.

    Only the node that holds ``pid`` answers (with a :class:`HandoffRelay`).
    The ``pid`` is the connection's secret: the backplane must be trusted.

    Attributes:
        node: The id of the node the client came back to.
        request: The claim's id, unique on that node (the answer names it).
        pid: The private session id the client sent.
        namespace: The namespace the client asked for.
        offset: The last offset the client saw (``""``: none yet).
    """

    op: ClassVar[str] = "claim"
    node: str
    request: str
    pid: str
    namespace: str = "/"
    offset: str = ""

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        for name in ("request", "pid"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise LocalProtocolError(f"a claim relay needs a {name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HandoffRelay(Relay, metaclass=_ConcreteRelayType):
    """The answer to a :class:`ClaimRelay`: the connection's state, or a refusal.

    ``data`` is UTF-8 JSON: ``uuid``, ``namespace``, ``rooms``,
    ``attributes``, ``events`` (``[offset, packet text, [base64
    attachments]]`` after the client's offset, oldest first), ``last`` (the
    newest offset the connection was sent) and ``top`` (the sending mount's
    offset counter). Empty ``data`` is a refusal: the connection was found
    but cannot be handed over (its client starts afresh at once).

    Attributes:
        node: The id of the node that held the connection.
        to: The id of the node that claimed it.
        request: The claim's id.
        data: The state, or ``b""`` for a refusal.
    """

    op: ClassVar[str] = "handoff"
    node: str
    to: str
    request: str
    data: bytes = b""

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        for name in ("to", "request"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise LocalProtocolError(f"a handoff relay needs a {name}")


_BY_OP.update({ClaimRelay.op: ClaimRelay, HandoffRelay.op: HandoffRelay})
