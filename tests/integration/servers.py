"""Server launchers: every way of serving the scenario app, as one registry.

A :class:`Launcher` knows how to start one server (an ASGI server, or an
ikisocket adapter through the CLI) as a subprocess on a free port of
127.0.0.1; :func:`launch` starts it, waits until it accepts connections, and
stops it afterwards. ``conftest.py`` runs the shared scenarios once per
registered launcher, so serving the scenarios with another adapter is one
:func:`register` call here.

The scenario app lives in ``apps.py``; subprocesses import it by name (for
example ``apps:asgi_app``) with this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from websockets.asyncio.client import ClientConnection, connect

__all__ = [
    "LAUNCHERS",
    "LIMIT",
    "Launcher",
    "RunningServer",
    "client",
    "free_port",
    "launch",
    "recv",
    "register",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: No single wait of a client in these tests takes longer than this many seconds.
LIMIT = 10.0
#: Seconds a server has to start accepting connections.
START_TIMEOUT = 30.0
#: Seconds a server has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Launcher:
    """How to run one server.

    Attributes:
        name: The test id (``uvicorn-websockets``, ``hypercorn-trio`` ...).
        argv: Builds the command line from the app's import string and the port.
        app: The default import string of the app to serve.
        prefix: The path the hub's routes are mounted under.
        requires: Modules that must be importable; the launcher is skipped otherwise.
        quirks: Known limitations of the server (keys of :data:`QUIRKS`) that
            the scenarios allow for.
        broken: Why the scenarios are expected to fail on it for now (a known
            bug, reported); they run as non-strict ``xfail``.
    """

    name: str
    argv: Callable[[str, int], list[str]]
    app: str = "apps:asgi_app"
    prefix: str = ""
    requires: tuple[str, ...] = ()
    quirks: frozenset[str] = frozenset()
    broken: str | None = None

    def __post_init__(self) -> None:
        unknown = self.quirks - QUIRKS.keys()
        if unknown:
            raise ValueError(f"unknown quirks: {sorted(unknown)}")

    def has(self, quirk: str) -> bool:
        """Whether the server has this known limitation."""
        assert quirk in QUIRKS, quirk
        return quirk in self.quirks

    def missing(self) -> list[str]:
        """The required modules that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class RunningServer:
    """A started server.

    Attributes:
        launcher: What started it.
        port: The port it listens on (127.0.0.1).
        log: The file its output goes to.
    """

    launcher: Launcher
    port: int
    log: Path

    @property
    def url(self) -> str:
        """The ``ws://`` base URL: append a route path (``/ws/alice``)."""
        return f"ws://127.0.0.1:{self.port}{self.launcher.prefix}"

    @property
    def http_url(self) -> str:
        """The ``http://`` root of the server (not of the mount point)."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(errors="replace")


#: The limitations of some servers that scenarios allow for, and what they mean.
QUIRKS = {
    "no-http-reject": "no websocket.http.response extension: every refusal is a 403",
    "close-code-lost": "the close code a client sends does not reach the app",
    "no-close-reason": "the reason of a server close is not sent to the client",
    "no-empty-messages": "empty messages are not delivered",
    "unbounded-send-buffer": "send never waits for a slow client, so no queue fills up",
}

#: Every launcher, in registration order (the order tests run in).
LAUNCHERS: dict[str, Launcher] = {}


def register(launcher: Launcher) -> Launcher:
    """Add a launcher to the registry.

    Args:
        launcher: The launcher; its name must be new.

    Returns:
        The launcher.
    """
    if launcher.name in LAUNCHERS:
        raise ValueError(f"launcher {launcher.name!r} is already registered")
    LAUNCHERS[launcher.name] = launcher
    return launcher


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def launch(
    launcher: Launcher, app: str | None = None, pythonpath: Sequence[Path] = ()
) -> Iterator[RunningServer]:
    """Start ``launcher``'s server in a subprocess and stop it on exit.

    Args:
        launcher: The server to run.
        app: The import string of the app, instead of the launcher's default.
        pythonpath: More directories to import the app from.

    Yields:
        The running server.

    Raises:
        RuntimeError: The server did not start (its output is in the message).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p
        for p in (*map(str, pythonpath), str(HERE), str(ROOT / "src"), env.get("PYTHONPATH", ""))
        if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryDirectory(prefix=f"ikisocket-{launcher.name}-") as tmp:
        for attempt in range(3):
            port = free_port()
            log = Path(tmp) / f"server-{attempt}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    launcher.argv(app or launcher.app, port),
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                deadline = time.monotonic() + START_TIMEOUT
                while process.poll() is None and time.monotonic() < deadline:
                    if _accepts(port):
                        break
                    time.sleep(0.05)
                else:
                    text = log.read_text(errors="replace")
                    if process.poll() is not None and "in use" in text and attempt < 2:
                        continue  # another process took the port first: try another one
                    raise RuntimeError(
                        f"{launcher.name} did not start on port {port}:\n{text[-4000:]}"
                    )
                yield RunningServer(launcher, port, log)
                return
            finally:
                _stop(process)
        raise RuntimeError(f"{launcher.name} found no free port")  # pragma: no cover


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


