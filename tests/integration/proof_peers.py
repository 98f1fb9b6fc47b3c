"""The test side of the proofs: server processes, their records, and peers that misbehave.

* :func:`serve` starts ``proof_app.py`` in a subprocess and stops it afterwards;
  :attr:`Served.pid` is what the memory proof reads ``VmHWM`` of.
* :func:`records` reads back the hub events the server process recorded.
* :class:`RawPeer` is a WebSocket client on a raw socket (wsproto for the
  framing) that does what ``websockets`` never does: it stops reading, never
  answers pings, and writes hand-made frames.
* :func:`http_status` sends one hand-made HTTP request and reads the status.

Every wait is bounded by :data:`LIMIT` (or :data:`START_TIMEOUT`).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import LIMIT, ROOT, START_TIMEOUT, STOP_TIMEOUT
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, RejectConnection, Request
from wsproto.extensions import PerMessageDeflate

__all__ = [
    "LIMIT",
    "RawPeer",
    "Record",
    "Served",
    "http_status",
    "missing",
    "records",
    "require",
    "serve",
    "vm_hwm",
]

HERE = Path(__file__).resolve().parent

#: One hub event as the server recorded it: ``(user, event, detail)``.
Record = tuple[str, str, str]


def missing(what: str) -> None:
    """Something a proof needs is missing: skip, but under CI (``CI=true``) fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what}: CI must run this proof")
    pytest.skip(what)


def require(module: str) -> None:
    """Skip without ``module``; under CI fail instead, since CI installs it."""
    if importlib.util.find_spec(module) is None:
        missing(f"{module} is not installed")


@dataclass(frozen=True)
class Served:
    """A running ``proof_app.py`` server process.

    Attributes:
        driver: What serves the hub (``asyncio``, ``trio``, ``uvicorn`` ...).
        pid: The server's process id.
        port: The port it listens on, on 127.0.0.1.
        events: The file its hub events go to.
        log: The file its output goes to.
    """

    driver: str
    pid: int
    port: int
    events: Path
    log: Path

    def url(self, path: str) -> str:
        """The ``ws://`` URL of ``path``."""
        return f"ws://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def serve(driver: str, config: str, directory: Path) -> Iterator[Served]:
    """Run ``proof_app.py`` with ``driver`` and ``config`` until the block ends.

    Args:
        driver: One of ``proof_app.DRIVERS``.
        config: One of ``proof_app.CONFIGS``.
        directory: Where the events, ready and log files go.

    Yields:
        The running server.

    Raises:
        RuntimeError: It did not start (its output is in the message).
    """
    stem = directory / f"{driver}-{config}"
    events, ready, log = (stem.with_suffix(s) for s in (".events", ".ready", ".log"))
    for path in (events, ready):
        path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, str(HERE / "proof_app.py"), "--driver", driver, "--config", config]
    argv += ["--events", str(events), "--ready", str(ready)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{driver} ({config}) did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.02)
        port = int(ready.read_text(encoding="ascii"))
        yield Served(driver, process.pid, port, events, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)


def records(
    served: Served,
    users: tuple[str, ...],
    until: Callable[[list[Record]], bool],
) -> list[Record]:
    """The hub events of ``users``, in order, once ``until`` holds for them.

    Args:
        served: The server.
        users: Whose events to return.
        until: Waits (at most :data:`LIMIT` s) until this holds for the events.

    Returns:
        The events.

    Raises:
        AssertionError: ``until`` did not come to hold.
    """
    deadline = time.monotonic() + LIMIT
    while True:
        text = served.events.read_text(encoding="utf-8") if served.events.exists() else ""
        found: list[Record] = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # being written
            item = json.loads(line)
            if item["user"] in users:
                found.append((item["user"], item["event"], item["detail"]))
        if until(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{served.driver}: hub events of {users} stopped at {found}")
        time.sleep(0.01)


def vm_hwm(pid: int) -> int:
    """The peak resident set size of process ``pid`` so far, in bytes (``VmHWM``)."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _read_head(sock: socket.socket) -> bytes:
    """Read an HTTP response head (and whatever followed it in the same reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def http_status(port: int, path: str, headers: dict[str, str], *, upgrade: bool) -> int:
    """Send one ``GET`` (an upgrade request when ``upgrade``); the response's status.

    Args:
        port: The server's port on 127.0.0.1.
        path: The request target.
        headers: Extra headers.
        upgrade: Ask for a WebSocket upgrade.

    Returns:
        The HTTP status.
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}"]
        lines += ["Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=LIMIT) as sock:
        sock.sendall(request)
        head = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 "), head[:200]
    return int(head.split(b" ", 2)[1])


class RawPeer:
    """A WebSocket client on a raw socket that reads only when told to and never pongs.

    Its receive buffer is tiny, so a server writing to it soon has to buffer
    on its own side.

    Args:
        port: The server's port on 127.0.0.1.
        path: The request target.
        compression: Offer permessage-deflate (RFC 7692).
    """

    def __init__(self, port: int, path: str, *, compression: bool = False) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(LIMIT)
        sock.connect(("127.0.0.1", port))
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []
        self.extensions: list[str] = []
        offer = [PerMessageDeflate()] if compression else []
        sock.sendall(self.ws.send(Request(host="127.0.0.1", target=path, extensions=offer)))
        while True:
            data = sock.recv(65536)
            assert data, "the server closed the connection during the handshake"
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.extensions = [e.name for e in event.extensions]
                    return
                assert not isinstance(event, RejectConnection), event
                self.events.append(event)

    def send(self, event: Event) -> None:
        """Frame ``event`` with wsproto and write it."""
        self.sock.sendall(self.ws.send(event))

    def read_until_closed(self, timeout: float = LIMIT) -> CloseConnection | None:
        """Read (never answering pings) until the server closes; its close frame.

        Args:
            timeout: How long to wait for the end of the stream.

        Returns:
            The server's close frame, or ``None`` if the connection is still
            open after ``timeout`` seconds or ended without one.
        """
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                data = b""
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
            if not data:
                break
        return next((e for e in self.events if isinstance(e, CloseConnection)), None)

    def abort(self) -> None:
        """Drop the connection without a close frame."""
        self.sock.close()
