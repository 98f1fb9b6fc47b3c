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

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from websockets.sync.client import ClientConnection

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "chat"
ARTIFACTS = ROOT / "artifacts"
#: Every wait in these tests is bounded by this many seconds.
WAIT = 10.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,760",
)


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs the browser tests to run: {reason}")
    pytest.skip(reason)


def _find(*candidates: str) -> str | None:
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    """The chat demo in a subprocess: ``python -m ikisocket_adapters demo --port PORT``.

    Args:
        port: The port to serve on (kept across restarts).
        log_path: Where the server's output goes.
        adapter: The CLI's ``--adapter``.
    """

    def __init__(self, port: int, log_path: Path, adapter: str = "asyncio") -> None:
        self.port = port
        self.adapter = adapter
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start the server and wait (bounded) until it prints its address and serves the page."""
        assert self.proc is None
        offset = len(self.log())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "ikisocket_adapters", "demo"),
                    *("--adapter", self.adapter, "--port", str(self.port)),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        announced = f"ikisocket demo: open http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if announced in self.log()[offset:] and self._serves_page():
                return
            time.sleep(0.05)
        output = self.log()
        self.stop()
        pytest.fail(f"the demo did not start within {WAIT} s:\n{output}")

    def _serves_page(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> int | None:
        """Stop it as Ctrl-C would (SIGTERM); kill it if it does not exit within the bound.

        Returns:
            Its exit status (``None`` if it was not running).
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)
                pytest.fail(f"the demo ignored SIGTERM for {WAIT} s:\n{self.log()}")
        return proc.returncode


