"""The chat demo in real headless Chromium pages: what each person sees.

Each test starts the demo exactly as a user does (``python -m ikisocket_adapters
demo --port PORT``) and drives two or three browser windows through the page's
own controls: the name form, the "to" menu, the message box, the room form and
"Leave chat". Every wait is bounded (``WAIT`` seconds).

The page speaks Socket.IO when the demo serves socket.io-client: the
``socketio_client`` fixture installs it from npm into the git-ignored
``examples/chat/node_modules``, as ``make demo`` does. Pages opened with
``?plain`` use a plain WebSocket (the fallback when it is not installed).

Chromium and chromedriver are Debian's (``apt-get install chromium
chromium-driver``). When they (or npm) are missing the tests skip, except under
CI (``CI=true``), where they fail: ``.ci/run`` installs them. The first test
saves a screenshot to ``artifacts/chat.png``.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("chat_harness")  # it is also a plugin, below

from chat_harness import (  # noqa: E402
    ARTIFACTS,
    Browsers,
    ChatPage,
    Demo,
    PlainClient,
    welcomes,
)

# The fixtures: demo (with socketio_client) and browsers.
pytest_plugins = ["chat_harness"]
pytestmark = pytest.mark.e2e

#: The page's two ways to talk to the server: Socket.IO, and the plain WebSocket fallback.
PAGES = {"socketio": "", "plain": "?plain"}


@pytest.mark.parametrize("mode", PAGES)
def test_three_people_chat_directly_in_rooms_and_leave(
    demo: Demo, browsers: Browsers, mode: str
) -> None:
    alice, bob, carol = (
        ChatPage(d, n) for d, n in zip(browsers(3), ("alice", "bob", "carol"), strict=True)
    )
    url = demo.url + PAGES[mode]

    # Each signs in; the page greets them the seed's way and shows who is online.
    alice.open(url)
    alice.wait_status("connected")
    alice.wait_line("system", "Hello user: alice with UUID: ")
    alice.wait_presence(["alice"])
    assert alice.transport().startswith("Socket.IO" if mode == "socketio" else "WebSocket")
    bob.open(url)
    carol.open(url)
    for page in (alice, bob, carol):
        page.wait_presence(["alice", "bob", "carol"])
    alice.wait_line("system", "New user connected: bob and UUID: ")
    alice.wait_line("system", "New user connected: carol and UUID: ")
    bob.wait_line("system", "New user connected: carol and UUID: ")
    assert not carol.has_line("system", "New user connected: carol")  # not told about oneself

    # A message to everyone reaches the others, labelled with the sender.
    alice.send("hello everyone")
    bob.wait_line("chat", "hello everyone", who="alice")
    carol.wait_line("chat", "hello everyone", who="alice")
    assert alice.has_line("mine", "hello everyone", who="you")

    # A direct message: only the recipient sees it. Bob's next message to everyone
    # arrives after it, so once Carol shows that one she would have shown the DM.
    bob.send("psst, alice only", to="alice")
    alice.wait_line("dm", "psst, alice only", who="bob \u2192 you")
    bob.send("back to everyone")
    carol.wait_line("chat", "back to everyone", who="bob")
    alice.wait_line("chat", "back to everyone", who="bob")
    assert not any("psst" in text for text in carol.texts())
    assert bob.has_line("dm", "psst, alice only", who="you \u2192 alice")

    # Rooms: Bob and Carol join #lobby; what Carol sends there reaches Bob, not Alice.
    bob.join("lobby")
    bob.wait_line("system", "bob joined #lobby")
    carol.join("lobby")
    bob.wait_line("system", "carol joined #lobby")
    bob.wait("the room list to count 2 members", lambda: bob.rooms() == {"lobby": "2 members"})
    carol.send("lobby only", to="#lobby")
    bob.wait_line("room", "lobby only", who="#lobby \u00b7 carol")
    carol.send("carol to everyone")
    alice.wait_line("chat", "carol to everyone", who="carol")
    assert not any("lobby" in text for text in alice.texts())

    # Carol leaves: the others are told, their presence lists and Bob's room update.
    carol.leave_chat()
    for page in (alice, bob):
        page.wait_line("system", "User left: carol")
        page.wait_presence(["alice", "bob"])
    bob.wait("the room list to count 1 member", lambda: bob.rooms() == {"lobby": "1 member"})
    assert carol.status()[0] == "offline"

    ARTIFACTS.mkdir(exist_ok=True)
    assert bob.driver.save_screenshot(str(ARTIFACTS / "chat.png"))


@pytest.mark.parametrize("mode", PAGES)
@pytest.mark.parametrize("demo", ["asyncio", "trio"], indirect=True)
def test_page_reconnects_after_the_server_restarts(
    demo: Demo, browsers: Browsers, mode: str
) -> None:
    first, second = browsers(2)
    url = demo.url + PAGES[mode]
    alice = ChatPage(first, "alice")
    alice.open(url)
    alice.wait_presence(["alice"])
    alice.join("lobby")
    alice.wait_line("system", "alice joined #lobby")

    # The server stops as on Ctrl-C (clients get 1001): the page says it is offline.
    assert demo.stop() == 0
    alice.wait_status("offline")
    assert "retrying" in alice.status()[1]
    alice.wait_line(
        "system", "Connection lost (code 1001)" if mode == "plain" else "Connection lost ("
    )

    # It comes back on the same port: the page reconnects by itself, with its rooms.
    demo.start()
    alice.wait_status("connected")
    alice.wait_line("system", "Reconnected.")
    alice.wait("the second welcome", lambda: len(alice.texts()) > 0 and welcomes(alice) == 2)
    alice.wait_line("system", "alice joined #lobby")
    alice.wait_presence(["alice"])

    # A name in use is refused, and the page asks for another one.
    bob = ChatPage(second, "bob")
    bob.open(url, name="alice")
    bob.wait("the 'already connected' error", lambda: "already connected" in bob.login_error())
    bob.sign_in("bob")
    bob.wait_status("connected")
    alice.wait_presence(["alice", "bob"])

    # The rejoined room works on the new server.
    bob.join("lobby")
    bob.send("still there?", to="#lobby")
    alice.wait_line("room", "still there?", who="#lobby \u00b7 bob")


def test_page_without_socketio_client_uses_a_plain_websocket(
    demo: Demo, browsers: Browsers
) -> None:
    (driver,) = browsers(1)
    # As on a machine without npm: the browser cannot load socket.io-client.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/js/socket.io.min.js"]})
    try:
        alice = ChatPage(driver, "alice")
        alice.open(demo.url)
        alice.wait_line("system", "socket.io-client is not installed")
        alice.wait_status("connected")
        assert alice.transport() == "WebSocket"
        with PlainClient.connect(demo.port, "bob") as bob:
            alice.wait_presence(["alice", "bob"])
            alice.send("still works", to="bob")
            bob.wait("message", "still works", sender="alice")
    finally:
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
