"""Actions: the values the hub asks its driver to perform, and their validation."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from ikisocket_core import (
    BINARY,
    EVENT_MESSAGE,
    TEXT,
    Accept,
    Close,
    Hub,
    LocalProtocolError,
    Reject,
    Request,
    RunHandler,
    Send,
    Websocket,
)


def make_hub() -> Hub:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: None)
    return hub


def open_direct(hub: Hub) -> Websocket:
    kws = hub.open(Request.from_target("/ws"))
    assert isinstance(kws, Websocket)
    return kws


def test_one_send_per_emit_broadcast_and_room_emit_with_all_targets() -> None:
    hub = make_hub()
    a, b, c = (open_direct(hub) for _ in range(3))
    a.join("r")
    c.join("r")
    hub.broadcast("all")
    hub.broadcast(b"\x00", BINARY, exclude=b)
    a.broadcast("not a")
    hub.emit_to_list(["c3", "c1"], "listed")
    hub.to("r").emit("room")
    b.emit("one")
    assert hub.drain_actions() == [
        Send(targets=(a, b, c), data=b"all", kind=TEXT),
        Send(targets=(a, c), data=b"\x00", kind=BINARY),
        Send(targets=(b, c), data=b"not a", kind=TEXT),
        Send(targets=(c, a), data=b"listed", kind=TEXT),
        Send(targets=(a, c), data=b"room", kind=TEXT),
        Send(targets=(b,), data=b"one", kind=TEXT),
    ]


def test_server_close_queues_one_close_action() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    hub.close(kws.uuid, 4000, "bye")
    assert hub.drain_actions() == [Close(target=kws, code=4000, reason="bye")]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999])
def test_close_accepts_sendable_codes(code: int) -> None:
    kws = open_direct(make_hub())
    assert Close(target=kws, code=code).code == code


@pytest.mark.parametrize("code", [-1, 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_close_refuses_codes_that_may_not_be_sent(code: int) -> None:
    kws = open_direct(make_hub())
    with pytest.raises(LocalProtocolError):
        Close(target=kws, code=code)


def test_close_reason_is_at_most_123_utf8_bytes() -> None:
    kws = open_direct(make_hub())
    assert Close(target=kws, reason="x" * 123).reason == "x" * 123
    with pytest.raises(LocalProtocolError):
        Close(target=kws, reason="x" * 124)
    with pytest.raises(LocalProtocolError):
        Close(target=kws, reason="€" * 42)  # 126 bytes in 42 characters


@pytest.mark.parametrize("status", [400, 401, 404, 451, 500, 503, 599])
def test_reject_takes_4xx_and_5xx(status: int) -> None:
    assert Reject(status=status).status == status


@pytest.mark.parametrize("status", [101, 200, 302, 399, 600])
def test_reject_refuses_other_statuses(status: int) -> None:
    with pytest.raises(LocalProtocolError):
        Reject(status=status)


def test_defaults() -> None:
    assert Reject() == Reject(status=403, reason="", headers=())
    accept = Accept()
    assert (accept.uuid, dict(accept.attributes), accept.subprotocol) == (None, {}, None)
    assert Accept().attributes is not Accept().attributes


def test_actions_are_frozen_and_keyword_only() -> None:
    kws = open_direct(make_hub())
    send = Send(targets=(kws,), data=b"x")
    assert send.kind is TEXT
    with pytest.raises(dataclasses.FrozenInstanceError):
        send.data = b"y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Send((kws,), b"x")  # type: ignore[call-arg]


def test_run_handler_wraps_async_listeners() -> None:
    hub = make_hub()
    ran: list[str] = []

    @hub.on(EVENT_MESSAGE)
    async def listener(ep: object) -> None:
        ran.append("ran")

    kws = open_direct(hub)
    hub.receive_message(kws, "x")
    (action,) = hub.drain_actions()
    assert isinstance(action, RunHandler)
    assert action.target is kws
    coroutine = action.awaitable
    assert ran == []
    with pytest.raises(StopIteration):
        coroutine.__await__().send(None)
    assert ran == ["ran"]
