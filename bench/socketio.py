"""Socket.IO beside python-socketio: event echo with ack, and room fan-out.

One command, three servers, one load generator, interleaved repetitions::

    python bench/socketio.py                 # 3 reps, about 4 minutes on 2 cores
    python bench/socketio.py --reps 1 --duration 0.5
    python bench/socketio.py --baseline f8481fb   # plus our servers at that commit
    python bench/socketio.py --profile            # py-spy of ikisocket/uvloop under echo 64

Servers (each its own process on 127.0.0.1, WebSocket transport only, the same
Engine.IO ping settings: ``pingInterval`` 25 s, ``pingTimeout`` 20 s):

* ``ikisocket/uvloop``: ``hub.socketio()`` on ``ikisocket_adapters.asyncio`` on uvloop.
* ``ikisocket+mypyc/uvloop``: the first on the compiled build of the working tree
  (``bench/compiled.py`` builds it as ``make compiled`` does and unpacks it into
  ``bench/results/compiled/site/``, which goes first on ``PYTHONPATH``).
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

``--baseline REV`` adds, after each of our rows, the same server on ``REV``'s
``src/`` (extracted as ``bench/run.py --baseline`` does, first on
``PYTHONPATH``; each server logs which ``ikisocket_core`` it imported), and a
before-vs-now table of the server CPU per op. ``--profile`` records the
``ikisocket/uvloop`` server (or ``--profile-server``) with py-spy under the
echo load (``--profile-clients``, 64 by default) and prints its hot spots.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file is named like the python-socketio package: keep its folder off the front of the
# path so that ``import socketio`` finds the package, and reach loadgen and _common at the end.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path += [str(BENCH), str(BENCH / "servers")]

import uvloop  # noqa: E402
from _common import BACKLOG, HOST, OURS, announce, raise_fd_limit  # noqa: E402
from loadgen import CpuMeter, percentile  # noqa: E402
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect  # noqa: E402

TEXT = WSMsgType.TEXT

#: Engine.IO ping settings every server runs with (python-socketio's defaults too).
PING_INTERVAL = 25.0
PING_TIMEOUT = 20.0
ROOM = "r"
SIZE = 32
SERVERS = ("ikisocket/uvloop", "ikisocket/trio", "python-socketio")
REFERENCE = "python-socketio"
#: ``ikisocket/uvloop`` on the compiled build (mypyc) of the working tree, from bench/compiled.py.
COMPILED = "ikisocket+mypyc/uvloop"
#: The rows a run measures by default, in this order.
ROWS = (SERVERS[0], COMPILED, *SERVERS[1:])
#: (receivers, burst) per fan-out cell.
FANOUT = ((100, 200), (1000, 50))
ECHO = (1, 64)


# --------------------------------------------------------------------------- servers


def serve_ours(kind: str) -> None:
    """``hub.socketio()`` on the asyncio adapter (uvloop) or on trio."""
    import ikisocket_core  # noqa: PLC0415
    from ikisocket_core import EventPayload, Hub  # noqa: PLC0415

    # Which copy this server runs: the runner checks it against the src/ it meant.
    sys.stderr.write(f"PROBE ikisocket_core {ikisocket_core.__file__}\n")
    sys.stderr.flush()

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
    from ikisocket_adapters.asyncio import start_server  # noqa: PLC0415

    async def main_asyncio() -> None:
        server = await start_server(hub, HOST, 0, **OURS)  # type: ignore[arg-type]
        announce(server.port)
        await asyncio.Event().wait()

    uvloop.run(main_asyncio())


def serve_python_socketio() -> None:
    """python-socketio's ``AsyncServer`` in an ``ASGIApp`` on uvicorn with uvloop."""
    import uvicorn  # noqa: PLC0415

    # By name: this file is ``socketio`` too, as far as a type checker can see.
    socketio: Any = importlib.import_module("socketio")
    sio = socketio.AsyncServer(
        async_mode="asgi",
        transports=["websocket"],
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
    )

    @sio.on("echo")  # type: ignore[untyped-decorator]
    async def echo(sid: str, data: Any) -> Any:
        return data

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    @sio.on("fan")  # type: ignore[untyped-decorator]
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


