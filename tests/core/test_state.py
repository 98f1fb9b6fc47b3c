"""The connection state machine: its table, its sticky end, and how the hub walks it."""

from __future__ import annotations

import itertools

import pytest

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_MESSAGE,
    ConnectionState,
    EventPayload,
    Hub,
    LocalProtocolError,
    Websocket,
)
from ikisocket_core._state import TRANSITIONS, StateInput, transition
from ikisocket_core.testing import TestClient

S = ConnectionState
I = StateInput  # noqa: E741


def test_the_table() -> None:
    assert TRANSITIONS == {
        (S.CONNECTING, I.ACCEPT): S.OPEN,
        (S.CONNECTING, I.REJECT): S.CLOSED,
        (S.CONNECTING, I.PEER_GONE): S.CLOSED,
        (S.OPEN, I.SERVER_CLOSE): S.CLOSING,
        (S.OPEN, I.PEER_GONE): S.CLOSED,
        (S.CLOSING, I.PEER_GONE): S.CLOSED,
    }


@pytest.mark.parametrize(("state", "event"), list(TRANSITIONS))
def test_transition_follows_the_table(state: ConnectionState, event: StateInput) -> None:
    assert transition(state, event) is TRANSITIONS[state, event]


@pytest.mark.parametrize(
    ("state", "event"),
    [(s, i) for s in ConnectionState for i in StateInput if (s, i) not in TRANSITIONS],
)
def test_moves_missing_from_the_table_are_refused(
    state: ConnectionState, event: StateInput
) -> None:
    with pytest.raises(LocalProtocolError, match=f"cannot {event.value} a connection"):
        transition(state, event)


@pytest.mark.parametrize("event", list(StateInput))
def test_closed_is_sticky(event: StateInput) -> None:
    with pytest.raises(LocalProtocolError):
        transition(S.CLOSED, event)


def lifecycle(server_closes: bool) -> list[tuple[str, ConnectionState]]:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    seen: list[tuple[str, ConnectionState]] = []

    @hub.websocket("/ws")
    def on_open(kws: Websocket) -> None:
        seen.append(("route", kws.state))

    def log(ep: EventPayload) -> None:
        seen.append((ep.name, ep.kws.state))

    for event in (EVENT_CONNECT, EVENT_MESSAGE, EVENT_CLOSE, EVENT_DISCONNECT):
        hub.on(event, log)
    client = TestClient(hub)
    ws = client.websocket_connect("/ws")
    ws.send_text("x")
    if server_closes:
        ws.kws.close()
        client.pump()
    else:
        ws.close()
    seen.append(("after", ws.kws.state))
    return seen


def test_the_hub_walks_the_table_when_the_peer_leaves() -> None:
    assert lifecycle(server_closes=False) == [
        ("route", S.OPEN),
        (EVENT_CONNECT, S.OPEN),
        (EVENT_MESSAGE, S.OPEN),
        (EVENT_DISCONNECT, S.CLOSED),
        ("after", S.CLOSED),
    ]


def test_the_hub_walks_the_table_when_the_server_closes() -> None:
    assert lifecycle(server_closes=True) == [
        ("route", S.OPEN),
        (EVENT_CONNECT, S.OPEN),
        (EVENT_MESSAGE, S.OPEN),
        (EVENT_CLOSE, S.CLOSING),
        ("after", S.CLOSED),  # the test client answered the close frame
    ]
