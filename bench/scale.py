"""The scale point: one server process holding 10,000 and then 50,000 connections.

::

    sudo python bench/scale.py                          # uvloop and trio, about 4 minutes
    python bench/scale.py --servers uvloop --idle 20000 # fewer, without root

For each server (ours on asyncio+uvloop, ours on trio), in one run:

1. **Fan-out to 10,000** (``--fanout``): 10,000 receivers and one sender, pings
   off. A *burst* of 20 messages of 32 B back to back, then 20 *lockstep*
   broadcasts (the next one sent when every receiver has the previous one):
   deliveries/s, the latency of one broadcast to its last receiver (p50, p99),
   and the server's CPU per delivery.
2. **50,000 idle connections with pings on** (``--idle``, ``--ping-interval``):
   the server's keepalive pings every connection every ``--ping-interval``
   seconds and the clients answer. Over a window of two intervals it reports the
   server's CPU share, the pings answered, the CPU per ping, and what is left
   when the pings' cost is taken away (the cost of nothing happening, which
   should be about zero: the engine sleeps until its next deadline). Then the
   same window with nothing due at all, and the RSS per connection.

A client process (this one; picows on uvloop) binds its connections to several
loopback source addresses (127.0.0.2, 127.0.0.3, ...): one address gives at most
the ephemeral port range (about 28,000 here) towards one server port. Both
processes need ``RLIMIT_NOFILE`` above the connection count: this raises it when
the process may (root with CAP_SYS_RESOURCE); otherwise ``--idle`` is capped to
fit the hard limit (20,000 on the development machines, whose containers lack
that capability: 19,000 connections there).

``--processes K`` spreads the idle connections over K server processes, each
with a client process of its own, so that no process needs more descriptors
than the limit allows: the CPU, pings and RSS are summed over the servers, and
the window starts once every part has its connections open (the 50,000 of the
second step on a machine whose limit is 20,000)::

    python bench/scale.py --fanout 0 --idle 50000 --processes 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402  (the bench folder's own module)
from picows import WSFrame, WSMsgType, WSTransport, ws_connect  # noqa: E402

PING = WSMsgType.PING
PER_ADDRESS = 20_000  # connections per source address, well inside the ephemeral range
SERVERS = ("uvloop", "trio")


# -- the server process ---------------------------------------------------------------------


def serve(kind: str, ping_interval: float | None) -> None:
    """Run ours (``--serve KIND``): fan-out on every text message, keepalive as asked."""
    sys.path.insert(0, str(HERE / "servers"))
    from ikisocket_asyncio import make_hub  # noqa: PLC0415  (the bench servers' fan-out hub)

    hub = make_hub("broadcast")

    limits: dict[str, Any] = {
        "backlog": 4096,
        "compression": False,
        "ping_interval": ping_interval,
        "max_connections": None,
        "max_connections_per_ip": None,
        "max_handshakes": None,
    }

    def announce(port: int) -> None:
        print(f"PORT {port}", flush=True)

    if kind == "trio":
        import trio  # noqa: PLC0415

        from ikisocket_adapters.trio import open_server  # noqa: PLC0415

        async def main_trio() -> None:
            async with open_server(hub, "127.0.0.1", 0, **limits) as server:
                announce(server.port)
                await trio.sleep_forever()

        trio.run(main_trio)
    else:
        import uvloop  # noqa: PLC0415

        from ikisocket_adapters.asyncio import start_server  # noqa: PLC0415

        async def main_asyncio() -> None:
            server = await start_server(hub, "127.0.0.1", 0, **limits)
            announce(server.port)
            await asyncio.Event().wait()

        uvloop.run(main_asyncio())


# -- the client side ------------------------------------------------------------------------


class Client(loadgen.Client):
    """A load generator client that answers and counts the server's pings."""

    pings = 0

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is PING:
            Client.pings += 1
            transport.send_pong(frame.get_payload_as_bytes())
        else:
            super().on_ws_frame(transport, frame)


