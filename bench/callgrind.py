"""Count a server's instructions per message under valgrind: a figure load leaves alone.

CPU time per message (``run.py``) moves by 20-50 % between runs on a shared machine;
the number of instructions a server executes for the same messages does not. This
runs one benchmark server under ``valgrind --tool=callgrind`` (user space only: the
kernel's share, the same system calls for the same messages, is not counted), opens
its connections and warms it up, zeroes the counters (``callgrind_control -z``),
sends exactly N messages one at a time, dumps the counters and prints the
instructions per message. The load is strictly one message at a time, so nothing
depends on timing::

    python bench/callgrind.py uvicorn_raw_asgi.py ikisocket_uvicorn.py --mode echo -n 1000
    python bench/callgrind.py uvicorn_raw_asgi.py ikisocket_uvicorn.py --mode broadcast -n 40
    python bench/callgrind.py ikisocket_uvicorn.py --src bench/results/baseline-0e46c28/src

``echo``: one client, N round trips of 32 B. ``broadcast``: 100 receivers and a
sender, N messages of 32 B each relayed to every receiver before the next (fan-out
lockstep); the figure is per delivery. ``connect``: N connections one after the
other, each opened (TCP, HTTP upgrade) and closed by the client with a close
frame; the figure is per connection. ``--loop asyncio`` compares servers on the
default loop (aiohttp's and ours, issue 11's connection target)::

    python bench/callgrind.py aiohttp_server.py ikisocket_asyncio.py --mode connect --loop asyncio

``--loop trio`` runs ``ikisocket_trio.py`` (a server of one loop is given that one)::

    python bench/callgrind.py ikisocket_trio.py --mode connect --loop trio

``--clients K`` makes ``echo`` K clients that each send a message per round and then read
every reply (the figure stays per round trip): what batching several sockets' input per
wake-up saves shows there. ``--gap SECONDS`` has the client wait before each message (each
round), so the server is idle whenever input arrives and every round takes the same path
through its event loop: without it, whether trio finds the next message already waiting
depends on the machine's load, and its count moves by a fifth between runs::

    python bench/callgrind.py ikisocket_trio.py --loop trio -n 20 --clients 64 --gap 0.02

``ackecho`` counts a Socket.IO event echoed through its ack (``42<id>["echo","a"*32]``
answered by ``43<id>[...]``, over the WebSocket transport): the scripts are then the rows of
``bench/socketio.py``, run as its ``--serve`` runs them (python-socketio on uvicorn too)::

    python bench/callgrind.py ikisocket/uvloop python-socketio --mode ackecho -n 1000

The dumps stay in ``bench/results/callgrind/``
for ``callgrind_annotate``. Needs valgrind and ``callgrind_control`` on ``PATH`` and
the ``websockets`` client; about 20 s per server for the defaults (valgrind runs
Python some 50 times slower).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "callgrind"


@dataclass(frozen=True)
class Load:
    """The clients' side of a count: how many talk, and how they pace themselves."""

    #: broadcast: the connections every message is relayed to.
    receivers: int = 100
    #: echo: the clients that each send a message per round, then read every reply.
    clients: int = 1
    #: Seconds the client waits before each message (each round): the server is then idle.
    gap: float = 0.0
    #: echo and broadcast: characters per (ASCII text) message.
    size: int = 32

    def per(self, mode: str) -> int:
        """Operations counted per round of ``mode``: deliveries, round trips, or one."""
        return {"broadcast": self.receivers, "echo": self.clients}.get(mode, 1)


