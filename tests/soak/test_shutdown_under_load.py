"""SIGTERM while 1,000 clients chat: everyone is told, nothing runs late, the exit is clean.

The server is ``server.py`` (the load app of ``load_app.py``) in a subprocess
on each adapter and behind uvicorn. A thousand ``websockets`` clients join
rooms of ten and each says something about once a second, so messages are
being received, broadcast and written when the signal comes. Then:

* every client receives a close frame with 1001 (behind uvicorn: 1012,
  uvicorn's own code, sent before the application hears of the shutdown);
* every connection that got ``connect`` got exactly one terminal event, and
  no listener ran for a connection after it (the load app's books);
* the hub's registry is empty, and the process exits 0 within
  ``close_timeout`` (plus the interpreter's exit).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clients import LIMIT, Tally, chat, open_chatter
from websockets.asyncio.client import ClientConnection

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLIENTS = 1000
#: The server's ``close_timeout`` (the default) bounds the shutdown.
CLOSE_TIMEOUT = 10.0
#: What an exiting interpreter may add to it.
EXIT_SLACK = 5.0


@contextmanager
def server(adapter: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``server.py`` on ``adapter``; yields the process and its port."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "server.py"), "--adapter", adapter],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening "), (line, proc.stderr and proc.stderr.read())
        yield proc, int(line.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(LIMIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The server's ``report`` line (after it exited)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("report "):
            return dict(json.loads(line.removeprefix("report ")))
    assert proc.stderr is not None
    raise AssertionError(f"no report; stderr:\n{proc.stderr.read()[-4000:]}")


async def chat_then_sigterm(port: int, proc: subprocess.Popen[str]) -> tuple[Tally, float]:
    """Connect everyone, let them chat, send SIGTERM; the tally and the seconds to exit."""
    tally = Tally()
    url = f"ws://127.0.0.1:{port}/"
    connecting = asyncio.Semaphore(64)
    sockets: list[ClientConnection] = []

    async def client(index: int) -> None:
        rng = random.Random(index)
        async with connecting:
            ws = await open_chatter(url, f"room{index % (CLIENTS // 10)}", tally, timeout=60.0)
        sockets.append(ws)
        await chat(ws, tally, rng, interval=1.0)

    clients = [asyncio.ensure_future(client(i)) for i in range(CLIENTS)]
    try:
        deadline = time.monotonic() + 120.0
        while tally.opened < CLIENTS:
            failed = [c for c in clients if c.done() and c.exception() is not None]
            assert not failed, failed[0].exception()
            assert time.monotonic() < deadline, f"only {tally.opened} clients connected"
            await asyncio.sleep(0.05)
        # Chatting: messages are flowing in every room when the signal comes.
        received = tally.received
        while tally.received < received + 2 * CLIENTS:
            assert time.monotonic() < deadline + LIMIT, "the chat does not flow"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*clients), CLOSE_TIMEOUT + LIMIT)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait, CLOSE_TIMEOUT + LIMIT)
        return tally, time.monotonic() - signalled
    finally:
        # A failure leaves no client behind (their sockets would warn in a later test).
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        for ws in sockets:
            ws.transport.abort()


@pytest.mark.parametrize(
    ("adapter", "code"),
    [
        ("asyncio", 1001),
        ("uvloop", 1001),
        ("trio", 1001),
        ("anyio-asyncio", 1001),
        ("uvicorn", 1012),
    ],
)
def test_sigterm_while_a_thousand_clients_chat(adapter: str, code: int) -> None:
    with server(adapter) as (proc, port):
        tally, took = asyncio.run(chat_then_sigterm(port, proc))
        assert proc.returncode == 0
        books = report(proc)
    assert tally.codes == {code: CLIENTS}
    assert took < CLOSE_TIMEOUT + EXIT_SLACK
    assert books["registry"] == 0
    assert books["connects"] == CLIENTS
    assert books["terminals"] == CLIENTS
    assert (books.get("late", 0), books.get("double", 0)) == (0, 0), json.dumps(books)