async def open_connections(url: str, count: int, first: int) -> list[Client]:
    """Open ``count`` connections, 200 at a time, numbered from ``first`` for their address."""
    clients: list[Client] = []
    while len(clients) < count:
        batch = min(200, count - len(clients))
        number = first + len(clients)
        # Past the first PER_ADDRESS, another source address (bind-before-connect with
        # port 0 searches the whole port range on every call: only when it is needed).
        extra = (
            {"local_addr": (f"127.0.0.{1 + number // PER_ADDRESS}", 0)}
            if number >= PER_ADDRESS
            else {}
        )
        pairs = await asyncio.gather(
            *(
                ws_connect(
                    Client,
                    url,
                    enable_auto_pong=False,
                    websocket_handshake_timeout=60,
                    **extra,
                )
                for _ in range(batch)
            )
        )
        clients.extend(c for _, c in pairs if isinstance(c, Client))
    return clients


def start(kind: str, ping_interval: float | None) -> tuple[subprocess.Popen[str], str]:
    """Start a server process; its process and URL."""
    cmd = [sys.executable, __file__, "--serve", kind]
    if ping_interval is not None:
        cmd += ["--ping-interval", str(ping_interval)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"{kind}: the server did not start ({line!r})")
    return proc, f"ws://127.0.0.1:{int(line.split()[1])}/ws"


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10)


async def fanout(kind: str, receivers: int) -> dict[str, Any]:
    """Burst and lockstep fan-out to ``receivers`` connections."""
    proc, url = start(kind, None)
    try:
        clients = await open_connections(url, receivers + 1, 0)
        await asyncio.sleep(1.0)
        sender, rest = clients[0], clients[1:]
        cast = loadgen.Broadcast(sender, rest)
        meter = loadgen.CpuMeter(proc.pid)
        burst = await cast.run(20, 32, meter, 120.0, lockstep=False)
        lockstep = await cast.run(20, 32, meter, 120.0, lockstep=True)
        await loadgen.close_all(clients)  # type: ignore[arg-type]
    finally:
        stop(proc)
    out = {}
    for name, rep in (("burst", burst), ("lockstep", lockstep)):
        cpu = rep["server_cpu"] * rep["elapsed"] if rep["server_cpu"] is not None else None
        out[name] = {
            "deliveries": rep["messages"],
            "expected": rep["expected"],
            "rate": round(rep["rate"]),
            "p50_ms": round(rep["p50_ms"], 2),
            "p99_ms": round(rep["p99_ms"], 2),
            "cpu_us_per_delivery": round(cpu / rep["messages"] * 1e6, 2) if cpu else None,
        }
    return out


async def idle(kind: str, count: int, ping_interval: float | None) -> dict[str, Any]:
    """``count`` connections held for two ping intervals: CPU, pings, RSS."""
    proc, url = start(kind, ping_interval)
    try:
        await asyncio.sleep(0.3)
        rss_before = loadgen.rss_kib(proc.pid)
        began = time.perf_counter()
        cpu_before = loadgen.cpu_seconds(proc.pid)
        clients = await open_connections(url, count, 0)
        connect_s = time.perf_counter() - began
        connect_cpu = (loadgen.cpu_seconds(proc.pid) or 0) - (cpu_before or 0)
        # The first pings are due ping_interval after each connection opened: wait until
        # every connection has had one, so the window sees the steady state.
        await asyncio.sleep((ping_interval or 0) + 2.0)
        window = 2 * (ping_interval or 5.0)
        pings_before = Client.pings
        cpu0 = loadgen.cpu_seconds(proc.pid) or 0.0
        t0 = time.perf_counter()
        await asyncio.sleep(window)
        wall = time.perf_counter() - t0
        cpu = (loadgen.cpu_seconds(proc.pid) or 0.0) - cpu0
        pings = Client.pings - pings_before
        rss_open = loadgen.rss_kib(proc.pid)
        lost = sum(c.lost for c in clients)
        await loadgen.close_all(clients)  # type: ignore[arg-type]
    finally:
        stop(proc)
    return {
        "connections": len(clients),
        "lost": lost,
        "connect_s": round(connect_s, 1),
        "connect_us": round(connect_cpu / max(1, len(clients)) * 1e6),
        "window_s": round(wall, 1),
        "cpu_pct": round(cpu / wall * 100, 2),
        "pings": pings,
        "cpu_us_per_ping": round(cpu / pings * 1e6, 1) if pings else None,
        "kib_per_conn": round((rss_open - rss_before) / len(clients), 2)
        if rss_open and rss_before and clients
        else None,
    }


