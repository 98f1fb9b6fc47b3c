"""``examples/selectors_server.py`` on loopback, driven by the ``websockets`` sync client."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "selectors_server.py"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with subprocess.Popen(
        [sys.executable, str(EXAMPLE), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "listening on ws://127.0.0.1:PORT/ws"
            assert line.startswith("listening on ws://127.0.0.1:"), line
            yield line.split()[-1]
            assert proc.poll() is None, "the server died"
        finally:
            proc.terminate()
            _, errors = proc.communicate(timeout=TIMEOUT)
            assert "Traceback" not in errors, errors


def client(url: str, *, deflate: bool = True) -> ClientConnection:
    return connect(
        url,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        compression="deflate" if deflate else None,
    )


def test_echo_and_chat_between_two_clients(url: str) -> None:
    with client(url) as alice, client(url) as bob:
        joined = alice.recv(TIMEOUT)
        assert isinstance(joined, str)
        assert joined.endswith(" joined")
        alice.send("hello")
        assert alice.recv(TIMEOUT) == "echo: hello"
        assert bob.recv(TIMEOUT) == "hello"
        bob.send(b"\x00\x01")
        assert bob.recv(TIMEOUT) == b"echo: \x00\x01"  # binary stays binary
        assert alice.recv(TIMEOUT) == b"\x00\x01"


def test_big_messages_survive_partial_writes(url: str) -> None:
    big = "x" * 1_000_000  # five of them: more than a socket buffer takes at once
    with client(url, deflate=False) as alice, client(url, deflate=False) as bob:
        alice.recv(TIMEOUT)  # bob joined
        for _ in range(5):
            alice.send(big)
        for _ in range(5):
            assert bob.recv(TIMEOUT) == big
            assert alice.recv(TIMEOUT) == "echo: " + big


def test_ping_and_closing_handshake(url: str) -> None:
    with client(url) as ws:
        assert ws.ping(b"hb").wait(TIMEOUT)
        ws.close(4000, "done")
    received = ws.protocol.close_rcvd
    assert received is not None
    assert received.code == 4000  # the server echoed our close frame


def test_plain_http_to_the_websocket_route_is_426(url: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the server closes after answering
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 426 ")
    assert b"upgrade: websocket" in answer.lower()


def test_a_client_that_does_not_read_does_not_stall_the_others(url: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    with sock:
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", port))
        stalled = WSConnection(ConnectionType.CLIENT)
        sock.sendall(stalled.send(Request(host="localhost", target="/ws")))
        stalled.receive_data(sock.recv(1024))
        assert any(isinstance(e, AcceptConnection) for e in stalled.events())
        with client(url, deflate=False) as alice:
            big = "y" * 1_000_000
            for _ in range(8):  # far more than the stalled socket and max_queue hold
                alice.send(big)
                assert alice.recv(TIMEOUT) == "echo: " + big
