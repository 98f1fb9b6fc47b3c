"""Cross-node broadcast through Redis: ikisocket's backplane next to python-socketio's.

One run, on one throwaway ``redis-server``, four configurations under the same
load: ikisocket (the asyncio adapter on uvloop with a ``RedisBackplane``) on 1
node and on 3 nodes, and python-socketio (``AsyncServer`` with an
``AsyncRedisManager``, under uvicorn) on 1 node and on 3 nodes. Each node is a
process of its own.

The load: ``--receivers`` WebSocket clients spread evenly over the nodes, and
one sender on the first node that writes ``--messages`` small messages back to
back; each node broadcasts each message to every client but the sender (through
Redis to the other nodes' clients). The clients are ``websockets`` clients in
this process (python-socketio's speak Engine.IO v4 / Socket.IO v5 over
WebSocket, by hand: open, connect, events, pong). Reported, per configuration:

- deliveries/s: receivers x messages / the time from the first send until the
  last receiver had every message;
- p50 / p99 latency of a delivery (send to receive, on the machine's monotonic
  clock, which every process shares), under that burst;
- CPU seconds of the node processes and of redis-server over the burst, and
  deliveries per CPU-second (per core), with the ratio of ikisocket to
  python-socketio for the same number of nodes.

Run ``python bench/backplane.py`` (``--receivers 300 --messages 200`` by
default; it needs ``redis-server``, and ``redis``, ``python-socketio`` and
``uvicorn`` from PyPI); it is not part of ``make test`` or ``make bench``. Results are printed
as Markdown and written to ``bench/results/backplane-*.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/socketio.py (the Socket.IO bench) would shadow python-socketio's package: take this
# script's folder off the path, so that ``import socketio`` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
TICKS = os.sysconf("SC_CLK_TCK")
LIMIT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# -- the nodes ---------------------------------------------------------------------------


def serve_ikisocket(port: int, url: str) -> None:
    """One ikisocket node: broadcast what a client sends to everyone else, on every node."""
    import anyio  # noqa: PLC0415 (a node process imports only what it serves)
    import uvloop  # noqa: PLC0415

    from ikisocket_adapters.asyncio import start_server  # noqa: PLC0415
    from ikisocket_adapters.redis import RedisBackplane  # noqa: PLC0415
    from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket  # noqa: PLC0415

    hub = Hub()

    @hub.websocket("/ws")
    def on_open(kws: Websocket) -> None:
        pass

    @hub.on(EVENT_MESSAGE)
    def fan_out(ep: EventPayload) -> None:
        ep.kws.broadcast(ep.data, except_self=True, kind=ep.kind)

    async def main() -> None:
        backplane = RedisBackplane(hub, url)
        async with anyio.create_task_group() as tg:
            await tg.start(backplane.run)
            while not backplane.connected:
                await anyio.sleep(0.01)
            server = await start_server(
                hub, "127.0.0.1", port, compression=False, ping_interval=None
            )
            async with server:
                print(f"listening on {port}", flush=True)
                await anyio.sleep_forever()

    uvloop.run(main())


def serve_socketio(port: int, url: str) -> None:
    """One python-socketio node: the same broadcast, through its AsyncRedisManager."""
    import socketio  # type: ignore[import-untyped]  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415

    manager = socketio.AsyncRedisManager(url)
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=manager, ping_interval=60, ping_timeout=60
    )

    @sio.on("message")  # type: ignore[untyped-decorator]
    async def fan_out(sid: str, data: Any) -> None:
        await sio.emit("message", data, skip_sid=sid)

    app = socketio.ASGIApp(sio)

    class Announce(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            print(f"listening on {port}", flush=True)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", ws="websockets"
    )
    Announce(config).run()


# -- the clients -------------------------------------------------------------------------


@dataclass
class Config:
    server: str  # "ikisocket" or "python-socketio"
    nodes: int


@dataclass
class Outcome:
    config: Config
    deliveries: int = 0
    expected: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0
    note: str = ""


async def open_client(server: str, port: int) -> Any:
    from websockets.asyncio.client import connect  # noqa: PLC0415

    if server == "ikisocket":
        return await connect(f"ws://127.0.0.1:{port}/ws", compression=None, max_size=None)
    ws = await connect(
        f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
        compression=None,
        max_size=None,
    )
    opened = await ws.recv()
    assert isinstance(opened, str), opened
    assert opened.startswith("0"), opened
    await ws.send("40")
    while not str(await ws.recv()).startswith("40"):
        pass
    return ws


def frame(server: str, payload: str) -> str:
    return payload if server == "ikisocket" else "42" + json.dumps(["message", payload])


async def receive(server: str, ws: Any, count: int, latencies: list[float]) -> int:
    got = 0
    while got < count:
        message = await ws.recv()
        if server != "ikisocket":
            if message == "2":  # Engine.IO ping
                await ws.send("3")
                continue
            if not message.startswith("42"):
                continue
            message = json.loads(message[2:])[1]
        latencies.append(time.monotonic() - float(message.split()[1]))
        got += 1
    return got


def start_node(config: Config, url: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, __file__, "node", config.server, str(port), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if "listening on" in line:
            return proc, port
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{config.server} node did not start (exit {proc.wait()})")


async def run_config(
    config: Config, url: str, redis_pid: int, receivers: int, messages: int
) -> Outcome:
    outcome = Outcome(config, expected=receivers * messages)
    started = [start_node(config, url) for _ in range(config.nodes)]
    try:
        ports = [port for _, port in started]
        clients = [
            await open_client(config.server, ports[n % len(ports)]) for n in range(receivers)
        ]
        sender = await open_client(config.server, ports[0])
        await asyncio.sleep(1.0)  # every node subscribed and settled
        pids = [proc.pid for proc, _ in started] + [redis_pid]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        tasks = [
            asyncio.ensure_future(receive(config.server, ws, messages, outcome.latencies))
            for ws in clients
        ]
        start = time.monotonic()
        for n in range(messages):
            await sender.send(frame(config.server, f"{n} {time.monotonic()}"))
        _, pending = await asyncio.wait(tasks, timeout=LIMIT)
        outcome.seconds = time.monotonic() - start
        outcome.cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        outcome.deliveries = len(outcome.latencies)
        if pending:
            outcome.note = f"{len(pending)} receivers incomplete after {LIMIT:g} s"
            for task in pending:
                task.cancel()
        for ws in [*clients, sender]:
            await ws.close()
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    return outcome


# -- the report --------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def report(outcomes: list[Outcome], receivers: int, messages: int) -> str:
    lines = [
        f"Cross-node broadcast: {receivers} receivers spread over the nodes, one sender on the "
        f"first node writing {messages} messages back to back; Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| server | nodes | deliveries/s | p50 ms | p99 ms | CPU s (nodes + redis) | "
        "deliveries per CPU-s | per CPU-s vs python-socketio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    per_cpu: dict[tuple[str, int], float] = {}
    for o in outcomes:
        per_cpu[o.config.server, o.config.nodes] = o.deliveries / o.cpu if o.cpu else 0.0
    for o in outcomes:
        rate = o.deliveries / o.seconds if o.seconds else 0.0
        mine = per_cpu[o.config.server, o.config.nodes]
        theirs = per_cpu.get(("python-socketio", o.config.nodes), 0.0)
        ratio = f"{mine / theirs:.1f}x" if theirs and o.config.server == "ikisocket" else ""
        lines.append(
            f"| {o.config.server} | {o.config.nodes} | {rate:,.0f} | "
            f"{statistics.median(o.latencies) * 1000 if o.latencies else 0:.1f} | "
            f"{percentile(o.latencies, 0.99) * 1000:.1f} | {o.cpu:.2f} | {mine:,.0f} | {ratio} |"
        )
    notes = [f"- {o.config.server} x{o.config.nodes}: {o.note}" for o in outcomes if o.note]
    short = [
        f"- {o.config.server} x{o.config.nodes}: {o.deliveries} of {o.expected} delivered"
        for o in outcomes
        if o.deliveries != o.expected
    ]
    return "\n".join(lines + (["", *notes, *short] if notes or short else [])) + "\n"


async def bench(args: argparse.Namespace) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        await asyncio.sleep(0.5)
        outcomes = []
        for server in ("ikisocket", "python-socketio"):
            for nodes in (1, args.nodes):
                config = Config(server, nodes)
                print(f"{server} on {nodes} node(s)...", file=sys.stderr, flush=True)
                outcomes.append(
                    await run_config(config, url, redis.pid, args.receivers, args.messages)
                )
        return report(outcomes, args.receivers, args.messages)
    finally:
        redis.kill()
        redis.wait()


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["node"]:
        server, port, url = argv[1], int(argv[2]), argv[3]
        (serve_ikisocket if server == "ikisocket" else serve_socketio)(port, url)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--receivers", type=int, default=300)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args(argv)
    text = asyncio.run(bench(args))
    print(text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    out = results / f"backplane-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.write_text(text)
    print(f"written to {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