# -- the registry --------------------------------------------------------------------------

PY = sys.executable


def _uvicorn(ws: str) -> Callable[[str, int], list[str]]:
    def argv(app: str, port: int) -> list[str]:
        return [
            *(PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
            *("--ws", ws, "--lifespan", "on", "--log-level", "warning", "--no-access-log"),
        ]

    return argv


def _hypercorn(worker: str) -> Callable[[str, int], list[str]]:
    def argv(app: str, port: int) -> list[str]:
        return [
            *(PY, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}"),
            *("--worker-class", worker, "--log-level", "warning"),
        ]

    return argv


def _granian(app: str, port: int) -> list[str]:
    return [
        *(PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
        *("--port", str(port), "--log-level", "warning", app),
    ]


def _cli(adapter: str, *extra: str) -> Callable[[str, int], list[str]]:
    def argv(app: str, port: int) -> list[str]:
        return [
            *(PY, "-m", "ikisocket_adapters", "run", app, "--adapter", adapter),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra),
        ]

    return argv


def _daphne(app: str, port: int) -> list[str]:
    return [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", app]


# ikisocket's own servers, through the CLI (``ikisocket run apps:hub``).
register(
    Launcher("asyncio", _cli("asyncio"), app="apps:hub", requires=("ikisocket_adapters.asyncio",))
)
register(
    Launcher(
        "asyncio-uvloop",
        _cli("asyncio", "--uvloop"),
        app="apps:hub",
        requires=("ikisocket_adapters.asyncio", "uvloop"),
    )
)
register(Launcher("trio", _cli("trio"), app="apps:hub", requires=("ikisocket_adapters.trio",)))
register(Launcher("anyio", _cli("anyio"), app="apps:hub", requires=("ikisocket_adapters.anyio",)))

# ASGI servers running ``apps:asgi_app``.
register(Launcher("uvicorn-websockets", _uvicorn("websockets"), requires=("uvicorn", "websockets")))
register(
    Launcher(
        "uvicorn-websockets-sansio",  # what uvicorn's --ws auto picks
        _uvicorn("websockets-sansio"),
        requires=("uvicorn", "websockets"),
    )
)
register(
    Launcher(
        "uvicorn-wsproto",
        _uvicorn("wsproto"),
        requires=("uvicorn", "wsproto"),
        quirks=frozenset({"unbounded-send-buffer"}),
    )
)
register(
    Launcher(
        "hypercorn-asyncio",
        _hypercorn("asyncio"),
        requires=("hypercorn",),
        quirks=frozenset({"close-code-lost"}),
    )
)
register(
    Launcher(
        "hypercorn-trio",
        _hypercorn("trio"),
        requires=("hypercorn", "trio"),
        quirks=frozenset({"close-code-lost"}),
    )
)
register(
    Launcher(
        "starlette-mount",
        _uvicorn("websockets"),
        app="apps:starlette_app",
        prefix="/rt",
        requires=("uvicorn", "starlette"),
    )
)
register(
    Launcher(
        "daphne",
        _daphne,
        requires=("daphne",),
        quirks=frozenset(
            {"no-http-reject", "no-close-reason", "no-empty-messages", "unbounded-send-buffer"}
        ),
    )
)
register(Launcher("granian", _granian, requires=("granian",)))


@asynccontextmanager
async def client(
    server: RunningServer, path: str, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A connected ``websockets`` client for ``path`` below the server's mount point."""
    async with connect(server.url + path, open_timeout=LIMIT, close_timeout=2, **options) as ws:
        yield ws


async def recv(ws: ClientConnection) -> str | bytes:
    """The next message, within :data:`LIMIT` seconds."""
    with anyio.fail_after(LIMIT):
        return await ws.recv()