class Sio(WSListener):
    """One Engine.IO session joined to the namespace ``/``; hands events and acks on."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_ack: Callable[[Sio, bytes], None] = _ignore
        self.on_event: Callable[[Sio, bytes], None] = _ignore
        self.next_id = 0
        self.sent_at = 0.0
        self.received = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before CONNECT"))

    def send(self, data: bytes) -> None:
        self.transport.send(TEXT, data)  # type: ignore[union-attr]

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.disconnect()
            return
        data = frame.get_payload_as_bytes()
        head = data[:2]
        if head == b"42":  # EVENT
            self.on_event(self, data)
        elif head == b"43":  # ACK
            self.on_ack(self, data)
        elif data == b"2":  # Engine.IO ping
            transport.send(TEXT, b"3")
        elif head == b"0{":  # Engine.IO open: join the namespace "/"
            transport.send(TEXT, b"40")
        elif head == b"40" and not self.joined.done():
            self.joined.set_result(None)
        elif head == b"44" and not self.joined.done():
            self.joined.set_exception(ConnectionError(data.decode()))


def _ignore(client: Sio, data: bytes) -> None:
    pass


async def connect(url: str, count: int) -> list[Sio]:
    """Open ``count`` sessions, 100 at a time, each joined to ``/``."""
    clients: list[Sio] = []
    while len(clients) < count:
        batch = min(100, count - len(clients))
        pairs = await asyncio.gather(
            *(ws_connect(Sio, url, enable_auto_ping=False) for _ in range(batch))
        )
        opened = [listener for _, listener in pairs if isinstance(listener, Sio)]
        await asyncio.wait_for(asyncio.gather(*(c.joined for c in opened)), 30)
        clients.extend(opened)
    return clients


def close(clients: list[Sio]) -> None:
    """Close every session (the servers see a WebSocket close)."""
    for c in clients:
        if c.transport is not None:
            c.transport.send_close()
            c.transport.disconnect()


class Echo:
    """Every client emits ``echo`` with an ack id and sends the next one on the ack."""

    def __init__(self, clients: list[Sio]) -> None:
        payload = "x" * SIZE
        self.packet = f'["echo","{payload}"]'.encode()
        self.expect = f'["{payload}"]'.encode()
        self.sending = True
        self.recording = False
        self.count = self.errors = 0
        self.in_flight = len(clients)
        self.latencies: list[float] = []
        self.drained = asyncio.get_running_loop().create_future()
        for c in clients:
            c.on_ack = self.on_ack
        for c in clients:
            self.fire(c)

    def fire(self, client: Sio) -> None:
        client.next_id += 1
        client.sent_at = time.perf_counter()
        client.send(b"42%d" % client.next_id + self.packet)

    def on_ack(self, client: Sio, data: bytes) -> None:
        now = time.perf_counter()
        if data != b"43%d" % client.next_id + self.expect:
            self.errors += 1
        if self.recording:
            self.latencies.append(now - client.sent_at)
            self.count += 1
        if self.sending:
            self.fire(client)
            return
        self.in_flight -= 1
        if not self.in_flight and not self.drained.done():
            self.drained.set_result(None)


async def echo_rep(cmd: dict[str, Any], meter: CpuMeter) -> dict[str, Any]:
    """One echo repetition: connect, warm up, measure, drain, close."""
    clients = await connect(cmd["url"], cmd["clients"])
    load = Echo(clients)
    await asyncio.sleep(cmd["warmup"])
    meter.start()
    start = time.perf_counter()
    load.recording = True
    await asyncio.sleep(cmd["duration"])
    load.recording = False
    elapsed = time.perf_counter() - start
    cpu = meter.stop()
    load.sending = False
    try:
        await asyncio.wait_for(load.drained, 10)
    except asyncio.TimeoutError:
        load.errors += load.in_flight
    close(clients)
    lat = sorted(load.latencies)
    return {
        "ops": load.count,
        "elapsed": elapsed,
        "rate": load.count / elapsed,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "errors": load.errors,
        **cpu,
    }


def _resolves(fut: asyncio.Future[None]) -> Callable[[Sio, bytes], None]:
    return lambda client, data: fut.set_result(None)


async def join_room(receivers: list[Sio]) -> None:
    """Every receiver emits ``join`` with an ack, 100 at a time, and waits for it."""
    loop = asyncio.get_running_loop()
    packet = b'420["join","' + ROOM.encode() + b'"]'
    for i in range(0, len(receivers), 100):
        batch = receivers[i : i + 100]
        acks: list[asyncio.Future[None]] = []
        for c in batch:
            fut: asyncio.Future[None] = loop.create_future()
            c.on_ack = _resolves(fut)
            acks.append(fut)
            c.send(packet)
        await asyncio.wait_for(asyncio.gather(*acks), 30)


async def fanout_rep(cmd: dict[str, Any], meter: CpuMeter) -> dict[str, Any]:
    """One fan-out repetition: N receivers in the room, a burst of K from one more client."""
    n, k = cmd["receivers"], cmd["burst"]
    receivers = await connect(cmd["url"], n)
    (sender,) = await connect(cmd["url"], 1)
    await join_room(receivers)
    finished: list[float] = []
    total = 0
    goal = n * k
    all_done = asyncio.get_running_loop().create_future()

    def on_event(client: Sio, data: bytes) -> None:
        nonlocal total
        client.received += 1
        total += 1
        if client.received == k:
            finished.append(time.perf_counter())
        if total == goal and not all_done.done():
            all_done.set_result(None)

    for c in receivers:
        c.on_event = on_event
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
    close([*receivers, sender])
    spread = sorted(t - start for t in finished)
    return {
        "ops": total,
        "elapsed": elapsed,
        "rate": total / elapsed,
        "p50_ms": percentile(spread, 50) * 1e3,
        "p99_ms": percentile(spread, 99) * 1e3,
        "errors": goal - total,
        "timed_out": timed_out,
        **cpu,
    }


async def generate() -> int:
    """The load generator: one JSON command per stdin line, one JSON result per stdout line."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return 0
        cmd = json.loads(line)
        meter = CpuMeter(cmd["pid"])
        try:
            rep = echo_rep if cmd["load"] == "echo" else fanout_rep
            result = await rep(cmd, meter)
        except Exception as exc:  # reported to the runner, which carries on
            result = {"error": f"{type(exc).__name__}: {exc}"}
        await asyncio.sleep(0.2)  # let the server forget the closed clients
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- runner


