"""What the chat page's browser tests share: the demo in a subprocess, headless Chromium,
a person's page, a plain WebSocket user, and a TCP relay the tests can cut.

Not a test module: ``test_chat_page.py`` and ``test_chat_socketio.py`` import its
classes and load it as a pytest plugin for its fixtures (``demo``, ``browsers``).
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
CHAT_CLIENT = CHAT / "node_modules/socket.io-client/dist/socket.io.min.js"
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
                # The demo may load its installed copy (a wheel, not this tree): point it at
                # the client the tests installed here.
                env={**os.environ, "IKISOCKET_CHAT_CLIENT": str(CHAT_CLIENT)},
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


def welcomes(page: ChatPage) -> int:
    """How many times Alice's page was greeted (once per new connection)."""
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