async def drive(port: int, pid: int, mode: str, n: int, load: Load, *, dump: str) -> None:
    """Warm the server up, then count exactly ``n`` messages between a zero and a dump."""
    url = f"ws://127.0.0.1:{port}/ws"
    if mode == "ackecho":
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"

    async def client() -> ClientConnection:
        return await connect(url, compression=None, ping_interval=None, open_timeout=300)

    def control(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)

    if mode == "connect":
        clients = []

        async def rounds(k: int) -> None:
            for _ in range(k):
                ws = await client()
                await ws.close()

    elif mode == "ackecho":
        sio = await client()
        clients = [sio]
        assert str(await sio.recv()).startswith("0{")  # Engine.IO open
        await sio.send("40")
        assert str(await sio.recv()).startswith("40")  # Socket.IO connect

        async def rounds(k: int) -> None:
            for i in range(k):
                await asyncio.sleep(load.gap)  # (0: the client only yields to its own loop)
                await sio.send(f'42{i}["echo","{"a" * 32}"]')
                while True:
                    reply = str(await sio.recv())
                    if reply == "2":  # the server's Engine.IO ping
                        await sio.send("3")
                        continue
                    assert reply.startswith(f"43{i}["), reply
                    break

    elif mode == "echo":
        clients = [await client() for _ in range(load.clients)]
        text = "a" * load.size

        async def rounds(k: int) -> None:
            for _ in range(k):
                await asyncio.sleep(load.gap)  # (0: the client only yields to its own loop)
                for ws in clients:
                    await ws.send(text)
                await asyncio.gather(*(ws.recv() for ws in clients))

    else:
        peers = [await client() for _ in range(load.receivers)]
        sender = await client()
        text = "b" * load.size
        clients = [*peers, sender]

        async def rounds(k: int) -> None:
            for _ in range(k):
                await asyncio.sleep(load.gap)  # (0: the client only yields to its own loop)
                await sender.send(text)
                await asyncio.gather(*(p.recv() for p in peers))

    await asyncio.sleep(0.5)
    await rounds(20)
    control("-z")
    await rounds(n)
    control("-d", dump)
    for ws in clients:
        await ws.close()


def total(path: Path) -> int:
    """The ``summary:`` line of a callgrind dump: instructions counted."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def measure(script: str, src: Path, mode: str, n: int, load: Load, *, loop: str) -> float:
    """Instructions per message (per delivery, per connection) of one server."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = Path(script).stem
    out = RESULTS / f"{name}.{mode}.%p.out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), str(BENCH / "servers")]))
    server_command = [
        str(BENCH / "servers" / script),
        "--mode",
        "echo" if mode == "connect" else mode,
        "--loop",
        loop,
    ]
    if mode == "ackecho":  # a row of bench/socketio.py
        name = script.replace("/", "-")
        out = RESULTS / f"{name}.{mode}.%p.out"
        server_command = [str(BENCH / "socketio.py"), "--serve", script]
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        *server_command,
    ]
    log = (RESULTS / f"{name}.{mode}.log").open("w")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{script} did not start (see {log.name})")
        started = time.perf_counter()
        port = int(line.split()[1])
        asyncio.run(drive(port, server.pid, mode, n, load, dump="measured"))
        dumps = sorted(RESULTS.glob(f"{name}.{mode}.{server.pid}.out.*"))
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        per = total(dumps[-1]) / (n * load.per(mode))
        print(f"  ({script}: {time.perf_counter() - started:.0f} s, dump {dumps[-1]})")
        return per
    finally:
        server.kill()
        server.wait()
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scripts", nargs="+", help="server scripts in bench/servers/")
    p.add_argument("--mode", choices=("echo", "broadcast", "connect", "ackecho"), default="echo")
    p.add_argument("--loop", choices=("uvloop", "asyncio", "trio", "trio-tasks"), default="uvloop")
    p.add_argument(
        "-n", type=int, default=None, help="messages (echo 1000, broadcast 40, connect 200)"
    )
    p.add_argument("--receivers", type=int, default=100)
    p.add_argument(
        "--clients",
        type=int,
        default=1,
        help="echo: clients that each send a message per round, then read every reply",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds the client waits before each message (the server is then always idle)",
    )
    p.add_argument("--size", type=int, default=32, help="echo, broadcast: bytes per message")
    p.add_argument("--src", type=Path, default=BENCH.parent / "src", help="ikisocket's src/")
    args = p.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    n = args.n or {"echo": 1000, "broadcast": 40, "connect": 200, "ackecho": 1000}[args.mode]
    unit = {
        "echo": "round trip",
        "broadcast": "delivery",
        "connect": "connection",
        "ackecho": "acked event",
    }[args.mode]
    src = args.src.resolve()
    load = Load(receivers=args.receivers, clients=args.clients, gap=args.gap, size=args.size)
    results = [(s, measure(s, src, args.mode, n, load, loop=args.loop)) for s in args.scripts]
    first = results[0][1]
    for script, per in results:
        print(f"{script:28s} {per:10,.0f} instructions per {unit}  ({per / first:.3f}x the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
