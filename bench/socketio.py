"""Socket.IO beside python-socketio: event echo with ack, and room fan-out.

One command, three servers, one load generator, interleaved repetitions::

    python bench/socketio.py                 # 3 reps, about 2 minutes on 2 cores
    python bench/socketio.py --reps 1 --duration 0.5

Servers (each its own process on 127.0.0.1, WebSocket transport only, the same
Engine.IO ping settings: ``pingInterval`` 25 s, ``pingTimeout`` 20 s):

* ``ikisocket/uvloop``: ``hub.socketio()`` on ``ikisocket_adapters.asyncio`` on uvloop.
* ``ikisocket/trio``: the same hub on ``ikisocket_adapters.trio``.
* ``python-socketio``: ``socketio.AsyncServer(async_mode="asgi")`` in an
  ``ASGIApp`` on uvicorn (uvloop), its recommended deployment.

Each serves three client events: ``echo`` (the argument answers the ack),
``join`` (the sender joins the room its argument names; acked) and ``fan``
(the argument is re-emitted as ``fan`` to the room ``r``).

The load generator (this file with ``--generate``, one process for the whole
run) speaks Engine.IO v4 / Socket.IO v5 text packets over picows WebSocket
clients on uvloop: a few bytes of framing by hand, no client library, the same
for every server.

* ``echo C``: C clients each emit ``42<id>["echo","x"*32]`` and send the next
  one when its ack ``43<id>[...]`` arrives, for ``--duration`` seconds after a
  warm-up. Reports acks/s.
* ``fan-out N``: N receivers join the room, one more client (not in it) emits
  K ``fan`` events back to back; the server re-emits each to the N. Reports
  deliveries/s (N x K over the time until the last receiver had all K).

Server CPU per op comes from ``/proc/<pid>/task/*/schedstat`` over the
measured window (``bench/loadgen.py``'s helpers). Tables go to stdout and to
``bench/results/socketio-<time>.md`` with a JSON dump of every repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file is named like the python-socketio package: keep its folder off the front of the
# path so that ``import socketio`` finds the package, and reach loadgen and _common at the end.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path += [str(BENCH), str(BENCH / "servers")]

#: Engine.IO ping settings every server runs with (python-socketio's defaults too).
PING_INTERVAL = 25.0
PING_TIMEOUT = 20.0
ROOM = "r"
SIZE = 32
SERVERS = ("ikisocket/uvloop", "ikisocket/trio", "python-socketio")
REFERENCE = "python-socketio"
#: (receivers, burst) per fan-out cell.
FANOUT = ((100, 200), (1000, 50))
ECHO = (1, 64)


# --------------------------------------------------------------------------- servers


def serve_ours(kind: str) -> None:
    """``hub.socketio()`` on the asyncio adapter (uvloop) or on trio."""
    from _common import HOST, OURS, announce, raise_fd_limit  # noqa: PLC0415

    from ikisocket_core import EventPayload, Hub  # noqa: PLC0415

    hub = Hub()
    hub.socketio(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)

    @hub.on("echo")
    def echo(ep: EventPayload) -> Any:
        return ep.args[0]

    @hub.on("join")
    def join(ep: EventPayload) -> bool:
        ep.kws.join(ep.args[0])
        return True

    @hub.on("fan")
    def fan(ep: EventPayload) -> None:
        hub.to(ROOM).emit_event("fan", ep.args[0])

    raise_fd_limit()
    if kind == "trio":
        import trio  # noqa: PLC0415

        from ikisocket_adapters.trio import open_server  # noqa: PLC0415

        async def main_trio() -> None:
            async with open_server(hub, HOST, 0, **OURS) as server:  # type: ignore[arg-type]
                announce(server.port)
                await trio.sleep_forever()

        trio.run(main_trio)
        return
    import uvloop  # noqa: PLC0415

    from ikisocket_adapters.asyncio import start_server  # noqa: PLC0415

    async def main_asyncio() -> None:
        server = await start_server(hub, HOST, 0, **OURS)  # type: ignore[arg-type]
        announce(server.port)
        await asyncio.Event().wait()

    uvloop.run(main_asyncio())


def serve_python_socketio() -> None:
    """python-socketio's ``AsyncServer`` in an ``ASGIApp`` on uvicorn with uvloop."""
    import socketio  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415
    from _common import BACKLOG, HOST, announce, raise_fd_limit  # noqa: PLC0415

    sio = socketio.AsyncServer(
        async_mode="asgi",
        transports=["websocket"],
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
    )

    @sio.on("echo")  # type: ignore[untyped-decorator,misc]
    async def echo(sid: str, data: Any) -> Any:
        return data

    @sio.on("join")  # type: ignore[untyped-decorator,misc]
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    @sio.on("fan")  # type: ignore[untyped-decorator,misc]
    async def fan(sid: str, data: Any) -> None:
        await sio.emit("fan", data, room=ROOM)

    raise_fd_limit()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(BACKLOG)
    config = uvicorn.Config(
        socketio.ASGIApp(sio),
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=BACKLOG,
        ws_per_message_deflate=False,
    )
    announce(sock.getsockname()[1])
    uvicorn.Server(config).run(sockets=[sock])


