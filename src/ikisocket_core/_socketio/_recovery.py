"""Connection-state recovery (socket.io 4.6's feature) for the Socket.IO mount, in memory.

Theory of operation. With recovery on, every namespace connection gets a
private session id (``pid``, in its ``CONNECT`` answer, never shown to other
clients) and a :class:`Backlog`. Every event the server sends without an ack
carries an offset as its last argument (one mount-wide counter, so a
broadcast is still encoded once per namespace); the backlog keeps the last
ones sent to that connection, bounded in count and bytes (older ones fall
off, and the lowest offset still answerable rises with them).

When the transport drops (the peer closed it or vanished, or it missed a
ping), the connection is *held*: it stays registered in the hub with its
UUID, attributes and rooms, its sends go to its backlog only, and no
``disconnect`` fires yet. A client that sends ``CONNECT`` with that ``pid``
and the last offset it saw, within ``max_disconnection_duration``, gets the
same connection back (``kws.recovered`` true, a ``recover`` event) and the
events after its offset, in order. Anything else (an unknown ``pid``, an
offset the backlog cannot answer, a backlog that had to drop an event sent
after the drop, the window passed) gives a fresh connection with
``recovered`` false; the held one then ends with the ``disconnect`` its
drop would have fired, carrying the drop's code and cause. Nothing is ever
replayed with a gap.

A client that comes back to another node of a federated hub whose
backplane is ordered gets its connection from the node that holds it (see
``_handoff``).

Time comes from the mount's two-step timers (see ``_session``): the core
reads no clock.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ikisocket_core._errors import LocalProtocolError

from ._timer import Callback, Timer

if TYPE_CHECKING:
    from ikisocket_core._websocket import Websocket

    from ._mount import SocketIO
    from ._session import EngineSession, Joined

__all__ = ["Recovery"]

#: The event a recovered connection fires (its ``connect`` fired once, at the start).
EVENT_RECOVER = "recover"

#: The longest offset a client may send back (digits): more is not ours.
_MAX_OFFSET_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Recovery:
    """Connection-state recovery settings: ``hub.socketio(recovery=Recovery(...))``.

    Attributes:
        max_disconnection_duration: Seconds a dropped connection is held for
            its client to come back (socket.io's ``maxDisconnectionDuration``).
        max_backlog: The most events kept per connection for a replay.
        max_backlog_bytes: The most bytes (packet text and attachments) kept
            per connection for a replay.
        max_sessions: The most connections held at once; past it, the one
            held longest ends (its ``disconnect`` fires) to make room. Also
            the most claims to other nodes waiting at once.
        claim_timeout: Seconds a client that came back with a ``pid`` this
            node does not hold waits for another node to hand its connection
            over (federated hubs whose backplane is ordered only); then it
            gets a fresh connection.
    """

    max_disconnection_duration: float = 120.0
    max_backlog: int = 1000
    max_backlog_bytes: int = 262_144
    max_sessions: int = 10_000
    claim_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_disconnection_duration", "claim_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise LocalProtocolError(f"{name} must be a positive number, not {value!r}")
        for name in ("max_backlog", "max_backlog_bytes", "max_sessions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{name} must be a positive integer, not {value!r}")


def recovery_settings(value: Recovery | float | None) -> Recovery | None:
    """The mount's ``recovery=`` argument as settings.

    Args:
        value: ``None`` (off), seconds (the window, other bounds default) or
            :class:`Recovery`.

    Returns:
        The settings, or ``None``.

    Raises:
        LocalProtocolError: Anything else.
    """
    if value is None or isinstance(value, Recovery):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LocalProtocolError(f"recovery is None, seconds or Recovery(...), not {value!r}")
    return Recovery(max_disconnection_duration=float(value))


class Backlog:
    """The recovery state of one namespace connection (``joined.backlog``).

    Attributes:
        pid: Its private session id.
        entries: The events sent to it, oldest first: offset, text,
            attachments, size.
        size: Their bytes together.
        floor: The highest offset dropped from ``entries`` (0: none; a
            client that saw less cannot be answered).
        last: The highest offset recorded (0: none yet).
        held: The timer of its hold while its transport is gone, else ``None``.
        held_from: While held, the last offset recorded before the drop (the
            most its client can have seen).
        ended_by: While held, the drop's close code, reason and cause.
        broken: While held, the backlog dropped an event sent after the drop:
            it cannot be recovered.
    """

    __slots__ = (
        "broken",
        "ended_by",
        "entries",
        "floor",
        "held",
        "held_from",
        "last",
        "pid",
        "size",
    )

    def __init__(self, pid: str) -> None:
        self.pid = pid
        self.entries: deque[tuple[int, str, tuple[bytes, ...], int]] = deque()
        self.size = 0
        self.floor = 0
        self.last = 0
        self.held: Timer | None = None
        self.held_from = 0
        self.ended_by: tuple[int, str, BaseException | None] = (1006, "", None)
        self.broken = False


class Recoveries:
    """The mount's recovery store: offsets, backlogs and the held connections by ``pid``.

    Args:
        mount: The Socket.IO mount.
        settings: Its recovery settings.
    """

    __slots__ = ("handoffs", "held", "mount", "offset", "settings")

    def __init__(self, mount: SocketIO, settings: Recovery) -> None:
        from ._handoff import Handoffs  # noqa: PLC0415 (it imports this module)

        self.mount = mount
        self.settings = settings
        self.offset = 0
        #: Held connections by pid, the one held longest first.
        self.held: dict[str, Joined] = {}
        #: Claims to and from other nodes (recovery across nodes).
        self.handoffs = Handoffs(self)

    # -- live connections ----------------------------------------------------------------

    def new_backlog(self) -> Backlog:
        """A fresh backlog with a new private session id.

        On a federated hub the id ends with ``.`` and the node's id, so that
        another node the client comes back to knows whom to ask (see
        ``_handoff``); the 144 random bits before it are the secret.
        """
        pid = secrets.token_urlsafe(18)
        node = self.mount.hub._node
        return Backlog(pid if node is None else f"{pid}.{node}")

    def next_offset(self) -> int:
        """The offset of the next event sent (one per packet, whatever its targets)."""
        self.offset += 1
        return self.offset

    def deliver(
        self,
        conns: list[Websocket],
        offset: int,
        text: str,
        attachments: tuple[bytes, ...],
    ) -> tuple[Websocket, ...]:
        """Keep an event in each connection's backlog; return the live ones' transports.

        A backlog over its bounds drops its oldest events, raising the lowest
        offset it can answer. A held connection only keeps the event; once it
        cannot be recovered by any offset its client may hold (its backlog
        dropped an event sent after its drop's last one), it is marked broken,
        its memory freed, and its hold ends at the next tick.

        Args:
            conns: Namespace connections (of this mount, recovery on).
            offset: The event's offset.
            text: Its packet's text.
            attachments: Its attachments.

        Returns:
            The transport sockets of the live connections, to write it to.
        """
        size = len(text) + sum(map(len, attachments))
        entry = (offset, text, attachments, size)
        settings = self.settings
        most, most_bytes = settings.max_backlog, settings.max_backlog_bytes
        live: list[Websocket] = []
        for kws in conns:
            joined = kws.conn
            backlog: Backlog = joined.backlog
            if backlog.broken:
                continue
            entries = backlog.entries
            entries.append(entry)
            backlog.last = offset
            backlog.size += size
            if len(entries) > most or backlog.size > most_bytes:
                while len(entries) > most or backlog.size > most_bytes:
                    dropped = entries.popleft()
                    backlog.size -= dropped[3]
                    backlog.floor = dropped[0]
                held = backlog.held
                if held is not None and backlog.floor > backlog.held_from:
                    backlog.broken = True
                    entries.clear()
                    backlog.size = 0
                    self.mount._arm(held, 0.0)
                    continue
            if backlog.held is None:
                live.append(joined.socket)
        return tuple(live)

    # -- holding -------------------------------------------------------------------------

    def hold(
        self,
        joined: Joined,
        why: BaseException,
        code: int,
        reason: str,
        cause: BaseException | None,
    ) -> None:
        """Keep a connection whose transport is gone for its client to come back.

        It leaves its ended session (its pending acks fail with ``why``) but
        stays registered in the hub and counted in the mount's connections.

        Args:
            joined: The namespace connection (its session is ending).
            why: What its pending acks fail with.
            code: The drop's close code.
            reason: Its reason.
            cause: Its cause, if an error.
        """
        session = joined.session
        del session.joined[joined.kws.namespace]
        session.fail_acks(joined, why)
        backlog: Backlog = joined.backlog
        held = self.held
        if len(held) >= self.settings.max_sessions:
            self.give_up(next(iter(held.values())))
        backlog.ended_by = (code, reason, cause)
        backlog.held_from = backlog.last
        timer = backlog.held = Callback(lambda now: self.give_up(joined))
        held[backlog.pid] = joined
        self.mount._arm(timer, self.settings.max_disconnection_duration)

    def release(self, joined: Joined) -> None:
        """Forget a held connection (it came back, or ends).

        Args:
            joined: The namespace connection (held).
        """
        backlog: Backlog = joined.backlog
        timer = backlog.held
        assert timer is not None
        self.mount._disarm(timer)
        backlog.held = None
        del self.held[backlog.pid]

    def give_up(self, joined: Joined) -> None:
        """A held connection will not come back: it ends with its drop's ``disconnect``.

        Args:
            joined: The namespace connection.
        """
        self.release(joined)
        backlog: Backlog = joined.backlog
        backlog.entries.clear()
        backlog.size = 0
        mount = self.mount
        mount.connections -= 1
        code, reason, cause = backlog.ended_by
        mount.hub.receive_disconnect(joined.kws, code, reason, cause)

    def closed(self, joined: Joined) -> bool:
        """The hub closed a connection: if it was held, forget it.

        Args:
            joined: The namespace connection (already out of routing).

        Returns:
            Whether it was held (there is no transport to tell).
        """
        backlog: Backlog | None = joined.backlog
        if backlog is None or backlog.held is None:
            return False
        self.release(joined)
        backlog.entries.clear()
        backlog.size = 0
        self.mount.connections -= 1
        return True

    def close_all(self, code: int, reason: str) -> None:
        """The server shuts down: every held connection is closed (``close`` events).

        Args:
            code: The close code.
            reason: The close reason.
        """
        hub = self.mount.hub
        for joined in tuple(self.held.values()):
            hub._server_close(joined.kws, code, reason)

    # -- coming back ---------------------------------------------------------------------

    def restore(self, session: EngineSession, name: str, auth: dict[str, Any]) -> Joined | None:
        """Find the held connection a ``CONNECT`` asks back, if it can be recovered.

        A ``pid`` that is known but cannot be recovered (bad offset, broken
        backlog) ends its hold at once: its client has moved on.

        Args:
            session: The new session.
            name: The namespace asked for.
            auth: The ``CONNECT`` payload (``pid`` and ``offset`` from socket.io-client).

        Returns:
            The connection, attached to ``session``, or ``None`` for a fresh one.
        """
        pid = auth.get("pid")
        joined = self.held.get(pid) if isinstance(pid, str) else None
        if joined is None or joined.kws.namespace != name:
            return None
        backlog: Backlog = joined.backlog
        offset = _offset(auth.get("offset"))
        if backlog.broken or offset is None or not backlog.floor <= offset <= backlog.last:
            self.give_up(joined)
            return None
        self.release(joined)
        joined.session = session
        joined.socket = session.socket
        session.joined[name] = joined
        self.mount._disarm(session.connect_timer)
        return joined

    def missed(self, joined: Joined, auth: dict[str, Any]) -> list[tuple[str, tuple[bytes, ...]]]:
        """The events a recovered connection missed, in order.

        Args:
            joined: The connection :meth:`restore` gave.
            auth: Its ``CONNECT`` payload.

        Returns:
            Their texts and attachments.
        """
        seen = _offset(auth.get("offset")) or 0
        return [(text, atts) for offset, text, atts, _ in joined.backlog.entries if offset > seen]


def _offset(value: Any) -> int | None:
    """A client's offset: ``0`` when it saw none, ``None`` when it is not one of ours."""
    if value is None:
        return 0
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.isdigit()
        or len(value) > _MAX_OFFSET_DIGITS
    ):
        return None
    return int(value)