class Server:
    """One server process, started once for the whole run.

    ``src`` goes first on ``PYTHONPATH`` (a ``--baseline`` row: the old revision's).
    """

    def __init__(self, name: str, logs: Path, src: Path = ROOT / "src") -> None:
        self.name = name
        slug = name.replace("/", "-").replace("@", "-")
        log = open(logs / f"socketio-{slug}.log", "wb")  # noqa: SIM115
        path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
        serve = name if name == REFERENCE else "ikisocket/" + name.rpartition("/")[2]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", serve],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": path},
        )
        line = self.proc.stdout.readline().decode()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{name} did not start (see {log.name})")
        probe = [
            x.split(" ", 2)[2]
            for x in Path(log.name).read_text().splitlines()
            if x.startswith("PROBE ikisocket_core ")
        ]
        if name.startswith("ikisocket") and not (probe and probe[0].startswith(str(src))):
            self.proc.kill()
            raise RuntimeError(f"{name} imported ikisocket_core from {probe}, not {src}")
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
        {"cell": f"fan-out {n}", "load": "fanout", "receivers": n, "burst": k, "timeout": 60}
        for n, k in FANOUT
    ]
    return out


def median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


def per_op_us(records: list[dict[str, Any]], key: str) -> float | None:
    """The median CPU microseconds per op of ``key`` (a share of one core over the window)."""
    return median(
        [
            {"v": r[key] * r["elapsed"] / r["ops"] * 1e6}
            for r in records
            if r.get(key) is not None and r["ops"]
        ],
        "v",
    )