# --------------------------------------------------------------------------- generator


def generate() -> int:
    """The load generator: one JSON command per stdin line, one JSON result per stdout line."""
    import uvloop  # noqa: PLC0415
    from loadgen import CpuMeter, percentile  # noqa: PLC0415
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect  # noqa: PLC0415

    text = WSMsgType.TEXT

    class Sio(WSListener):  # type: ignore[misc]
        """One Engine.IO session joined to the namespace ``/``; hands events and acks on."""

        def __init__(self) -> None:
            super().__init__()
            self.transport: WSTransport | None = None
            self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.on_ack: Any = None
            self.on_event: Any = None
            self.next_id = 0
            self.sent_at = 0.0
            self.received = 0

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if not self.joined.done():
                self.joined.set_exception(ConnectionError("closed before CONNECT"))

        def send(self, data: bytes) -> None:
            self.transport.send(text, data)  # type: ignore[union-attr]

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is not text:
                if frame.msg_type is WSMsgType.CLOSE:
                    transport.disconnect()
                return
            data = frame.get_payload_as_bytes()
            head = data[:2]
            if head == b"42":
                self.on_event(self, data)
            elif head == b"43":
                self.on_ack(self, data)
            elif data == b"2":
                transport.send(text, b"3")
            elif head == b"0{":
                transport.send(text, b"40")
            elif head == b"40" and not self.joined.done():
                self.joined.set_result(None)
            elif head == b"44" and not self.joined.done():
                self.joined.set_exception(ConnectionError(data.decode()))

    async def connect(url: str, count: int) -> list[Sio]:
        clients: list[Sio] = []
        while len(clients) < count:
            batch = min(100, count - len(clients))
            pairs = await asyncio.gather(
                *(ws_connect(Sio, url, enable_auto_ping=False) for _ in range(batch))
            )
            opened = [listener for _, listener in pairs]
            await asyncio.wait_for(asyncio.gather(*(c.joined for c in opened)), 30)
            clients.extend(opened)
        return clients

    def close(clients: list[Sio]) -> None:
        for c in clients:
            if c.transport is not None:
                c.transport.send_close()
                c.transport.disconnect()

    def ignore(client: Sio, data: bytes) -> None:
        pass

    async def echo(cmd: dict[str, Any], meter: CpuMeter) -> dict[str, Any]:
        clients = await connect(cmd["url"], cmd["clients"])
        payload = "x" * SIZE
        state = {"sending": True, "recording": False, "count": 0, "in_flight": 0, "errors": 0}
        latencies: list[float] = []
        drained = asyncio.get_running_loop().create_future()
        expect = f'["{payload}"]'.encode()

        def fire(client: Sio) -> None:
            client.next_id += 1
            client.sent_at = time.perf_counter()
            client.send(b"42%d" % client.next_id + f'["echo","{payload}"]'.encode())

        def on_ack(client: Sio, data: bytes) -> None:
            now = time.perf_counter()
            if data != b"43%d" % client.next_id + expect:
                state["errors"] += 1
            if state["recording"]:
                latencies.append(now - client.sent_at)
                state["count"] += 1
            if state["sending"]:
                fire(client)
                return
            state["in_flight"] -= 1
            if not state["in_flight"] and not drained.done():
                drained.set_result(None)

        for c in clients:
            c.on_ack = on_ack
            c.on_event = ignore
        state["in_flight"] = len(clients)
        for c in clients:
            fire(c)
        await asyncio.sleep(cmd["warmup"])
        meter.start()
        start = time.perf_counter()
        state["recording"] = True
        await asyncio.sleep(cmd["duration"])
        state["recording"] = False
        elapsed = time.perf_counter() - start
        cpu = meter.stop()
        state["sending"] = False
        try:
            await asyncio.wait_for(drained, 10)
        except asyncio.TimeoutError:
            state["errors"] += state["in_flight"]
        close(clients)
        lat = sorted(latencies)
        ops = state["count"]
        return {
            "ops": ops,
            "elapsed": elapsed,
            "rate": ops / elapsed,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "errors": state["errors"],
            **cpu,
        }

    async def fanout(cmd: dict[str, Any], meter: CpuMeter) -> dict[str, Any]:
        n, k = cmd["receivers"], cmd["burst"]
        receivers = await connect(cmd["url"], n)
        (sender,) = await connect(cmd["url"], 1)
        loop = asyncio.get_running_loop()

        # Join with an ack each, in batches, so that every receiver is in the room first.
        for i in range(0, n, 100):
            batch = receivers[i : i + 100]
            done: list[asyncio.Future[None]] = [loop.create_future() for _ in batch]
            for c, fut in zip(batch, done):
                c.on_ack = lambda client, data, fut=fut: fut.set_result(None)
                c.send(b'420["join","' + ROOM.encode() + b'"]')
            await asyncio.wait_for(asyncio.gather(*done), 30)
        finished: list[float] = []
        total = [0]
        all_done = loop.create_future()
        goal = n * k

        def on_event(client: Sio, data: bytes) -> None:
            client.received += 1
            total[0] += 1
            if client.received == k:
                finished.append(time.perf_counter())
            if total[0] == goal and not all_done.done():
                all_done.set_result(None)

        for c in receivers:
            c.on_event = on_event
        sender.on_event = ignore
        packet = b'42["fan","' + b"b" * SIZE + b'"]'
        await asyncio.sleep(0.1)
        meter.start()
        start = time.perf_counter()
        for _ in range(k):
            sender.send(packet)
        try:
            await asyncio.wait_for(all_done, cmd["timeout"])
            timed_out = False
            end = max(finished)
        except asyncio.TimeoutError:
            timed_out = True
            end = time.perf_counter()
        elapsed = end - start
        cpu = meter.stop()
        delivered = total[0]
        close([*receivers, sender])
        spread = sorted(t - start for t in finished)
        return {
            "ops": delivered,
            "elapsed": elapsed,
            "rate": delivered / elapsed,
            "p50_ms": percentile(spread, 50) * 1e3,
            "p99_ms": percentile(spread, 99) * 1e3,
            "errors": goal - delivered,
            "timed_out": timed_out,
            **cpu,
        }

    async def main() -> int:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return 0
            cmd = json.loads(line)
            meter = CpuMeter(cmd["pid"])
            try:
                run = echo if cmd["load"] == "echo" else fanout
                result = await run(cmd, meter)
            except Exception as exc:  # reported to the runner, which carries on
                result = {"error": f"{type(exc).__name__}: {exc}"}
            await asyncio.sleep(0.2)  # let the server forget the closed clients
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()

    from _common import raise_fd_limit  # noqa: PLC0415

    raise_fd_limit()
    return uvloop.run(main())


