"""The ``CONNECT`` of a namespace: recovery, the connect hook (sync or ``async def``), the answer.

A ``CONNECT`` to a declared namespace first tries connection-state recovery
(see ``_recovery``); otherwise it makes a new namespace connection and runs
the namespace's ``before_connect`` hook. A sync hook decides at once. An
``async def`` hook runs as a :class:`~ikisocket_core.protocol.RunHandler` of
the session's transport (the engine reads nothing more from that client
until it finished, so what the client sends after its ``CONNECT`` keeps its
order); the ``CONNECT`` is answered when it finishes. Meanwhile the session
stays bounded: one hook per namespace of a session at a time, the session's
``connect_timeout`` still runs, the driver's ``handler_timeout`` cancels a
hook that hangs (a refusal), and a session that ended meanwhile is simply
not answered (the new connection never existed).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ikisocket_core._actions import RunHandler
from ikisocket_core._dispatch import _Handler
from ikisocket_core._errors import ConnectRefused, LocalProtocolError
from ikisocket_core._events import EVENT_CONNECT, MessageKind
from ikisocket_core._log import logger
from ikisocket_core._state import StateInput, transition
from ikisocket_core._websocket import Websocket

from ._packets import SocketPacket, SocketType
from ._recovery import EVENT_RECOVER
from ._session import Joined

if TYPE_CHECKING:
    from ._mount import SocketIO
    from ._session import EngineSession

__all__: list[str] = []

_TEXT = MessageKind.TEXT


def connect_namespace(
    mount: SocketIO, session: EngineSession, name: str, auth: dict[str, Any]
) -> None:
    """A client asked to join ``name``: recover it, refuse it, or make its connection.

    Args:
        mount: The Socket.IO mount.
        session: The session.
        name: The namespace.
        auth: The ``CONNECT`` payload.
    """
    hub = mount.hub
    declared = mount._namespaces.get(name)
    if declared is None:
        refuse(session, name, "Invalid namespace")
        return
    if not hub.accepting:
        refuse(session, name, "the server is not accepting connections")
        return
    if (session, name) in mount._connecting:
        return  # its hook still runs: that answer will come
    recoveries = mount._recovery
    if recoveries is not None:
        pid = auth.get("pid")
        mine = isinstance(pid, str) and pid in recoveries.held
        found = recoveries.restore(session, name, auth)
        if found is not None:
            recovered(mount, session, found, auth)
            return
        if not mine and recoveries.handoffs.claim(session, name, auth):
            return  # another node may hold it (see ``_handoff``): answered when it says
    _fresh(mount, session, name, auth)


def resume_fresh(mount: SocketIO, session: EngineSession, name: str, auth: dict[str, Any]) -> None:
    """A claim ended without a recovery: answer its ``CONNECT`` as a fresh one.

    Args:
        mount: The Socket.IO mount.
        session: The session (nothing is answered if it ended meanwhile).
        name: The namespace.
        auth: The ``CONNECT`` payload.
    """
    if session.ended:
        return
    if not mount.hub.accepting:
        refuse(session, name, "the server is not accepting connections")
        return
    _fresh(mount, session, name, auth)


def _fresh(mount: SocketIO, session: EngineSession, name: str, auth: dict[str, Any]) -> None:
    """A new namespace connection: its UUID, then its hook (if any) decides."""
    hub = mount.hub
    declared = mount._namespaces[name]
    uuid = session.uuid
    session.uuid = None  # the hook's UUID names the first namespace connection only
    try:
        if uuid is None:
            uuid = hub._uuid_factory()
        if not isinstance(uuid, str) or not uuid:
            raise LocalProtocolError(f"the uuid factory made {uuid!r}, not a non-empty str")
    except Exception:
        logger.exception("the uuid factory failed for a Socket.IO connection")
        refuse(session, name, "internal server error")
        return
    if hub._is_taken(uuid):
        refuse(session, name, "this uuid is already connected")
        return
    kws = Websocket(hub._owner, uuid, session.socket.request, {}, attributes=session.attributes)
    kws.namespace = declared
    kws.auth = auth
    kws.transport = session.transport
    joined = Joined(session, kws)
    kws.conn = joined
    hook = mount._hooks.get(name)
    if hook is None:
        accept(mount, joined)
        return
    try:
        verdict = hook(kws)
    except Exception as exc:
        decide(mount, joined, _refusal(exc, name))
        return
    if inspect.isawaitable(verdict):
        mount._connecting[session, name] = None
        handler = _Connecting(mount, joined, verdict)
        hub._push(RunHandler(target=session.socket, awaitable=handler))
        return
    decide(mount, joined, _judge(verdict))


def _refusal(exc: BaseException, name: str) -> str | dict[str, Any]:
    """The ``CONNECT_ERROR`` body for a hook that raised."""
    if isinstance(exc, ConnectRefused):
        body: dict[str, Any] = {"message": exc.message}
        if exc.data is not None:
            body["data"] = exc.data
        return body
    logger.error("before_connect failed for namespace %s", name, exc_info=exc)
    return "internal server error"


def _judge(verdict: Any) -> str | None:
    """A hook's return value: ``False`` refuses, anything else accepts."""
    return "Connection refused" if verdict is False else None


