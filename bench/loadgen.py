"""The load generator: picows clients on uvloop, driven by ``bench/run.py``.

It runs in its own process, so its CPU is not the server's. The clients are
picows listeners (Cython framing and masking, one callback per frame, no task
or coroutine per message), which keeps the generator's cost per message well
under any pure-Python server's. Every line it prints on stdout is one JSON
object: ``{"type": "rep", ...}`` per measured repetition, then
``{"type": "done"}``; or ``{"type": "error", "message": ...}``. With
``--stdin`` it stays up and takes one JSON list of arguments per line (the
runner uses one generator for the whole run, so its start-up is paid once).

Scenarios:

* ``echo``: ``--clients`` connections each send a ``--size``-byte text
  message, wait for the echo, and send the next one, for ``--duration``
  seconds after a short warm-up. Reports messages/s and round-trip latency.
* ``broadcast``: ``--receivers`` connections listen; one more connection
  sends ``--messages`` text messages, which the server relays to every other
  connection: back to back (a burst), or with ``--lockstep`` each one only
  after every receiver got the previous one. A repetition ends when every
  receiver has every message. Reports delivered messages/s, and the time until
  the receivers were done (burst) or each broadcast's latency (lockstep).
* ``idle``: opens ``--connections`` connections (at most ``--connect-cap``
  seconds of connecting; what was reached is reported), lets the server settle,
  then sends nothing for ``--idle-seconds``. Reports the server's CPU share
  over that silence, its RSS growth per connection (``VmRSS`` before the first
  connect and after the last), and the connect rate with the server's CPU per
  connection. Then closes them all.

Alongside each repetition it reports its own CPU use and the server's (read
from ``/proc/<pid>/stat``) as a fraction of one core: a generator near 1.0
means the number is a lower bound for that server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
#: How many connections are opened at once (the servers' backlogs are 1024).
CONNECT_BATCH = 100
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def emit(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds a process has run, summed over its threads, or ``None``.

    Reads ``/proc/<pid>/task/*/schedstat`` (nanoseconds; Linux), falling back
    to ``/proc/<pid>/stat`` (clock ticks, 10 ms: too coarse for short bursts).
    """
    if pid is None:
        return None
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU used by this process and by the server between :meth:`start` and :meth:`stop`."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self._wall = self._ours = 0.0
        self._theirs: float | None = None

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._ours = time.process_time()
        self._theirs = cpu_seconds(self.server_pid)

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall
        ours = (time.process_time() - self._ours) / wall
        now = cpu_seconds(self.server_pid)
        theirs = None if now is None or self._theirs is None else (now - self._theirs) / wall
        return {
            "gen_cpu": round(ours, 4),
            "server_cpu": None if theirs is None else round(theirs, 4),
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


class Client(WSListener):
    """One connection; the scenario installs what to do with each frame."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.on_text: Callable[[Client, WSFrame], None] = _ignore
        self.sent_at = 0.0
        self.received = 0
        self.lost = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.lost = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is TEXT:
            self.on_text(self, frame)
        elif kind is CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


def _ignore(client: Client, frame: WSFrame) -> None:
    pass


async def connect_all(url: str, count: int) -> list[Client]:
    """Open ``count`` connections, :data:`CONNECT_BATCH` at a time."""
    clients: list[Client] = []
    while len(clients) < count:
        batch = min(CONNECT_BATCH, count - len(clients))
        pairs = await asyncio.gather(
            *(ws_connect(Client, url, enable_auto_ping=False) for _ in range(batch))
        )
        opened = [listener for _, listener in pairs if isinstance(listener, Client)]
        if len(opened) < batch:
            raise ConnectionError(f"{batch - len(opened)} of {batch} connections failed")
        clients.extend(opened)
    return clients


async def connect_until(url: str, count: int, cap: float) -> tuple[list[Client], int, str]:
    """Open up to ``count`` connections, :data:`CONNECT_BATCH` at a time, for ``cap`` seconds.

    Returns the clients, how many attempts failed, and the first failure. Stops
    early when a whole batch fails (the server or the machine is out of something).
    """
    clients: list[Client] = []
    failed = 0
    first_error = ""
    deadline = time.perf_counter() + cap
    while len(clients) < count and time.perf_counter() < deadline:
        batch = min(CONNECT_BATCH, count - len(clients))
        left = max(1.0, deadline - time.perf_counter())
        attempts = (
            asyncio.wait_for(ws_connect(Client, url, enable_auto_ping=False), min(left, 30.0))
            for _ in range(batch)
        )
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        opened = 0
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                failed += 1
                first_error = first_error or f"{type(outcome).__name__}: {outcome}"
            elif isinstance(outcome[1], Client):
                clients.append(outcome[1])
                opened += 1
        if not opened:
            break
    return clients, failed, first_error


def rss_kib(pid: int | None) -> int | None:
    """A process's resident set (``VmRSS``) in KiB, or ``None``."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


async def idle(args: argparse.Namespace, meter: CpuMeter) -> dict[str, Any]:
    """Open many connections, then measure the server while nobody sends anything."""
    pid = args.server_pid
    await asyncio.sleep(0.2)
    rss_before = rss_kib(pid)
    cpu_before = cpu_seconds(pid)
    began = time.perf_counter()
    clients, failed, first_error = await connect_until(args.url, args.connections, args.connect_cap)
    connect_s = time.perf_counter() - began
    cpu_after = cpu_seconds(pid)
    # Let the server finish what the last handshakes started, then measure the silence.
    await asyncio.sleep(args.settle)
    rss_open = rss_kib(pid)
    meter.start()
    await asyncio.sleep(args.idle_seconds)
    cpu = meter.stop()
    rss_end = rss_kib(pid)
    lost = sum(c.lost for c in clients)
    await close_all(clients)
    n = len(clients)
    connect_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    growth = None if rss_before is None or rss_open is None else rss_open - rss_before
    return {
        "connections": n,
        "target": args.connections,
        "failed": failed,
        "first_error": first_error,
        "lost": lost,
        "connect_s": round(connect_s, 3),
        "connect_rate": n / connect_s if connect_s else None,
        "connect_us": connect_cpu / n * 1e6 if connect_cpu is not None and n else None,
        "rss_before_kib": rss_before,
        "rss_open_kib": rss_open,
        "rss_end_kib": rss_end,
        "kib_per_conn": growth / n if growth is not None and n else None,
        "idle_s": args.idle_seconds,
        "idle_cpu": cpu["server_cpu"],
        "gen_idle_cpu": cpu["gen_cpu"],
        "errors": args.connections - n + lost,
    }


async def close_all(clients: list[Client]) -> None:
    for client in clients:
        if client.transport is not None:
            client.transport.send_close()
    await asyncio.sleep(0.05)
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()


class Echo:
    """Request-response over every client; measure completed round trips."""

    def __init__(self, clients: list[Client], size: int) -> None:
        self.clients = clients
        self.size = size
        self.payload = b"x" * size
        self.sending = False
        self.recording = False
        self.latencies: list[float] = []
        self.count = 0
        self.errors = 0
        self.in_flight = 0
        self.drained: asyncio.Future[None] | None = None
        for client in clients:
            client.on_text = self.on_text

    def on_text(self, client: Client, frame: WSFrame) -> None:
        now = time.perf_counter()
        if frame.payload_size != self.size:
            self.errors += 1
        if self.recording:
            self.latencies.append(now - client.sent_at)
            self.count += 1
        if self.sending:
            client.sent_at = now
            client.transport.send(TEXT, self.payload)  # type: ignore[union-attr]
            return
        self.in_flight -= 1
        if self.in_flight == 0 and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def run(self, warmup: float, duration: float, meter: CpuMeter) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.latencies = []
        self.count = 0
        self.errors = 0
        self.drained = loop.create_future()
        self.sending = True
        self.recording = False
        self.in_flight = len(self.clients)
        now = time.perf_counter()
        for client in self.clients:
            client.sent_at = now
            client.transport.send(TEXT, self.payload)  # type: ignore[union-attr]
        await asyncio.sleep(warmup)
        meter.start()
        start = time.perf_counter()
        self.recording = True
        await asyncio.sleep(duration)
        self.recording = False
        elapsed = time.perf_counter() - start
        cpu = meter.stop()
        self.sending = False
        try:
            await asyncio.wait_for(self.drained, 10.0)
        except asyncio.TimeoutError:
            self.errors += self.in_flight
        lat = sorted(self.latencies)
        return {
            "messages": self.count,
            "elapsed": round(elapsed, 4),
            "rate": self.count / elapsed,
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "errors": self.errors,
            **cpu,
        }


class Broadcast:
    """One sender, many receivers; a repetition ends when every receiver has every message.

    In a *burst* the sender writes every message at once, so a server may
    relay several per read and write several per target at once. In
    *lockstep* it sends the next message only when every receiver has the
    previous one: each broadcast is handled on its own, and its latency (send
    to last receipt) is measured.
    """

    def __init__(self, sender: Client, receivers: list[Client]) -> None:
        self.sender = sender
        self.receivers = receivers
        self.expected = 0
        self.goal = 0
        self.total = 0
        self.lockstep = False
        self.left = 0
        self.payload = b""
        self.step_start = 0.0
        self.finished_at: list[float] = []
        self.steps: list[float] = []
        self.done: asyncio.Future[None] | None = None
        for client in receivers:
            client.on_text = self.on_text

    def on_text(self, client: Client, frame: WSFrame) -> None:
        client.received += 1
        self.total += 1
        if client.received == self.expected:
            self.finished_at.append(time.perf_counter())
        if self.total != self.goal:
            return
        if self.lockstep:
            now = time.perf_counter()
            self.steps.append(now - self.step_start)
            if self.left:
                self.left -= 1
                self.goal += len(self.receivers)
                self.step_start = now
                self.sender.transport.send(TEXT, self.payload)  # type: ignore[union-attr]
                return
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def run(
        self, messages: int, size: int, meter: CpuMeter, timeout: float, *, lockstep: bool
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for client in self.receivers:
            client.received = 0
        n = len(self.receivers)
        self.expected = messages
        self.total = 0
        self.lockstep = lockstep
        self.goal = n if lockstep else n * messages
        self.left = messages - 1
        self.finished_at = []
        self.steps = []
        self.done = loop.create_future()
        self.payload = payload = b"b" * size
        send = self.sender.transport.send  # type: ignore[union-attr]
        meter.start()
        start = self.step_start = time.perf_counter()
        for _ in range(1 if lockstep else messages):
            send(TEXT, payload)
        try:
            await asyncio.wait_for(self.done, timeout)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        end = max(self.finished_at) if not timed_out else time.perf_counter()
        elapsed = end - start
        cpu = meter.stop()
        delivered = sum(c.received for c in self.receivers)
        # Burst: when each receiver had everything. Lockstep: each broadcast's latency.
        spread = sorted(self.steps if lockstep else [t - start for t in self.finished_at])
        return {
            "messages": delivered,
            "expected": messages * n,
            "elapsed": round(elapsed, 4),
            "rate": delivered / elapsed,
            "all_ms": elapsed * 1e3,
            "p50_ms": percentile(spread, 50) * 1e3,
            "p99_ms": percentile(spread, 99) * 1e3,
            "errors": messages * n - delivered,
            "timed_out": timed_out,
            **cpu,
        }


async def run_scenario(args: argparse.Namespace) -> None:
    """Run one scenario against one server, printing a record per repetition."""
    meter = CpuMeter(args.server_pid)
    deadline = time.perf_counter() + args.max_seconds
    began = time.perf_counter()
    if args.scenario == "idle":
        for rep in range(args.reps):
            emit(type="rep", rep=rep, **(await idle(args, meter)))
    elif args.scenario == "echo":
        clients = await connect_all(args.url, args.clients)
        echo = Echo(clients, args.size)
        emit(type="ready", connections=len(clients), connect_s=time.perf_counter() - began)
        for rep in range(args.reps):
            if rep:
                await asyncio.sleep(args.pause)
            result = await echo.run(args.warmup, args.duration, meter)
            emit(type="rep", rep=rep, **result)
            if time.perf_counter() > deadline:
                break
        await close_all(clients)
    else:
        receivers = await connect_all(args.url, args.receivers)
        (sender,) = await connect_all(args.url, 1)
        connect_s = time.perf_counter() - began
        await asyncio.sleep(0.05)  # let the server finish registering everyone
        fan = Broadcast(sender, receivers)
        # Warm-up: a quarter of a repetition, not reported.
        lockstep = args.lockstep
        await fan.run(max(1, args.messages // 4), args.size, meter, args.timeout, lockstep=lockstep)
        emit(type="ready", connections=len(receivers) + 1, connect_s=connect_s)
        for rep in range(args.reps):
            await asyncio.sleep(args.pause)
            result = await fan.run(args.messages, args.size, meter, args.timeout, lockstep=lockstep)
            emit(type="rep", rep=rep, **result)
            if result["timed_out"] or time.perf_counter() > deadline:
                break
        await close_all([*receivers, sender])


async def main(args: argparse.Namespace) -> int:
    if not args.stdin:
        await run_scenario(args)
        emit(type="done")
        return 0
    # Serve the runner: one line of command-line arguments in, records out, until EOF.
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return 0
        try:
            await run_scenario(parse_args(json.loads(line)))
        except Exception as exc:  # reported to the runner, which carries on
            emit(type="error", message=f"{type(exc).__name__}: {exc}")
        emit(type="done")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stdin", action="store_true", help="take argument lists as JSON lines")
    p.add_argument("--url")
    p.add_argument("--scenario", choices=("echo", "broadcast", "idle"), default="echo")
    p.add_argument("--server-pid", type=int, default=None)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.1, help="seconds between repetitions")
    p.add_argument("--max-seconds", type=float, default=60.0, help="start no repetition after")
    p.add_argument("--size", type=int, default=32, help="message size in bytes")
    p.add_argument("--clients", type=int, default=1, help="echo: concurrent clients")
    p.add_argument("--warmup", type=float, default=0.2, help="echo: unmeasured seconds")
    p.add_argument("--duration", type=float, default=1.0, help="echo: measured seconds")
    p.add_argument("--receivers", type=int, default=100, help="broadcast: receivers")
    p.add_argument("--messages", type=int, default=100, help="broadcast: messages sent")
    p.add_argument("--lockstep", action="store_true", help="broadcast: one message at a time")
    p.add_argument("--timeout", type=float, default=20.0, help="broadcast: give up after")
    p.add_argument("--connections", type=int, default=10_000, help="idle: connections")
    p.add_argument("--connect-cap", type=float, default=60.0, help="idle: connect for at most")
    p.add_argument("--settle", type=float, default=1.0, help="idle: seconds before measuring")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle: measured silence")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runner: Callable[[Any], int] = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 (optional)
        except ImportError:
            print("uvloop is not installed; using asyncio", file=sys.stderr)
        else:
            runner = uvloop.run
    try:
        return runner(main(args))
    except Exception as exc:  # reported to the runner, which carries on
        emit(type="error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(run())