def table(results: dict[str, dict[str, list[dict[str, Any]]]], servers: list[str]) -> str:
    """One Markdown row per cell and server: medians, and ratios to python-socketio."""
    lines = [
        "| cell | server | ops/s | server CPU per op (us) | ops per server CPU-second "
        "| x python-socketio (ops/s) | x python-socketio (per core) | p50 / p99 ms "
        "| generator CPU per op (us) | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell, by_server in results.items():
        ok = {n: [r for r in by_server.get(n, []) if "error" not in r] for n in servers}
        ref = ok.get(REFERENCE) or []
        ref_rate = median(ref, "rate")
        ref_us = per_op_us(ref, "server_cpu")
        for name in servers:
            recs = ok[name]
            if not recs:
                errs = ", ".join(sorted({str(r.get("error")) for r in by_server.get(name, [])}))
                lines.append(f"| {cell} | {name} | n/a | | | | | | | {errs} |")
                continue
            rate = median(recs, "rate") or 0.0
            cpu_us = per_op_us(recs, "server_cpu")
            gen_us = per_op_us(recs, "gen_cpu")
            x_rate = f"{rate / ref_rate:.1f}x" if ref_rate else ""
            x_core = f"{ref_us / cpu_us:.1f}x" if ref_us and cpu_us else ""
            cpu_s = f"{cpu_us:.1f} | {1e6 / cpu_us:,.0f}" if cpu_us else " | "
            gen_s = f"{gen_us:.1f}" if gen_us else ""
            p50, p99 = median(recs, "p50_ms") or 0.0, median(recs, "p99_ms") or 0.0
            errors = sum(r["errors"] for r in recs)
            lines.append(
                f"| {cell} | {name} | {rate:,.0f} | {cpu_s} | {x_rate} | {x_core} "
                f"| {p50:.2f} / {p99:.2f} | {gen_s} | {errors} |"
            )
    return "\n".join(lines)


def before_vs_now(
    results: dict[str, dict[str, list[dict[str, Any]]]], pairs: dict[str, str]
) -> str:
    """Server CPU per op of each ``--baseline`` row against its current row."""
    lines = [
        "| cell | server | CPU per op before (us) | now (us) | now / before "
        "| now / before, per repetition |",
        "|---|---|---:|---:|---:|---|",
    ]
    for cell, by_server in results.items():
        for old, new in pairs.items():
            before = [r for r in by_server.get(old, []) if "error" not in r]
            now = [r for r in by_server.get(new, []) if "error" not in r]
            b, n = per_op_us(before, "server_cpu"), per_op_us(now, "server_cpu")
            if not b or not n:
                continue
            by_rep = {r["rep"]: r for r in before}
            ratios = sorted(
                per_op_us([r], "server_cpu") / per_op_us([by_rep[r["rep"]]], "server_cpu")  # type: ignore[operator]
                for r in now
                if r["rep"] in by_rep and r["ops"] and by_rep[r["rep"]]["ops"]
            )
            spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}" if ratios else ""
            lines.append(f"| {cell} | {new} | {b:.1f} | {n:.1f} | {n / b:.2f} | {spread} |")
    return "\n".join(lines)


def rows(
    args: argparse.Namespace,
) -> tuple[list[str], dict[str, Path], dict[str, str], str]:
    """The rows to measure, each one's ``src`` directory, the ``--baseline`` pairs, a note.

    The compiled row is built first (bench/compiled.py) and left out, with the reason, when
    it cannot be.
    """
    servers = [s for s in ROWS if s in args.servers.split(",")]
    srcs = dict.fromkeys(servers, ROOT / "src")
    if COMPILED in servers:
        import compiled  # noqa: PLC0415

        unbuilt = compiled.prepare()
        if unbuilt:
            print(f"  {COMPILED} left out: {unbuilt}", file=sys.stderr)
            servers.remove(COMPILED)
        srcs[COMPILED] = compiled.SITE
    pairs: dict[str, str] = {}  # baseline row -> its current row
    baseline_note = ""
    if args.baseline:
        from run import extract_baseline  # noqa: PLC0415

        short, full, root = extract_baseline(args.baseline)
        baseline_note = f"; baseline {args.baseline} = {full} ({root / 'src'})"
        with_old: list[str] = []
        for name in servers:
            with_old.append(name)
            if name.startswith("ikisocket/"):
                old = f"ikisocket@{short}/{name.split('/')[1]}"
                with_old.append(old)
                srcs[old] = root / "src"
                pairs[old] = name
        servers = with_old
    return servers, srcs, pairs, baseline_note