def decide(mount: SocketIO, joined: Joined, refusal: str | dict[str, Any] | None) -> None:
    """Answer a ``CONNECT`` once its hook decided (not if the session ended meanwhile).

    Args:
        mount: The mount.
        joined: The would-be namespace connection.
        refusal: The ``CONNECT_ERROR`` body, or ``None`` to accept.
    """
    session = joined.session
    name = joined.kws.namespace
    if session.ended:
        return  # the client left: the connection never existed
    if refusal is None and not mount.hub.accepting:
        refusal = "the server is not accepting connections"
    if refusal is None and mount.hub._is_taken(joined.kws.uuid):
        refusal = "this uuid is already connected"  # taken while an async hook ran
    if refusal is not None:
        refuse(session, name, refusal)
        return
    accept(mount, joined)


def accept(mount: SocketIO, joined: Joined) -> None:
    """Register a new namespace connection, answer ``CONNECT``, fire ``connect``.

    Args:
        mount: The mount.
        joined: The namespace connection.
    """
    hub = mount.hub
    kws = joined.kws
    session = joined.session
    kws.state = transition(kws.state, StateInput.ACCEPT)
    kws.last_activity = hub._now
    hub._register(kws)
    hub._arm_idle(kws)
    session.join(joined)
    answer: dict[str, Any] = {"sid": kws.uuid}
    recoveries = mount._recovery
    if recoveries is not None:
        backlog = joined.backlog = recoveries.new_backlog()
        answer["pid"] = backlog.pid
    packet = SocketPacket(type=SocketType.CONNECT, namespace=kws.namespace, data=answer)
    session.write_packet(packet)
    hub._dispatch(kws, EVENT_CONNECT, b"", _TEXT)


def recovered(
    mount: SocketIO, session: EngineSession, joined: Joined, auth: dict[str, Any]
) -> None:
    """A held connection came back: answer with its ``pid``, replay what it missed, ``recover``.

    Args:
        mount: The mount.
        session: The session it came back on.
        joined: The connection (attached to ``session``).
        auth: The ``CONNECT`` payload.
    """
    kws = joined.kws
    session.uuid = None
    kws.recovered = True
    kws.transport = session.transport  # it may come back on another transport
    recoveries = mount._recovery
    assert recoveries is not None
    session.write_packet(
        SocketPacket(
            type=SocketType.CONNECT,
            namespace=kws.namespace,
            data={"sid": kws.uuid, "pid": joined.backlog.pid},
        )
    )
    for text, attachments in recoveries.missed(joined, auth):
        session.write(text, attachments)
    mount.hub._dispatch(kws, EVENT_RECOVER, b"", _TEXT)


def refuse(session: EngineSession, name: str, body: str | dict[str, Any]) -> None:
    """Answer a ``CONNECT`` with ``CONNECT_ERROR``.

    Args:
        session: The session.
        name: The namespace.
        body: The message, or the whole error object.
    """
    data = {"message": body} if isinstance(body, str) else body
    session.write_packet(SocketPacket(type=SocketType.CONNECT_ERROR, namespace=name, data=data))


class _Connecting(_Handler):
    """An ``async def`` connect hook: the ``CONNECT`` is answered once it finished."""

    __slots__ = ("_joined", "_mount")

    def __init__(self, mount: SocketIO, joined: Joined, awaitable: Any) -> None:
        super().__init__(mount.hub, joined.kws.payload(EVENT_CONNECT), awaitable)
        self._mount = mount
        self._joined = joined

    async def _run(self) -> None:
        try:
            try:
                verdict = await self._awaitable
            except Exception as exc:
                self._decided(_refusal(exc, self._joined.kws.namespace))
            else:
                self._decided(_judge(verdict))
        finally:
            self._finish()

    def _decided(self, refusal: str | dict[str, Any] | None) -> None:
        mount = self._mount
        joined = self._joined
        key = (joined.session, joined.kws.namespace)
        if key not in mount._connecting:
            return  # decided already (the driver cancelled it)
        del mount._connecting[key]
        hub = mount.hub
        hub._depth += 1
        try:
            decide(mount, joined, refusal)
        finally:
            hub._depth -= 1
            hub._flush_outside()

    def timed_out(self, timeout: float) -> None:
        """The driver cancelled the hook at its ``handler_timeout``: a refusal.

        Args:
            timeout: The configured handler timeout.
        """
        logger.error("before_connect for %s ran over %g s", self._joined.kws.namespace, timeout)
        self._decided("internal server error")