@pytest.fixture(scope="session")
def socketio_client() -> Path:
    """socket.io-client's browser build, installed from npm as ``make demo`` does."""
    script = CHAT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    if not script.is_file():
        npm = shutil.which("npm")
        if npm is None:
            _missing("npm is needed to install socket.io-client for the chat page")
        assert npm is not None
        done = subprocess.run(
            [npm, "install", "--prefix", str(CHAT), "--no-audit", "--no-fund", "--silent"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not script.is_file():
            _missing(f"npm install failed: {done.stderr[-500:]}")
    return script


@pytest.fixture
def demo(request: pytest.FixtureRequest, tmp_path: Path, socketio_client: Path) -> Iterator[Demo]:
    """The chat demo, started on a free port (on asyncio, or the adapter parametrized)."""
    adapter = str(getattr(request, "param", "asyncio"))
    server = Demo(free_port(), tmp_path / "demo.log", adapter)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browsers() -> Iterator[Callable[[int], list[WebDriver]]]:
    """Hands out up to three headless Chromium windows, shared by a module's tests."""
    try:
        from selenium import webdriver  # noqa: PLC0415
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        _missing("Chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
    assert chromium is not None
    assert driver_path is not None

    made: list[WebDriver] = []
    profiles: list[tempfile.TemporaryDirectory[str]] = []

    def make() -> WebDriver:
        profile = tempfile.TemporaryDirectory(prefix="ikisocket-chromium-")
        profiles.append(profile)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile.name}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        made.append(driver)
        return driver

    def get(count: int) -> list[WebDriver]:
        while len(made) < count:
            make()
        for driver in made[:count]:
            driver.get("about:blank")  # drop the previous test's page and its socket
        return made[:count]

    try:
        yield get
    finally:
        for driver in made:
            driver.quit()
        for profile in profiles:
            profile.cleanup()


pytestmark = pytest.mark.e2e

Browsers = Callable[[int], "list[WebDriver]"]

# Read what the page shows (the DOM), in one round trip per question.
_LINES = """
return [...document.querySelectorAll('#log li')].map(li => ({
    kind: li.className, text: li.querySelector('.text').textContent,
    who: (li.querySelector('.who') || {textContent: ''}).textContent,
}));
"""
_PRESENCE = "return [...document.querySelectorAll('#presence li')].map(li => li.textContent);"
_ROOMS = """
return Object.fromEntries([...document.querySelectorAll('#rooms li')].map(
    li => [li.dataset.room, li.querySelector('.members').textContent]));
"""


class ChatPage:
    """One person's browser window on the demo page."""

    def __init__(self, driver: WebDriver, name: str) -> None:
        self.driver = driver
        self.name = name

    # -- waiting ---------------------------------------------------------------------------

    def wait(self, what: str, condition: Callable[[], Any]) -> Any:
        """Wait (at most ``WAIT`` seconds) until ``condition()`` is truthy; return it."""
        from selenium.common.exceptions import TimeoutException  # noqa: PLC0415
        from selenium.webdriver.support.wait import WebDriverWait  # noqa: PLC0415

        try:
            return WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(
                lambda _: condition()
            )
        except TimeoutException:
            pytest.fail(
                f"{self.name}'s page: {what} did not happen within {WAIT} s;"
                f" status={self.status()!r} presence={self.presence()} log={self.lines()}"
            )

    def wait_line(self, kind: str, text: str, who: str | None = None) -> None:
        """Wait until the log shows a line of ``kind`` containing ``text`` (from ``who``)."""
        self.wait(
            f"a {kind} line {text!r}" + (f" from {who!r}" if who else ""),
            lambda: self.has_line(kind, text, who),
        )

    def wait_presence(self, users: list[str]) -> None:
        """Wait until the "Online" list shows exactly ``users``."""
        self.wait(f"presence {users}", lambda: self.presence() == users)

    def wait_status(self, state: str) -> None:
        """Wait until the connection badge is in ``state``."""
        self.wait(f"status {state!r}", lambda: self.status()[0] == state)

    # -- reading ---------------------------------------------------------------------------

    def lines(self) -> list[dict[str, str]]:
        """The message log: each line's classes, sender label and text."""
        result: list[dict[str, str]] = self.driver.execute_script(_LINES)
        return result

    def has_line(self, kind: str, text: str, who: str | None = None) -> bool:
        return any(
            kind in line["kind"].split()
            and text in line["text"]
            and (who is None or line["who"] == who)
            for line in self.lines()
        )

    def texts(self) -> list[str]:
        return [line["text"] for line in self.lines()]

    def presence(self) -> list[str]:
        result: list[str] = self.driver.execute_script(_PRESENCE)
        return result

    def rooms(self) -> dict[str, str]:
        result: dict[str, str] = self.driver.execute_script(_ROOMS)
        return result

    def status(self) -> tuple[str, str]:
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        badge = self.driver.find_element(By.ID, "status")
        return str(badge.get_attribute("data-state")), badge.text

    def transport(self) -> str:
        """How the page talks to the server ("Socket.IO \u00b7 websocket", "WebSocket")."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        return str(self.driver.find_element(By.ID, "transport").text)

    def transports(self) -> list[str]:
        """Every transport the page has been on since it was loaded, in order."""
        history: str | None = self.driver.execute_script(
            "return document.getElementById('transport').dataset.history;"
        )
        return history.split("|") if history else []

    def login_error(self) -> str:
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        login = self.driver.find_element(By.ID, "login")
        if not login.is_displayed():
            return ""
        return str(self.driver.find_element(By.ID, "login-error").text)

    # -- acting ----------------------------------------------------------------------------

    def open(self, url: str, name: str | None = None) -> None:
        """Load the page and sign in with the name form."""
        self.driver.get(url)
        self.sign_in(name or self.name)

    def sign_in(self, name: str) -> None:
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        field = self.driver.find_element(By.ID, "name")
        self.wait("the name form", field.is_displayed)
        field.clear()
        field.send_keys(name)
        self.driver.find_element(By.ID, "enter").click()

    def send(self, text: str, to: str = "") -> None:
        """Pick a recipient in the "to" menu (``""`` everyone, a user, ``#room``) and send."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415
        from selenium.webdriver.support.select import Select  # noqa: PLC0415

        menu = Select(self.driver.find_element(By.ID, "to"))
        self.wait(
            f"the recipient {to!r} in the menu",
            lambda: any(o.get_attribute("value") == to for o in menu.options),
        )
        menu.select_by_value(to)
        box = self.driver.find_element(By.ID, "text")
        box.send_keys(text)
        button = self.driver.find_element(By.ID, "send")
        self.wait("the send button to be enabled", button.is_enabled)
        button.click()
        self.wait("the message box to clear", lambda: box.get_attribute("value") == "")

    def join(self, room: str) -> None:
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        self.driver.find_element(By.ID, "room-name").send_keys(room)
        self.driver.find_element(By.ID, "join-room").click()

    def leave_chat(self) -> None:
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        self.driver.find_element(By.ID, "logout").click()


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
    alice.wait("the second welcome", lambda: len(alice.texts()) > 0 and _welcomes(alice) == 2)
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


def _welcomes(page: ChatPage) -> int:
    return sum("Hello user: alice with UUID: " in text for text in page.texts())


class PlainClient:
    """A plain WebSocket user of the chat (the ``websockets`` library), beside the pages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    @contextlib.contextmanager
    def connect(cls, port: int, name: str) -> Iterator[PlainClient]:
        """Sign in as ``name`` on ``/ws/<name>``; close when done."""
        from websockets.sync.client import connect  # noqa: PLC0415

        with connect(f"ws://127.0.0.1:{port}/ws/{name}", open_timeout=WAIT) as ws:
            yield cls(ws)

    def send(self, event: str, data: str, to: str = "") -> None:
        self.ws.send(json.dumps({"to": to, "event": event, "data": data}))

    def wait(self, event: str, data: Any, sender: str | None = None) -> None:
        """Read (at most ``WAIT`` seconds) until a message with ``event`` and ``data`` arrives."""
        deadline = time.monotonic() + WAIT
        while not any(
            m["event"] == event and m["data"] == data and sender in (None, m["from"])
            for m in self.seen
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {event} {data!r} within {WAIT} s; got {self.seen}")
            try:
                self.seen.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                continue


class CuttableProxy:
    """A TCP relay between the browser and the demo: ``cut()`` drops every connection.

    The server sees its clients' transports drop (no close frame, no Socket.IO
    ``DISCONNECT``), as when a network goes away; new connections wait until
    ``resume()``, so what is sent meanwhile can only reach the page by recovery.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.up.wait()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=WAIT)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += (client, upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every relayed connection; hold new ones until ``resume()``."""
        self.up.clear()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def resume(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.listener.close()
        self.resume()
        self.cut()


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
        assert _welcomes(alice) == 1  # the same connection (same UUID), not a new sign-in

        # Still in #lobby on the server, and Bob was never told Alice left.
        alice.send("back again", to="#lobby")
        bob.wait("message", "back again", sender="alice")
        assert not any(m["event"] == "system" and "left" in m["data"] for m in bob.seen)