async def idle_worker(kind: str, count: int, ping_interval: float | None) -> None:
    """One part of ``--processes`` (``--idle-worker KIND``): a server and ``count`` clients.

    Tells the coordinating process on stdout ``OPEN connections server_pid connect_s
    connect_cpu rss_before``; then answers each ``PINGS`` line on stdin with ``pings lost``
    (pings answered so far, connections lost) and ends at ``CLOSE``.
    """
    proc, url = start(kind, ping_interval)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(0.3)
        rss_before = loadgen.rss_kib(proc.pid) or 0
        cpu_before = loadgen.cpu_seconds(proc.pid) or 0.0
        began = time.perf_counter()
        clients = await open_connections(url, count, 0)
        connect_s = time.perf_counter() - began
        connect_cpu = (loadgen.cpu_seconds(proc.pid) or 0.0) - cpu_before
        print(
            f"OPEN {len(clients)} {proc.pid} {connect_s:.2f} {connect_cpu:.4f} {rss_before}",
            flush=True,
        )
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "PINGS":
            print(f"{Client.pings} {sum(c.lost for c in clients)}", flush=True)
        await loadgen.close_all(clients)  # type: ignore[arg-type]
    finally:
        stop(proc)


async def idle_spread(
    kind: str, count: int, ping_interval: float | None, processes: int
) -> dict[str, Any]:
    """``count`` connections over ``processes`` servers (each with its own client process).

    What :func:`idle` measures, summed over the servers, for more connections than
    one process may hold descriptors for. Every part opens its connections first;
    the window starts when all are open.
    """
    cmd = [sys.executable, __file__, "--idle-worker", kind]
    if ping_interval is not None:
        cmd += ["--ping-interval", str(ping_interval)]
    share, extra = divmod(count, processes)
    workers = [
        subprocess.Popen(
            [*cmd, "--idle", str(share + (1 if n < extra else 0))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]

    def ask(worker: subprocess.Popen[str], line: str) -> list[str]:
        assert worker.stdin is not None
        assert worker.stdout is not None
        worker.stdin.write(line + "\n")
        worker.stdin.flush()
        return worker.stdout.readline().split()

    try:
        opened = []
        for worker in workers:
            assert worker.stdout is not None
            words = worker.stdout.readline().split()
            if not words or words[0] != "OPEN":
                raise RuntimeError(f"{kind}: a part did not open its connections ({words})")
            opened.append(words[1:])
        pids = [int(words[1]) for words in opened]
        await asyncio.sleep((ping_interval or 0) + 2.0)
        window = 2 * (ping_interval or 5.0)
        pings_before = sum(int(ask(w, "PINGS")[0]) for w in workers)
        cpu0 = sum(loadgen.cpu_seconds(pid) or 0.0 for pid in pids)
        t0 = time.perf_counter()
        await asyncio.sleep(window)
        wall = time.perf_counter() - t0
        cpu = sum(loadgen.cpu_seconds(pid) or 0.0 for pid in pids) - cpu0
        answers = [ask(w, "PINGS") for w in workers]
        pings = sum(int(a[0]) for a in answers) - pings_before
        lost = sum(int(a[1]) for a in answers)
        rss = sum(loadgen.rss_kib(pid) or 0 for pid in pids)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("CLOSE\n")
            worker.stdin.flush()
        for worker in workers:
            worker.wait(60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    connections = sum(int(words[0]) for words in opened)
    rss_before = sum(int(words[4]) for words in opened)
    return {
        "connections": connections,
        "processes": processes,
        "lost": lost,
        "connect_s": round(max(float(words[2]) for words in opened), 1),
        "connect_us": round(sum(float(words[3]) for words in opened) / max(1, connections) * 1e6),
        "window_s": round(wall, 1),
        "cpu_pct": round(cpu / wall * 100, 2),
        "pings": pings,
        "cpu_us_per_ping": round(cpu / pings * 1e6, 1) if pings else None,
        "kib_per_conn": round((rss - rss_before) / connections, 2) if connections else None,
    }


def fd_room(want: int) -> int:
    """Raise this process's (and so the server's) fd limit; the connections that fit."""
    need = want + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return max(0, hard - 1000)
    return want


async def main(args: argparse.Namespace) -> None:
    processes = args.processes
    part = -(-args.idle // processes)  # the most one server (and one client) holds
    room = fd_room(part)
    count = args.idle if room >= part else room * processes
    if count < args.idle:
        print(
            f"fd limit: --idle capped at {count} (raising RLIMIT_NOFILE past its hard limit "
            "needs CAP_SYS_RESOURCE; --processes spreads the connections over more servers)",
            file=sys.stderr,
        )
    results: dict[str, Any] = {}
    for kind in args.servers.split(","):
        row: dict[str, Any] = {}
        if args.fanout:
            row["fanout"] = await fanout(kind, args.fanout)
        if processes == 1:
            row["idle_pings"] = await idle(kind, count, args.ping_interval)
            row["idle_no_pings"] = await idle(kind, count, None)
        else:
            row["idle_pings"] = await idle_spread(kind, count, args.ping_interval, processes)
            row["idle_no_pings"] = await idle_spread(kind, count, None, processes)
        results[kind] = row
        print(json.dumps({kind: row}), flush=True)
    if args.fanout:
        print_fanout(args.fanout, results)
    print_idle(args.ping_interval, results)


def print_fanout(receivers: int, results: dict[str, Any]) -> None:
    """The fan-out table of a run."""
    print()
    print(
        f"| server | fan-out to {receivers:,}: burst deliveries/s | lockstep deliveries/s "
        "| lockstep p50 / p99 ms | CPU us per delivery (burst / lockstep) |"
    )
    print("|---|---:|---:|---:|---:|")
    for kind, row in results.items():
        b, s = row["fanout"]["burst"], row["fanout"]["lockstep"]
        print(
            f"| ikisocket/{kind} | {b['rate']:,} | {s['rate']:,} | {s['p50_ms']} / "
            f"{s['p99_ms']} | {b['cpu_us_per_delivery']} / {s['cpu_us_per_delivery']} |"
        )


def print_idle(ping_interval: float, results: dict[str, Any]) -> None:
    """The idle table of a run (summed over the servers with ``--processes``)."""
    print()
    print(
        f"| server | idle connections (pings every {ping_interval:g} s) | CPU % of a core "
        "| pings answered | CPU us per ping | CPU % with no pings | KiB per connection "
        "| connect s (CPU us each) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, row in results.items():
        i, q = row["idle_pings"], row["idle_no_pings"]
        spread = f" over {i['processes']} processes" if "processes" in i else ""
        print(
            f"| ikisocket/{kind} | {i['connections']:,}{spread} (lost {i['lost']}) | "
            f"{i['cpu_pct']} | "
            f"{i['pings']:,} | {i['cpu_us_per_ping']} | {q['cpu_pct']} ({q['connections']:,}) "
            f"| {i['kib_per_conn']} | {i['connect_s']} ({i['connect_us']}) |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--fanout", type=int, default=10_000)
    parser.add_argument("--idle", type=int, default=50_000)
    parser.add_argument("--ping-interval", type=float, default=10.0)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="idle: spread the connections over this many servers, each with a client process",
    )
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--idle-worker", choices=SERVERS, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    pinging = "--ping-interval" in sys.argv
    if parsed.serve:
        serve(parsed.serve, parsed.ping_interval if pinging else None)
    elif parsed.idle_worker:
        import uvloop

        fd_room(parsed.idle)
        uvloop.run(
            idle_worker(parsed.idle_worker, parsed.idle, parsed.ping_interval if pinging else None)
        )
    else:
        import uvloop

        os.nice(0)
        uvloop.run(main(parsed))
