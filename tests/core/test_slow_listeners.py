"""A plain listener that blocks the event loop is logged once, with its name.

The engine reads no clock of its own: the driver gives ``Server(..., clock=)``
(``TestClient(listener_clock=)`` here, a fake clock that each listener moves
by the time it "takes"), and ``slow_listener_threshold`` (0.1 s by default)
says how long is too long.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket
from ikisocket_core.testing import TestClient

BLOCKED = "blocked the event loop"


class FakeClock:
    """A clock that only moves when a listener says it took time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if BLOCKED in r.getMessage()]


def hub_taking(clock: FakeClock, seconds: dict[str, float]) -> Hub:
    """A hub whose message listener 'takes' ``seconds[text]`` for each message text."""
    hub = Hub()

    @hub.websocket("/ws")
    def route(kws: Websocket) -> None:
        clock.now += seconds.get("route", 0.0)

    @hub.on(EVENT_MESSAGE)
    def crunch(ep: EventPayload) -> None:
        clock.now += seconds.get(ep.text, 0.0)
        if ep.text == "fail":
            raise RuntimeError("and then it failed")

    return hub


def talk(client: TestClient, *texts: str) -> None:
    with client.websocket_connect("/ws") as ws:
        for text in texts:
            ws.send_text(text)


def test_a_slow_listener_is_logged_once_with_its_name_event_and_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    hub = hub_taking(clock, {"slow": 0.25, "fast": 0.01})
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        talk(TestClient(hub, listener_clock=clock), "fast", "slow", "slow", "fast")
    (line,) = slow_lines(caplog)
    assert "hub_taking.<locals>.crunch" in line
    assert "(message)" in line
    assert "0.250 s" in line


def test_fast_listeners_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    hub = hub_taking(clock, {"fast": 0.09})
    with caplog.at_level(logging.DEBUG, logger="ikisocket"):
        talk(TestClient(hub, listener_clock=clock), "fast", "fast")
    assert slow_lines(caplog) == []


def test_a_slow_route_callback_and_a_slow_failing_listener_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    hub = hub_taking(clock, {"route": 0.5, "fail": 0.3})
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        talk(TestClient(hub, listener_clock=clock), "fail")
    lines = slow_lines(caplog)
    assert len(lines) == 2
    assert "hub_taking.<locals>.route (route callback)" in lines[0]
    assert "hub_taking.<locals>.crunch (message)" in lines[1]


@pytest.mark.parametrize("options", [{"slow_listener_threshold": None}, {}])
def test_no_threshold_or_no_clock_times_nothing(
    caplog: pytest.LogCaptureFixture, options: dict[str, Any]
) -> None:
    clock = FakeClock()
    hub = hub_taking(clock, {"slow": 5.0})
    client = (
        TestClient(hub, listener_clock=clock, **options) if options else TestClient(hub)
    )  # no listener_clock: the engine has no clock to time with
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        talk(client, "slow")
    assert slow_lines(caplog) == []


def test_the_threshold_is_a_setting(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    hub = hub_taking(clock, {"slow": 0.05})
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        talk(TestClient(hub, listener_clock=clock, slow_listener_threshold=0.01), "slow")
    assert len(slow_lines(caplog)) == 1


def test_with_a_real_clock_a_sleeping_listener_is_caught(caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)

    @hub.on(EVENT_MESSAGE)
    def sleeper(ep: EventPayload) -> None:
        time.sleep(0.15)  # what a blocking database call looks like to the loop

    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        talk(TestClient(hub, listener_clock=time.perf_counter), "zzz")
    (line,) = slow_lines(caplog)
    assert "sleeper" in line


def test_a_fast_failing_listener_is_not_logged_as_slow(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    hub = hub_taking(clock, {"fail": 0.01})
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        talk(TestClient(hub, listener_clock=clock), "fail")
    assert slow_lines(caplog) == []
    assert any("and then it failed" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_async_listeners_run_when_listeners_are_timed(caplog: pytest.LogCaptureFixture) -> None:
    # Only the plain call is timed: an async def listener's awaited part may take long.
    clock = FakeClock()
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    seen: list[str] = []

    @hub.on(EVENT_MESSAGE)
    async def later(ep: EventPayload) -> None:
        clock.now += 5.0
        seen.append(ep.text)
        ep.kws.emit(ep.text.upper())

    client = TestClient(hub, listener_clock=clock)
    with (
        caplog.at_level(logging.WARNING, logger="ikisocket"),
        client.websocket_connect("/ws") as ws,
    ):
        ws.send_text("one")
        assert ws.receive_text() == "ONE"
        ws.send_text("two")
        assert ws.receive_text() == "TWO"
    assert seen == ["one", "two"]
    assert slow_lines(caplog) == []
