"""The chat page on Socket.IO in headless Chromium, beside a plain WebSocket user.

A Socket.IO page and a ``websockets`` client share a room and write to each other,
on polling-then-upgrade and on WebSocket only; then the page's connection is cut
(a TCP relay drops it while the plain user keeps writing) and the page gets it
back, with every message it missed, in order. See ``chat_harness`` for the demo,
the browsers, and when these tests skip or fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("chat_harness")  # it is also a plugin, below

from chat_harness import (  # noqa: E402
    Browsers,
    ChatPage,
    CuttableProxy,
    Demo,
    PlainClient,
    welcomes,
)

# The fixtures: demo (with socketio_client) and browsers.
pytest_plugins = ["chat_harness"]
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("transports", "expected"),
    [
        ("", ["Socket.IO \u00b7 polling", "Socket.IO \u00b7 websocket"]),  # the upgrade
        ("?transports=websocket", ["Socket.IO \u00b7 websocket"]),
    ],
)
def test_socketio_page_and_plain_client_share_rooms(
    demo: Demo, browsers: Browsers, transports: str, expected: list[str]
) -> None:
    (driver,) = browsers(1)
    alice = ChatPage(driver, "alice")
    with PlainClient.connect(demo.port, "bob") as bob:
        alice.open(demo.url + transports)
        alice.wait_presence(["alice", "bob"])
        bob.wait("presence", ["alice", "bob"])
        alice.wait("the transports", lambda: alice.transports() == expected)

        # Both join #lobby, each its own way; each sees the other's room messages.
        bob.send("join", "lobby")
        bob.wait("system", "bob joined #lobby")
        alice.join("lobby")
        bob.wait("system", "alice joined #lobby")
        alice.send("hello from the page", to="#lobby")
        bob.wait("message", "hello from the page", sender="alice")
        bob.send("message", "hello from python", to="#lobby")
        alice.wait_line("room", "hello from python", who="#lobby \u00b7 bob")

        # Direct messages both ways.
        bob.send("message", "psst", to="alice")
        alice.wait_line("dm", "psst", who="bob \u2192 you")
        alice.send("psst back", to="bob")
        bob.wait("message", "psst back", sender="alice")

        # A Socket.IO page cannot take a name a plain client holds.
        alice.leave_chat()
        bob.wait("presence", ["bob"])
        alice.sign_in("bob")
        alice.wait("the 'already connected' error", lambda: "already" in alice.login_error())


@pytest.fixture
def proxy(demo: Demo) -> Iterator[CuttableProxy]:
    """A relay to the demo that the test can cut."""
    relay = CuttableProxy(demo.port)
    try:
        yield relay
    finally:
        relay.close()


def test_socketio_page_recovers_what_it_missed_after_a_drop(
    demo: Demo, browsers: Browsers, proxy: CuttableProxy
) -> None:
    (driver,) = browsers(1)
    alice = ChatPage(driver, "alice")
    with PlainClient.connect(demo.port, "bob") as bob:
        alice.open(proxy.url)
        alice.wait_presence(["alice", "bob"])
        alice.wait("the upgrade", lambda: alice.transport() == "Socket.IO \u00b7 websocket")
        alice.join("lobby")
        bob.send("join", "lobby")
        alice.wait(
            "the room list to count 2 members", lambda: alice.rooms() == {"lobby": "2 members"}
        )

        # The network between the page and the server goes away; Bob keeps writing.
        proxy.cut()
        alice.wait_status("offline")
        missed = [f"missed {i}" for i in range(5)]
        for i, text in enumerate(missed):
            bob.send("message", text, to="#lobby" if i % 2 else "alice")
        bob.send("message", "to everyone meanwhile")

        # It comes back: the page gets its connection back and every message, in order.
        proxy.resume()
        alice.wait_status("connected")
        alice.wait_line("system", "Reconnected: nothing was missed.")
        alice.wait_line("chat", "to everyone meanwhile", who="bob")
        shown = [t for t in alice.texts() if t.startswith("missed ")]
        assert shown == missed
        assert welcomes(alice) == 1  # the same connection (same UUID), not a new sign-in

        # Still in #lobby on the server, and Bob was never told Alice left.
        alice.send("back again", to="#lobby")
        bob.wait("message", "back again", sender="alice")
        assert not any(m["event"] == "system" and "left" in m["data"] for m in bob.seen)