def run(args: argparse.Namespace) -> int:
    out_dir = BENCH / "results"
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers, srcs, pairs, baseline_note = rows(args)
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
            started[name] = Server(name, logs, srcs[name])
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
        + baseline_note
        + "\n\n"
        + table(results, servers)
        + "\n"
        + (
            f"\nBefore vs now (server CPU per op):\n\n{before_vs_now(results, pairs)}\n"
            if pairs
            else ""
        )
    )
    print(md)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"socketio-{stamp}.md").write_text(md)
    (out_dir / f"socketio-{stamp}.json").write_text(json.dumps(results, indent=1))
    print(f"written to bench/results/socketio-{stamp}.md", file=sys.stderr)
    return 0


def profile(args: argparse.Namespace) -> int:
    """Record our server with py-spy (``--gil``) while the generator runs echo; print hot spots."""
    from run import hot_spots, perf_split, py_spy  # noqa: PLC0415

    spy = py_spy()
    if spy is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 1
    out_dir = BENCH / "results"
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    name = args.profile_server
    src = ROOT / "src"
    if name == COMPILED:
        import compiled  # noqa: PLC0415

        unbuilt = compiled.prepare()
        if unbuilt:
            print(unbuilt, file=sys.stderr)
            return 1
        src = compiled.SITE
    server = Server(name, logs, src)
    gen = subprocess.Popen(
        [sys.executable, __file__, "--generate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    slug = f"socketio-{name.replace('/', '-')}-echo-{args.profile_clients}"
    out = out_dir / f"profile-{slug}.speedscope.json"
    try:
        cmd = {
            "cell": "profile",
            "load": "echo",
            "clients": args.profile_clients,
            "warmup": 1.0,
            "duration": 2 * args.profile_seconds + 3,  # py-spy, then perf
            "url": server.url,
            "pid": server.proc.pid,
        }
        gen.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        gen.stdin.flush()  # type: ignore[union-attr]
        time.sleep(1.5)
        spy_cmd = [spy, "record", "--pid", str(server.proc.pid)]
        spy_cmd += ["--duration", str(int(args.profile_seconds)), "--rate", "200"]
        spy_cmd += ["--function", "--gil", "--format", "speedscope", "--output", str(out)]
        subprocess.run(spy_cmd, capture_output=True, check=True, timeout=args.profile_seconds + 60)
        split = perf_split(server.proc.pid, args.profile_seconds, out_dir / f"perf-{slug}.data")
        record = json.loads(gen.stdout.readline())  # type: ignore[union-attr]
    finally:
        gen.stdin.close()  # type: ignore[union-attr]
        gen.wait(10)
        server.stop()
    per_op = record["server_cpu"] * record["elapsed"] / max(1, record["ops"]) * 1e6
    title = (
        f"{name}, echo {args.profile_clients} ({record['rate']:,.0f} acks/s, "
        f"{per_op:.1f} us of server CPU per ack while sampled)"
    )
    report = hot_spots(out, title, top=25)
    if split:
        report += (
            f"\n\nOn-CPU time by binary (perf, {args.profile_seconds:g} s after py-spy): {split}"
        )
    (out_dir / f"profile-{slug}.md").write_text(report + "\n")
    print(report)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=float, default=0.3, help="echo: unmeasured seconds")
    p.add_argument("--duration", type=float, default=1.0, help="echo: measured seconds")
    p.add_argument("--servers", default=",".join(ROWS), help="comma-separated subset")
    p.add_argument("--baseline", help="also run our servers at this git revision")
    p.add_argument("--profile", action="store_true", help="py-spy our server under echo load")
    p.add_argument("--profile-server", default="ikisocket/uvloop", choices=ROWS[:3])
    p.add_argument("--profile-clients", type=int, default=64)
    p.add_argument("--profile-seconds", type=float, default=10.0)
    args = p.parse_args()
    if args.serve == REFERENCE:
        serve_python_socketio()
        return 0
    if args.serve:
        serve_ours(args.serve.split("/")[1])
        return 0
    if args.generate:
        raise_fd_limit()
        return uvloop.run(generate())
    if args.profile:
        return profile(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