# --------------------------------------------------------------------------- runner


class Server:
    """One server process, started once for the whole run."""

    def __init__(self, name: str, logs: Path) -> None:
        self.name = name
        log = open(logs / f"socketio-{name.replace('/', '-')}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", name],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        line = self.proc.stdout.readline().decode()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{name} did not start (see {log.name})")
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}/socket.io/?EIO=4&transport=websocket"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cells(args: argparse.Namespace) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "cell": f"echo {c}",
            "load": "echo",
            "clients": c,
            "warmup": args.warmup,
            "duration": args.duration,
        }
        for c in ECHO
    ]
    out += [
        {"cell": f"fan-out {n}", "load": "fanout", "receivers": n, "burst": k, "timeout": 30}
        for n, k in FANOUT
    ]
    return out


def median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


def table(results: dict[str, dict[str, list[dict[str, Any]]]], servers: list[str]) -> str:
    lines = [
        "| cell | server | ops/s | server CPU per op (us) | ops per server CPU-second "
        "| x python-socketio (ops/s) | x python-socketio (per core) | p50 / p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell, by_server in results.items():
        ref_rate = ref_core = None
        rows = []
        for name in servers:
            recs = [r for r in by_server.get(name, []) if "error" not in r]
            if not recs:
                errs = {r.get("error") for r in by_server.get(name, [])}
                rows.append((name, None, None, None, None, None, None, ", ".join(map(str, errs))))
                continue
            rate = median(recs, "rate")
            cpu_us = median(
                [
                    {"v": r["server_cpu"] * r["elapsed"] / r["ops"] * 1e6}
                    for r in recs
                    if r.get("server_cpu") is not None and r["ops"]
                ],
                "v",
            )
            per_core = 1e6 / cpu_us if cpu_us else None
            if name == REFERENCE:
                ref_rate, ref_core = rate, per_core
            errors = sum(r["errors"] for r in recs)
            rows.append(
                (name, rate, cpu_us, per_core, median(recs, "p50_ms"), median(recs, "p99_ms"),
                 errors, "")
            )
        for name, rate, cpu_us, per_core, p50, p99, errors, err in rows:
            if rate is None:
                lines.append(f"| {cell} | {name} | n/a | | | | | | {err} |")
                continue
            x_rate = f"{rate / ref_rate:.1f}x" if ref_rate else ""
            x_core = f"{per_core / ref_core:.1f}x" if per_core and ref_core else ""
            cpu_s = f"{cpu_us:.1f}" if cpu_us else ""
            core_s = f"{per_core:,.0f}" if per_core else ""
            lines.append(
                f"| {cell} | {name} | {rate:,.0f} | {cpu_s} | {core_s} | {x_rate} | {x_core} "
                f"| {p50:.2f} / {p99:.2f} | {errors} |"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    out_dir = BENCH / "results"
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers = [s for s in SERVERS if s in args.servers.split(",")]
    started: dict[str, Server] = {}
    gen = subprocess.Popen(
        [sys.executable, __file__, "--generate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    began = time.perf_counter()
    try:
        for name in servers:
            started[name] = Server(name, logs)
        for cell in cells(args):
            by_server = results.setdefault(cell["cell"], {})
            for rep in range(args.reps):
                order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
                for name in order:
                    server = started[name]
                    cmd = {**cell, "url": server.url, "pid": server.proc.pid}
                    gen.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
                    gen.stdin.flush()  # type: ignore[union-attr]
                    record = json.loads(gen.stdout.readline())  # type: ignore[union-attr]
                    record["rep"] = rep
                    by_server.setdefault(name, []).append(record)
                    note = record.get("error") or f"{record['rate']:,.0f}/s"
                    print(f"  {cell['cell']:<13} rep {rep} {name:<18} {note}", file=sys.stderr)
    finally:
        gen.stdin.close()  # type: ignore[union-attr]
        gen.wait(10)
        for server in started.values():
            server.stop()
    md = (
        f"Socket.IO, {args.reps} reps (medians), {time.perf_counter() - began:.0f} s, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"echo: {SIZE}-byte string, acked; fan-out: burst of "
        + ", ".join(f"{k} to {n}" for n, k in FANOUT)
        + "\n\n"
        + table(results, servers)
        + "\n"
    )
    print(md)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"socketio-{stamp}.md").write_text(md)
    (out_dir / f"socketio-{stamp}.json").write_text(json.dumps(results, indent=1))
    print(f"written to bench/results/socketio-{stamp}.md", file=sys.stderr)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=float, default=0.3, help="echo: unmeasured seconds")
    p.add_argument("--duration", type=float, default=1.0, help="echo: measured seconds")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    args = p.parse_args()
    if args.serve == REFERENCE:
        serve_python_socketio()
        return 0
    if args.serve:
        serve_ours(args.serve.split("/")[1])
        return 0
    if args.generate:
        return generate()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
