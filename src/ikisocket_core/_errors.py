"""Exceptions raised or reported by ikisocket.

Errors split the way h11's do: :class:`LocalProtocolError` means *this* program
misused the API and is raised at once; :class:`RemoteProtocolError` means the
peer broke the protocol and is never raised out of a ``receive_*`` input: it is
reported through the ``error`` event and ends the connection with its close
code.
"""

from __future__ import annotations

__all__ = [
    "AckTimeout",
    "ConnectRefused",
    "ConnectionClosed",
    "DuplicateUUID",
    "HandlerTimeout",
    "IdleTimeout",
    "IkisocketError",
    "LocalProtocolError",
    "RelayTooLarge",
    "RemoteProtocolError",
    "SlowConsumer",
    "UnknownConnection",
]


class IkisocketError(Exception):
    """Base class of every exception ikisocket defines."""


class LocalProtocolError(IkisocketError):
    """The application used the API in a way it does not allow.

    Raised immediately from the call that misused it (wrong state, bad
    argument, unknown connection).
    """


class RemoteProtocolError(IkisocketError):
    """The peer broke the WebSocket or HTTP protocol.

    Never raised from ``receive_*`` inputs; it travels on ``error`` and
    ``disconnect`` events. ``close_code`` is the RFC 6455 section 7.4.1 code the
    server answers with (e.g. 1002, 1007, 1009) and ``status_hint`` the HTTP
    status used while the request is still in its HTTP phase.

    Args:
        message: What went wrong, for people.
        close_code: The close code the connection is closed with.
        status_hint: The HTTP status to answer with before the upgrade.
    """

    def __init__(self, message: str, *, close_code: int = 1002, status_hint: int = 400) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.status_hint = status_hint


class UnknownConnection(LocalProtocolError, KeyError):
    """No live connection has this UUID (the seed's ``ErrorInvalidConnection``).

    Args:
        uuid: The UUID that was looked up.
    """

    def __init__(self, uuid: str) -> None:
        super().__init__(uuid)
        self.uuid = uuid

    def __str__(self) -> str:
        return f"no live connection with uuid {self.uuid!r}"


class DuplicateUUID(LocalProtocolError):
    """Another live connection already uses this UUID.

    Args:
        uuid: The UUID that is taken.
    """

    def __init__(self, uuid: str) -> None:
        super().__init__(f"uuid {uuid!r} is already used by another connection")
        self.uuid = uuid


class RelayTooLarge(LocalProtocolError, ValueError):
    """A federated command's data is larger than the hub's ``max_relay_size``.

    Raised by ``broadcast``, room emits and fires, ``fire`` and emits to
    connections on other nodes of a federated hub before anything is sent,
    on this node or any other: a backplane could not carry it without
    risking the broker's output-buffer limits (see
    :meth:`~ikisocket_core.Hub.federate`). Raised in a listener, it reaches
    that connection's ``error`` listeners like any exception a listener raises.

    Args:
        size: The data's size in bytes.
        limit: The configured ``max_relay_size``.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"{size} bytes is more than a relay carries (max_relay_size={limit}); "
            "send it on this node only, or raise the limit with Hub.federate"
        )
        self.size = size
        self.limit = limit


class ConnectionClosed(IkisocketError):
    """Why a connection ended; the ``error`` of ``disconnect`` and ``close`` payloads.

    Args:
        code: The close code (RFC 6455 section 7.4); 1006 when the transport
            went away without a close frame.
        reason: The close reason sent with the code, possibly empty.
        cause: The error that made the connection end, if any.
    """

    def __init__(self, code: int, reason: str = "", cause: BaseException | None = None) -> None:
        super().__init__(f"connection closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason
        self.cause = cause


class SlowConsumer(IkisocketError):
    """A connection's outbound buffer passed ``max_queue`` because its peer reads too slowly.

    Reported through the ``error`` event. With the ``drop`` policy the message
    was not queued for that connection; with ``close`` the connection was closed.

    Args:
        buffered: Bytes waiting for the peer when it happened.
        limit: The configured ``max_queue``.
    """

    def __init__(self, buffered: int, limit: int) -> None:
        super().__init__(f"outbound buffer of {buffered} bytes passed max_queue={limit}")
        self.buffered = buffered
        self.limit = limit


class IdleTimeout(IkisocketError):
    """The peer sent no message for ``idle_timeout`` seconds; the ``cause`` of its disconnect.

    Args:
        timeout: The configured idle timeout.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no message for {timeout:g} s")
        self.timeout = timeout


class HandlerTimeout(IkisocketError):
    """An ``async def`` listener ran longer than ``handler_timeout`` and was cancelled.

    Reported through the ``error`` event of the listener's connection, like an
    exception the listener raised; with the hub's ``on_listener_error="close"``
    the connection is then closed with 1011. Later listeners of the connection
    still run.

    Args:
        timeout: The configured handler timeout, in seconds.
        listener: The name of the listener that was cancelled.
    """

    def __init__(self, timeout: float, listener: str = "") -> None:
        name = f"listener {listener} " if listener else "listener "
        super().__init__(f"{name}ran longer than {timeout:g} s and was cancelled")
        self.timeout = timeout
        self.listener = listener


class AckTimeout(IkisocketError, TimeoutError):
    """A Socket.IO client did not answer an ack within its timeout.

    What an ``emit_event(..., ack=callback, timeout=...)`` callback receives
    instead of the answer.

    Args:
        timeout: The timeout that passed, in seconds.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no ack within {timeout:g} s")
        self.timeout = timeout


class ConnectRefused(IkisocketError):
    """Raised by a Socket.IO connect hook to refuse a namespace connection.

    The client gets a ``CONNECT_ERROR`` with ``{"message": message}`` (and
    ``"data": data`` when given): socket.io-client's ``connect_error`` event.

    Args:
        message: Why, for the client.
        data: Extra JSON data for the client, if any.
    """

    def __init__(self, message: str = "Connection refused", data: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
