"""The exception hierarchy and what each exception carries."""

from __future__ import annotations

import logging

import pytest

from ikisocket_core import (
    EVENT_DISCONNECT,
    EVENT_ERROR,
    ConnectionClosed,
    DuplicateUUID,
    EventPayload,
    Hub,
    IkisocketError,
    LocalProtocolError,
    RemoteProtocolError,
    SlowConsumer,
    UnknownConnection,
)
from ikisocket_core.testing import TestClient


def test_hierarchy() -> None:
    for local in (UnknownConnection, DuplicateUUID):
        assert issubclass(local, LocalProtocolError)
    for error in (LocalProtocolError, RemoteProtocolError, ConnectionClosed, SlowConsumer):
        assert issubclass(error, IkisocketError)
    assert issubclass(IkisocketError, Exception)
    assert issubclass(UnknownConnection, KeyError)  # a lookup that failed
    assert not issubclass(RemoteProtocolError, LocalProtocolError)


def test_unknown_connection() -> None:
    error = UnknownConnection("abc")
    assert error.uuid == "abc"
    assert str(error) == "no live connection with uuid 'abc'"
    with pytest.raises(KeyError):
        raise error


def test_duplicate_uuid() -> None:
    error = DuplicateUUID("abc")
    assert error.uuid == "abc"
    assert "'abc'" in str(error)


def test_remote_protocol_error_hints() -> None:
    default = RemoteProtocolError("bad")
    assert (str(default), default.close_code, default.status_hint) == ("bad", 1002, 400)
    custom = RemoteProtocolError("too big", close_code=1009, status_hint=431)
    assert (custom.close_code, custom.status_hint) == (1009, 431)


def test_connection_closed() -> None:
    cause = RemoteProtocolError("bad utf-8", close_code=1007)
    plain = ConnectionClosed(1000)
    assert (plain.code, plain.reason, plain.cause) == (1000, "", None)
    assert str(plain) == "connection closed with code 1000"
    detailed = ConnectionClosed(1007, "invalid text", cause)
    assert str(detailed) == "connection closed with code 1007: invalid text"
    assert detailed.cause is cause


def test_errors_travel_on_events_and_are_not_raised() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    seen: list[tuple[str, BaseException | None]] = []

    def log(ep: EventPayload) -> None:
        seen.append((ep.name, ep.error))

    hub.on(EVENT_ERROR, log)
    hub.on(EVENT_DISCONNECT, log)
    ws = TestClient(hub).websocket_connect("/ws")
    problem = RemoteProtocolError("bad frame", close_code=1002)
    hub.receive_error(ws.kws, problem)
    hub.receive_disconnect(ws.kws, 1002, "protocol error", problem)
    (error_name, error), (gone_name, closed) = seen
    assert (error_name, error) == (EVENT_ERROR, problem)
    assert gone_name == EVENT_DISCONNECT
    assert isinstance(closed, ConnectionClosed)
    assert (closed.code, closed.reason, closed.cause) == (1002, "protocol error", problem)


def test_slow_consumer() -> None:
    error = SlowConsumer(5_000_000, 4_194_304)
    assert (error.buffered, error.limit) == (5_000_000, 4_194_304)
    assert str(error) == "outbound buffer of 5000000 bytes passed max_queue=4194304"


@pytest.mark.parametrize(
    ("error", "level", "traceback"),
    [
        # At DEBUG: the engine logs the peer's faults itself, once, with its address.
        (RemoteProtocolError("bad frame"), logging.DEBUG, False),
        (SlowConsumer(10, 5), logging.DEBUG, False),
        (RuntimeError("application bug"), logging.ERROR, True),
    ],
)
def test_errors_without_error_listener_are_logged(
    caplog: pytest.LogCaptureFixture, error: Exception, level: int, traceback: bool
) -> None:
    """The peer's faults are logged quietly; the application's with a traceback."""
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    ws = TestClient(hub).websocket_connect("/ws")
    with caplog.at_level(logging.DEBUG, logger="ikisocket"):
        hub.receive_error(ws.kws, error)
    (entry,) = caplog.records
    assert entry.levelno == level
    assert str(error) in entry.getMessage() or entry.exc_info is not None
    assert (entry.exc_info is not None) == traceback
