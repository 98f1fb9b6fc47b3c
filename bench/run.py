"""Benchmark ikisocket against other Python WebSocket servers, in one command.

::

    python bench/run.py            # full run, about 5 minutes on 2 cores
    python bench/run.py --quick    # fewer and shorter cells, under a minute
    python bench/run.py --profile  # py-spy profile of our server under load

Every server (``bench/servers/*.py``) runs as its own process on a free
loopback port; the same load generator (``bench/loadgen.py``, picows clients
on uvloop, another process) drives each of them. Each cell is repeated
``--reps`` times, and the repetitions are interleaved across servers, so a burst
of load from something else on a shared machine hits one repetition of every
server rather than every repetition of one. The tables show medians, and ratios
to ikisocket on its asyncio adapter with the default loop ("ours").

Results (a JSON dump and the Markdown tables) go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import compiled

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVERS_DIR = HERE / "servers"
RESULTS = HERE / "results"
OURS = "ikisocket/asyncio"
#: A generator above this share of one core may be what limits the number.
GEN_BOUND = 0.9
VERSIONED = (
    "ikisocket",
    "wsproto",
    "h11",
    "websockets",
    "aiohttp",
    "picows",
    "uvloop",
    "trio",
    "anyio",
    "uvicorn",
    "py-spy",
)


@dataclass(frozen=True)
class ServerSpec:
    """A server to measure: its script, its event loop and what it imports."""

    name: str
    script: str
    loop: str
    requires: tuple[str, ...]
    #: Where ``script`` lives (a ``--baseline`` row: the old revision's copy).
    servers_dir: Path = SERVERS_DIR
    #: Put first on ``PYTHONPATH`` (ours: the working tree's ``src/``, or the old revision's).
    src: Path | None = None
    #: A ``--baseline`` row: the name of the row it is the old revision of.
    baseline_of: str | None = None

    @property
    def ours(self) -> bool:
        """An ikisocket row (its server reports which ``ikisocket_core`` it imported)."""
        return self.name.startswith("ikisocket")

    def missing(self) -> str | None:
        """The first required module that cannot be found, if any."""
        for module in self.requires:
            try:
                if importlib.util.find_spec(module) is None:
                    return module
            except ModuleNotFoundError:
                return module
        return None


SERVERS = (
    ServerSpec(
        OURS, "ikisocket_asyncio.py", "asyncio", ("ikisocket_adapters.asyncio",), src=REPO / "src"
    ),
    ServerSpec("ikisocket/uvloop", "ikisocket_asyncio.py", "uvloop", ("uvloop",), src=REPO / "src"),
    # The compiled build (mypyc) of the working tree, built by bench/compiled.py.
    ServerSpec(
        "ikisocket+mypyc/asyncio",
        "ikisocket_asyncio.py",
        "asyncio",
        ("ikisocket_adapters.asyncio",),
        src=compiled.SITE,
    ),
    ServerSpec(
        "ikisocket+mypyc/uvloop", "ikisocket_asyncio.py", "uvloop", ("uvloop",), src=compiled.SITE
    ),
    ServerSpec(
        "ikisocket+mypyc/trio",
        "ikisocket_trio.py",
        "trio",
        ("ikisocket_adapters.trio", "trio"),
        src=compiled.SITE,
    ),
    ServerSpec(
        "ikisocket+mypyc/anyio",
        "ikisocket_anyio.py",
        "asyncio",
        ("ikisocket_adapters.anyio", "anyio"),
        src=compiled.SITE,
    ),
    ServerSpec(
        "ikisocket+mypyc/uvicorn",
        "ikisocket_uvicorn.py",
        "uvloop",
        ("ikisocket_adapters.asgi", "uvicorn", "uvloop"),
        src=compiled.SITE,
    ),
    ServerSpec(
        "ikisocket/trio",
        "ikisocket_trio.py",
        "trio",
        ("ikisocket_adapters.trio", "trio"),
        src=REPO / "src",
    ),
    ServerSpec(
        "ikisocket/anyio",
        "ikisocket_anyio.py",
        "asyncio",
        ("ikisocket_adapters.anyio", "anyio"),
        src=REPO / "src",
    ),
    ServerSpec(
        "ikisocket/anyio-trio",
        "ikisocket_anyio.py",
        "trio",
        ("ikisocket_adapters.anyio", "anyio", "trio"),
        src=REPO / "src",
    ),
    # Behind uvicorn (wsproto, uvloop as uvicorn picks it when installed), and the floor:
    # a hand-written ASGI app on the same uvicorn.
    ServerSpec(
        "ikisocket/uvicorn",
        "ikisocket_uvicorn.py",
        "uvloop",
        ("ikisocket_adapters.asgi", "uvicorn", "uvloop"),
        src=REPO / "src",
    ),
    ServerSpec(
        "uvicorn+wsproto", "uvicorn_raw_asgi.py", "uvloop", ("uvicorn", "wsproto", "uvloop")
    ),
    ServerSpec("websockets", "websockets_server.py", "asyncio", ("websockets.asyncio.server",)),
    ServerSpec("aiohttp", "aiohttp_server.py", "asyncio", ("aiohttp",)),
    ServerSpec("picows", "picows_server.py", "asyncio", ("picows",)),
    ServerSpec("picows/uvloop", "picows_server.py", "uvloop", ("picows", "uvloop")),
)


@dataclass(frozen=True)
class Cell:
    """One scenario with its parameters: a column of the results."""

    scenario: str  # "echo", "broadcast" or "idle"
    clients: int = 1  # echo: concurrent clients; broadcast: receivers; idle: connections
    size: int = 32
    messages: int = 0  # broadcast: messages the sender sends per repetition
    lockstep: bool = False  # broadcast: one message at a time (else a burst)

    @property
    def label(self) -> str:
        if self.scenario == "idle":
            return f"idle {self.clients:,}"
        if self.scenario == "echo":
            size = f"{self.size // 1024} KiB" if self.size >= 1024 else f"{self.size} B"
            return f"echo {self.clients}x{size}"
        return f"fan-out {self.clients} {'lockstep' if self.lockstep else 'burst'}"

    def loadgen_args(self, duration: float, warmup: float, timeout: float) -> list[str]:
        args = ["--scenario", self.scenario, "--size", str(self.size)]
        if self.scenario == "idle":
            # duration: the measured silence; timeout: how long connecting may take.
            args += ["--connections", str(self.clients), "--idle-seconds", str(duration)]
            args += ["--connect-cap", str(timeout)]
        elif self.scenario == "echo":
            args += ["--clients", str(self.clients)]
            args += ["--duration", str(duration), "--warmup", str(warmup)]
        else:
            args += ["--receivers", str(self.clients), "--messages", str(self.messages)]
            args += ["--timeout", str(timeout)]
            if self.lockstep:
                args.append("--lockstep")
        return args


FULL_CELLS = (
    Cell("echo", 1, 32),
    Cell("echo", 64, 32),
    Cell("echo", 1, 4096),
    Cell("echo", 64, 4096),
    Cell("echo", 1, 256 * 1024),  # a large message: unmasking and copies, not per-message work
    Cell("broadcast", 100, 32, messages=200),
    Cell("broadcast", 1000, 32, messages=50),
    Cell("broadcast", 100, 32, messages=100, lockstep=True),
    Cell("broadcast", 1000, 32, messages=20, lockstep=True),
    Cell("idle", 10_000),
)
QUICK_CELLS = (
    Cell("echo", 1, 32),
    Cell("echo", 64, 32),
    Cell("broadcast", 100, 32, messages=50),
    Cell("broadcast", 100, 32, messages=20, lockstep=True),
    Cell("idle", 10_000),
)


@dataclass
class Running:
    """A started server process."""

    spec: ServerSpec
    mode: str
    proc: subprocess.Popen[str]
    port: int
    log: Path
    imported: str | None = None  # ours: the ikisocket_core file the server imported


@dataclass
class Results:
    """Every repetition's record, by server name and cell label."""

    reps: dict[tuple[str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    imported: dict[str, str] = field(default_factory=dict)
    #: ``os.getloadavg()`` after each cell: the machine's load during the run.
    loads: list[tuple[str, tuple[float, float, float]]] = field(default_factory=list)


#: Medians by server name, then cell label.
Table = dict[str, dict[str, dict[str, Any]]]
#: What the tables show the median of, for a load cell and for the idle cell.
LOAD_FIELDS = ("rate", "p50_ms", "p99_ms", "all_ms", "server_cpu", "gen_cpu", "server_us", "gen_us")
IDLE_FIELDS = (
    "connections",
    "target",
    "connect_s",
    "connect_rate",
    "connect_us",
    "kib_per_conn",
    "rss_before_kib",
    "rss_open_kib",
    "idle_cpu",
    "gen_idle_cpu",
)
#: A before/now ratio of CPU per message above this is flagged as a regression.
WORSE = 1.05


# -- processes ------------------------------------------------------------------------------


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 16
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_line(stream: IO[str], timeout: float) -> str | None:
    """One line from a child's stdout, or ``None`` if none came within ``timeout``."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        return None
    return stream.readline()


#: Where the processes run (unless ``--no-pin``, where there are two cores or more): every
#: server on the last core, the load generator on the first. Unpinned, the scheduler may put
#: both on one core for a while, or move a server between cores mid-repetition, and that
#: server's CPU per message grows with the cache it loses (any server, either way). Empty:
#: not pinned.
PIN: dict[str, int] = {}


def pin(pid: int, role: str) -> None:
    """Keep process ``pid`` on its core (``role``: ``"server"`` or ``"load"``), if pinning."""
    if PIN:
        with contextlib.suppress(OSError):  # gone already, or not allowed: left unpinned
            os.sched_setaffinity(pid, {PIN[role]})


def pinning(wanted: bool) -> dict[str, int]:
    """The cores to pin to: the first and the last usable ones, if ``wanted`` and possible."""
    if not wanted or not hasattr(os, "sched_getaffinity"):
        return {}
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {}
    return {"load": cores[0], "server": cores[-1]}


def launch(
    spec: ServerSpec, mode: str, logs: Path, tag: str = ""
) -> tuple[subprocess.Popen[str], Path]:
    """Start a server through ``servers/_launch.py``, which logs what ours imports."""
    log = logs / f"{spec.name.replace('/', '-')}-{tag or mode}.log"
    cmd = [sys.executable, str(SERVERS_DIR / "_launch.py")]
    if spec.ours:
        cmd += ["--probe", "ikisocket_core"]
    cmd += [str(spec.servers_dir / spec.script), "--mode", mode, "--loop", spec.loop]
    env = dict(os.environ)
    if spec.src is not None:
        # Ahead of site-packages (and of an editable install of another checkout).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(spec.src), env.get("PYTHONPATH"))))
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    pin(proc.pid, "server")  # (before it imports: its threads, if any, inherit the core)
    return proc, log


def imported_core(log: Path) -> str | None:
    """The ``ikisocket_core`` file a server reported importing (``PROBE`` line of its log)."""
    for line in log.read_text().splitlines():
        if line.startswith("PROBE ikisocket_core "):
            return line.split(" ", 2)[2]
    return None


def await_port(
    spec: ServerSpec, mode: str, proc: subprocess.Popen[str], log: Path
) -> Running | str:
    """Wait for a server's port; return an error message if it does not come."""
    assert proc.stdout is not None
    line = read_line(proc.stdout, 30.0)
    if not line or not line.startswith("PORT "):
        stop(proc)
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        return f"did not start: {tail[0][:120]}"
    imported = imported_core(log) if spec.ours else None
    if spec.ours and spec.src is not None:
        expected = spec.src.resolve() / "ikisocket_core"
        if imported is None or not Path(imported).resolve().is_relative_to(expected):
            stop(proc)
            return f"imported ikisocket_core from {imported}, not from {expected}"
    return Running(spec, mode, proc, int(line.split()[1]), log, imported)


def start_server(spec: ServerSpec, mode: str, logs: Path, tag: str = "") -> Running | str:
    """Start a server and wait for its port; return an error message on failure."""
    return await_port(spec, mode, *launch(spec, mode, logs, tag))


def start_servers(specs: Sequence[ServerSpec], mode: str, logs: Path) -> list[Running | str]:
    """Start several servers at once (their imports overlap) and wait for every port."""
    launched = [launch(spec, mode, logs) for spec in specs]
    return [await_port(spec, mode, *pl) for spec, pl in zip(specs, launched, strict=True)]


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Lines:
    """Lines from a pipe with a timeout, buffered here and not in a ``TextIOWrapper``.

    ``select()`` on a file object's descriptor says nothing about lines its
    buffer already holds: when the generator writes its last record and
    ``done`` at once, ``readline()`` takes both into the buffer and a second
    ``select()`` would wait for a line that has already arrived.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def read(self, timeout: float) -> str | None:
        """The next line; ``""`` at end of file, ``None`` if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return ""
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode() + "\n"


class LoadGen:
    """The load generator process, kept up for the whole run (restarted if it hangs)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lines = Lines(-1)

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            cmd = [sys.executable, str(HERE / "loadgen.py"), "--stdin"]
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            pin(self.proc.pid, "load")
            assert self.proc.stdout is not None
            self.lines = Lines(self.proc.stdout.fileno())
        return self.proc

    def run(self, server: Running, args: list[str], timeout: float) -> list[dict[str, Any]]:
        """Run one scenario against ``server``; return the generator's records."""
        proc = self._start()
        assert proc.stdin is not None
        assert proc.stdout is not None
        url = f"ws://127.0.0.1:{server.port}/ws"
        argv = ["--url", url, "--server-pid", str(server.proc.pid), *args]
        proc.stdin.write(json.dumps(argv) + "\n")
        proc.stdin.flush()
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.read(max(0.0, deadline - time.monotonic()))
            if line is None or not line:
                self.close()
                why = "timed out" if line is None else "exited"
                records.append({"type": "error", "message": f"load generator {why}"})
                return records
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if record.get("type") == "done":
                    return records
                records.append(record)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                stop(self.proc)
            self.proc = None


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How long and how often each cell runs."""

    reps: int
    duration: float  # echo: measured seconds per repetition
    warmup: float  # echo: unmeasured seconds first
    cap: float  # broadcast: a repetition gives up after this many seconds
    idle_seconds: float = 5.0  # idle: the measured silence
    idle_cap: float = 60.0  # idle: connecting gives up after this many seconds
    idle_reps: int = 1  # idle: repetitions (each on a freshly started server)


def measure(
    specs: Sequence[ServerSpec],
    cells: Sequence[Cell],
    plan: Plan,
    *,
    logs: Path,
    results: Results,
    gen: LoadGen,
) -> None:
    """Run every cell ``reps`` times on every server, interleaving the servers."""
    for mode in ("echo", "broadcast"):
        mode_cells = [c for c in cells if c.scenario == mode]
        if not mode_cells:
            continue
        running: list[Running] = []
        try:
            for spec, started in zip(specs, start_servers(specs, mode, logs), strict=True):
                if isinstance(started, str):
                    for cell in mode_cells:
                        results.failures[spec.name, cell.label] = started
                    print(f"  {spec.name}: {started}", flush=True)
                else:
                    running.append(started)
                    if started.imported:
                        results.imported[spec.name] = started.imported
            for cell in mode_cells:
                t0 = time.perf_counter()
                for rep in range(plan.reps):
                    # Rotate the order so no server always goes first after a pause.
                    shift = rep % max(1, len(running))
                    for server in running[shift:] + running[:shift]:
                        key = server.spec.name, cell.label
                        if key in results.failures:
                            continue
                        run_cell(server, cell, plan, results, gen)
                results.loads.append((cell.label, os.getloadavg()))
                print(
                    f"  {cell.label}: {time.perf_counter() - t0:.1f} s "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        finally:
            for server in running:
                stop(server.proc)
    for cell in (c for c in cells if c.scenario == "idle"):
        measure_idle(specs, cell, plan, logs=logs, results=results, gen=gen)


def measure_idle(
    specs: Sequence[ServerSpec],
    cell: Cell,
    plan: Plan,
    *,
    logs: Path,
    results: Results,
    gen: LoadGen,
) -> None:
    """The idle cell: each repetition on a freshly started server, one server at a time.

    A fresh process, so the RSS growth is the connections' and not memory an
    earlier cell left in the allocator; one at a time, so nothing else of ours
    runs while a server's silence is measured.
    """
    t0 = time.perf_counter()
    for rep in range(plan.idle_reps):
        shift = rep % max(1, len(specs))
        for spec in [*specs[shift:], *specs[:shift]]:
            key = spec.name, cell.label
            if key in results.failures:
                continue
            started = start_server(spec, "echo", logs, tag="idle")
            if isinstance(started, str):
                results.failures[key] = started
                print(f"  {spec.name}: {started}", flush=True)
                continue
            if started.imported:
                results.imported[spec.name] = started.imported
            try:
                run_cell(started, cell, plan, results, gen)
            finally:
                stop(started.proc)
            last = results.reps.get(key, [{}])[-1]
            print(
                f"    {spec.name}: {last.get('connections')} connections in "
                f"{last.get('connect_s')} s, idle CPU {last.get('idle_cpu')}",
                flush=True,
            )
    results.loads.append((cell.label, os.getloadavg()))
    print(f"  {cell.label}: {time.perf_counter() - t0:.1f} s (load {os.getloadavg()[0]:.1f})")


def run_cell(server: Running, cell: Cell, plan: Plan, results: Results, gen: LoadGen) -> None:
    key = server.spec.name, cell.label
    if server.proc.poll() is not None:
        results.failures[key] = f"server exited ({server.proc.returncode}); see {server.log}"
        return
    if cell.scenario == "idle":
        args = [*cell.loadgen_args(plan.idle_seconds, 0, plan.idle_cap), "--reps", "1"]
        budget = 60.0 + plan.idle_seconds + plan.idle_cap
    else:
        args = [*cell.loadgen_args(plan.duration, plan.warmup, plan.cap), "--reps", "1"]
        budget = 30.0 + plan.duration + plan.warmup + 2 * plan.cap + cell.clients / 50
    for record in gen.run(server, args, timeout=budget):
        if record.get("type") == "rep":
            results.reps[key].append(record)
        elif record.get("type") == "error":
            results.failures[key] = str(record.get("message"))


# -- reporting ------------------------------------------------------------------------------


def median_of(records: list[dict[str, Any]], name: str) -> float | None:
    values = [r[name] for r in records if r.get(name) is not None]
    return statistics.median(values) if values else None


def human(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e4:
        return f"{rate / 1e3:.0f}k"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"


def summarise(specs: Sequence[ServerSpec], cells: Sequence[Cell], results: Results) -> Table:
    """Medians per server and cell, with the ratio to ours."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in specs:
        row: dict[str, dict[str, Any]] = {}
        for cell in cells:
            key = spec.name, cell.label
            records = results.reps.get(key, [])
            if not records:
                row[cell.label] = {"failed": results.failures.get(key, "no result")}
                continue
            for r in records:
                for who in ("server", "gen"):
                    share = r.get(f"{who}_cpu")
                    if share is not None and r.get("messages"):
                        # CPU microseconds per message: robust to a busy machine's scheduling.
                        r[f"{who}_us"] = share * r["elapsed"] / r["messages"] * 1e6
            summary: dict[str, Any] = {"reps": len(records)}
            fields = IDLE_FIELDS if cell.scenario == "idle" else LOAD_FIELDS
            for name in fields:
                summary[name] = median_of(records, name)
            if cell.scenario == "idle":
                summary["first_error"] = next(
                    (r["first_error"] for r in records if r.get("first_error")), ""
                )
            summary["errors"] = sum(int(r.get("errors", 0)) for r in records)
            summary["timed_out"] = sum(bool(r.get("timed_out")) for r in records)
            if key in results.failures:
                summary["warning"] = results.failures[key]
            row[cell.label] = summary
        table[spec.name] = row
    for cell in cells:
        if cell.scenario == "idle":
            continue
        ours = table.get(OURS, {}).get(cell.label, {})
        for row in table.values():
            s = row[cell.label]
            if ours.get("rate") and s.get("rate"):
                s["ratio"] = s["rate"] / ours["rate"]
            if ours.get("server_us") and s.get("server_us"):
                s["cpu_ratio"] = s["server_us"] / ours["server_us"]
    return table


def compare(
    specs: Sequence[ServerSpec], cells: Sequence[Cell], table: Table, results: Results
) -> list[dict[str, Any]]:
    """Before vs now: each ``--baseline`` row against the row it is the old revision of.

    Besides the ratio of the medians, ``paired`` has the ratio of each
    repetition to the other's repetition of the same round: both ran within
    seconds of each other, so their spread shows how much of a difference is
    the machine's noise. Call after :func:`summarise` (it fills ``server_us``).
    """
    out: list[dict[str, Any]] = []
    for spec in specs:
        now_name = spec.baseline_of
        if now_name is None or now_name not in table or spec.name not in table:
            continue
        for cell in cells:
            before, now = table[spec.name][cell.label], table[now_name][cell.label]
            entry: dict[str, Any] = {"before": spec.name, "now": now_name, "cell": cell.label}
            if cell.scenario == "idle":
                for name in ("idle_cpu", "kib_per_conn", "connect_us", "connections"):
                    entry[f"before_{name}"] = before.get(name)
                    entry[f"now_{name}"] = now.get(name)
                out.append(entry)
                continue
            b_us, n_us = before.get("server_us"), now.get("server_us")
            b_rate, n_rate = before.get("rate"), now.get("rate")
            entry.update(before_us=b_us, now_us=n_us, before_rate=b_rate, now_rate=n_rate)
            if b_us and n_us:
                entry["cpu_ratio"] = n_us / b_us
                entry["worse"] = n_us / b_us > WORSE
            if b_rate and n_rate:
                entry["rate_ratio"] = n_rate / b_rate
            pairs = zip(
                results.reps.get((now_name, cell.label), []),
                results.reps.get((spec.name, cell.label), []),
                strict=False,
            )
            entry["paired"] = sorted(
                n["server_us"] / b["server_us"]
                for n, b in pairs
                if n.get("server_us") and b.get("server_us")
            )
            out.append(entry)
    return out


def _variant(name: str) -> str:
    return name.split("/", 1)[-1]


def compare_markdown(rows: list[dict[str, Any]], cells: Sequence[Cell]) -> list[str]:
    """The before-vs-now table and one summary line per cell."""
    if not rows:
        return []
    before = sorted({r["before"].split("/", 1)[0] for r in rows})
    out = [
        f"**Before vs now: {', '.join(before)} (before) against the working tree (now), "
        "measured in the same run, interleaved. Server CPU per message (lower is better) "
        "and throughput; now/before**",
        "",
        "| adapter | cell | CPU/msg before -> now (us) | now/before | per repetition "
        "| throughput before -> now | now/before |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    load = [r for r in rows if "before_us" in r]
    for r in load:
        cpu = ratio = paired = rate = rate_ratio = "n/a"
        if r.get("before_us") and r.get("now_us"):
            cpu = f"{_us(r['before_us'])} -> {_us(r['now_us'])}"
            ratio = f"{r['cpu_ratio']:.2f}x" + (" **worse**" if r.get("worse") else "")
        if r.get("paired"):
            paired = f"{r['paired'][0]:.2f}-{r['paired'][-1]:.2f}x"
        if r.get("before_rate") and r.get("now_rate"):
            rate = f"{human(r['before_rate'])} -> {human(r['now_rate'])}"
            rate_ratio = f"{r['rate_ratio']:.2f}x"
        out.append(
            f"| {_variant(r['now'])} | {r['cell']} | {cpu} | {ratio} | {paired} "
            f"| {rate} | {rate_ratio} |"
        )
    out += [
        "",
        f"Before vs now, per cell (CPU per message now/before; > {WORSE:.2f}x is flagged):",
        "",
    ]
    for cell in cells:
        mine = [r for r in rows if r["cell"] == cell.label]
        if not mine:
            continue
        if cell.scenario == "idle":
            parts = []
            for r in mine:
                cpu = _pct(r["before_idle_cpu"]) + " -> " + _pct(r["now_idle_cpu"])
                kib = _num(r["before_kib_per_conn"]) + " -> " + _num(r["now_kib_per_conn"])
                parts.append(f"{_variant(r['now'])} idle CPU {cpu}, KiB/connection {kib}")
            out.append(f"- {cell.label}: " + "; ".join(parts))
            continue
        parts = [
            f"{_variant(r['now'])} " + (f"{r['cpu_ratio']:.2f}x" if r.get("cpu_ratio") else "n/a")
            for r in mine
        ]
        worse = [f"{_variant(r['now'])} {r['cpu_ratio']:.2f}x" for r in mine if r.get("worse")]
        flag = f" -- **worse than {WORSE - 1:.0%}: {', '.join(worse)}**" if worse else ""
        out.append(f"- {cell.label}: " + ", ".join(parts) + flag)
    return [*out, ""]


def _us(value: float) -> str:
    """Microseconds: two decimals under 10 (a fan-out delivery costs well under one)."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.2f} %"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def idle_markdown(
    specs: Sequence[ServerSpec], cell: Cell, table: Table, plan_s: float
) -> list[str]:
    """The idle cell: CPU while nothing happens, memory per connection, the connecting."""
    out = [
        f"**Idle: {cell.clients:,} connections opened, then nothing sent for {plan_s:g} s "
        "(keepalive pings off). Server CPU while idle (% of one core), RSS growth per "
        "connection, and the connecting (medians over the repetitions, a fresh server each)**",
        "",
        "| server | connections | idle CPU | KiB/connection | RSS before -> open (MiB) "
        "| connecting: s (conn/s) | server CPU per connect (us) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for spec in specs:
        s = table[spec.name][cell.label]
        if "failed" in s:
            out.append(f"| {spec.name} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        reached = f"{s['connections']:,.0f}"
        if s.get("connections") != s.get("target"):
            reached += f" of {s['target']:,.0f}!"
        rss = "n/a"
        if s.get("rss_before_kib") is not None and s.get("rss_open_kib") is not None:
            rss = f"{s['rss_before_kib'] / 1024:.0f} -> {s['rss_open_kib'] / 1024:.0f}"
        rate = f"{s['connect_s']:.1f} ({human(s['connect_rate'] or 0)})"
        cols = [
            reached,
            _pct(s.get("idle_cpu")),
            _num(s.get("kib_per_conn")),
            rss,
            rate,
            _num(s.get("connect_us"), 0),
        ]
        out.append(f"| {spec.name} | " + " | ".join(cols) + " |")
    return [*out, ""]


def _throughput(cell: Cell, s: dict[str, Any]) -> str:
    mark = ""
    if s.get("gen_cpu") is not None and s["gen_cpu"] >= GEN_BOUND:
        mark += "†"
    if s.get("errors") or s.get("warning"):
        mark += "!"
    ratio = f" ({s['ratio']:.2f}x)" if s.get("ratio") else ""
    return f"{human(s['rate'])}{ratio}{mark}"


def _latency(cell: Cell, s: dict[str, Any]) -> str:
    if cell.scenario == "echo" or cell.lockstep:
        return f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f}"
    return f"{s['p50_ms']:.0f} / {s['all_ms']:.0f}"


def _cost(cell: Cell, s: dict[str, Any]) -> str:
    if s.get("server_us") is None:
        return "n/a"
    ratio = f" ({s['cpu_ratio']:.2f}x)" if s.get("cpu_ratio") else ""
    return f"{_us(s['server_us'])}{ratio}"


def _shares(cell: Cell, s: dict[str, Any]) -> str:
    if s.get("server_cpu") is None:
        return "n/a"
    return f"{s['server_cpu']:.2f} / {s['gen_cpu']:.2f}"


TABLES = (
    (
        "Throughput (median; echo: round trips/s; fan-out: deliveries/s) and ratio to ours",
        _throughput,
    ),
    (
        "Latency in ms (medians over the repetitions). Echo: round trip p50 / p99; "
        "burst: when a receiver had every message, p50 / last; "
        "lockstep: one broadcast to the last receiver, p50 / p99",
        _latency,
    ),
    (
        "Server CPU per message in microseconds (median; lower is better) and ratio to ours",
        _cost,
    ),
    ("CPU, share of one core (server / load generator)", _shares),
)


def markdown(
    specs: Sequence[ServerSpec],
    all_cells: Sequence[Cell],
    table: Table,
    versus: list[dict[str, Any]] | None = None,
    idle_s: float = 5.0,
) -> str:
    """The result tables as Markdown."""
    names = [s.name for s in specs]
    cells = [c for c in all_cells if c.scenario != "idle"]
    out: list[str] = []
    for title, show in TABLES if cells else ():
        out += [title, "", "| server | " + " | ".join(c.label for c in cells) + " |"]
        out.append("|---|" + "---:|" * len(cells))
        for name in names:
            row = [table[name][c.label] for c in cells]
            cols = ["n/a" if "failed" in s else show(c, s) for c, s in zip(cells, row, strict=True)]
            out.append(f"| {name} | " + " | ".join(cols) + " |")
        out.append("")
    costs = []
    for cell in cells:
        known = [table[n][cell.label].get("gen_us") for n in names]
        spent = [c for c in known if c]
        if spent:
            costs.append(f"{cell.label} {min(spent):.1f}-{max(spent):.1f}")
    if costs:
        out += [
            "Load generator CPU per message in microseconds, least-most over the servers "
            "(it depends on how the server batches its writes): " + "; ".join(costs),
            "",
        ]
    if cells:
        out.append(
            f"† the load generator used {GEN_BOUND:.0%}+ of a core: a lower bound. "
            "! errors (see notes)."
        )
        out.append("")
    for cell in all_cells:
        if cell.scenario == "idle":
            out += idle_markdown(specs, cell, table, idle_s)
    out += compare_markdown(versus or [], all_cells)
    notes = []
    for name in names:
        for cell in all_cells:
            s = table[name][cell.label]
            if s.get("first_error"):
                notes.append(f"- {name}, {cell.label}: first failed connect: {s['first_error']}")
            if "failed" in s:
                notes.append(f"- {name}, {cell.label}: {s['failed']}")
            elif s.get("errors") or s.get("warning"):
                what = (
                    "connections not made or lost"
                    if cell.scenario == "idle"
                    else ("messages missing or wrong")
                )
                detail = s.get("warning") or f"{s['errors']:.0f} {what}"
                if s.get("timed_out"):
                    detail += f" ({s['timed_out']} repetition(s) cut off by the time cap)"
                notes.append(f"- {name}, {cell.label}: {detail}")
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


def render(path: Path) -> str:
    """The Markdown of a run saved by :func:`main` (``bench/results/bench-*.json``)."""
    dump = json.loads(path.read_text())
    fields = {"scenario", "clients", "size", "messages", "lockstep"}
    cells = [Cell(**{k: v for k, v in c.items() if k in fields}) for c in dump["cells"]]
    table: Table = dump["summary"]
    known = {s.name: s for s in SERVERS}
    specs = [known.get(name) or ServerSpec(name, "", "", ()) for name in table]
    text = markdown(specs, cells, table, dump.get("compare"), dump.get("idle_s", 5.0))
    return describe(dump["environment"]) + "\n\n" + text


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def extract_baseline(rev: str) -> tuple[str, str, Path]:
    """Extract ``rev``'s ``src/`` and ``bench/servers/`` under ``bench/results/baseline-<short>/``.

    Done once per commit (``.commit`` holds the full hash); the old servers then
    run from there with the old ``src/`` first on ``PYTHONPATH``. A revision
    without ``bench/servers/`` runs today's server scripts on its ``src/``.
    Returns the short hash, the full hash and the directory.
    """
    full = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    short = git("rev-parse", "--short", full)
    root = RESULTS / f"baseline-{short}"
    stamp = root / ".commit"
    if not (stamp.exists() and stamp.read_text().strip() == full):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for paths in (("src", "bench/servers"), ("src",)):
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", full, *paths], capture_output=True, check=False
            )
            if archive.returncode == 0:
                break
        else:
            raise SystemExit(f"git archive {full} src: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
        stamp.write_text(full + "\n")
    return short, full, root


def with_baseline(specs: Sequence[ServerSpec], short: str, root: Path) -> list[ServerSpec]:
    """Each of our rows followed by the same server at the old revision."""
    servers = root / "bench" / "servers"
    out: list[ServerSpec] = []
    for spec in specs:
        out.append(spec)
        if spec.ours and spec.src == REPO / "src":  # the +mypyc rows have no "before"
            out.append(
                dataclasses.replace(
                    spec,
                    name=f"ikisocket@{short}/{_variant(spec.name)}",
                    servers_dir=servers if (servers / spec.script).exists() else SERVERS_DIR,
                    src=root / "src",
                    baseline_of=spec.name,
                )
            )
    return out


def environment(argv: Sequence[str]) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "-"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "pinned": dict(PIN),
        "loadavg": os.getloadavg(),
        "versions": versions,
        "command": " ".join(["python", "bench/run.py", *argv]),
    }


def _pinned(pinned: dict[str, int] | None) -> str:
    if not pinned:
        return "not pinned"
    return f"servers on core {pinned['server']}, load generator on core {pinned['load']}"


def describe(env: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    load = ", ".join(f"{x:.1f}" for x in env["loadavg"])
    text = (
        f"{env['date']}; Python {env['python']} on {env['platform']}; "
        f"{env['cores']} x {env['cpu']}; {_pinned(env.get('pinned'))}; "
        f"load average at start {load}\n{versions}\n"
        f"command: {env['command']}"
    )
    if env.get("baseline"):
        b = env["baseline"]
        text += f"\nbaseline: {b['rev']} = {b['commit']} (src and servers in {b['dir']})"
    if env.get("loadavg_end"):
        ones = [x[1][0] for x in env.get("loadavg_during", [])]
        end = ", ".join(f"{x:.1f}" for x in env["loadavg_end"])
        text += f"\nload average at the end {end}"
        if ones:
            text += f"; 1-minute load after each cell {min(ones):.1f}-{max(ones):.1f}"
    for name, path in env.get("imported", {}).items():
        text += f"\n{name} imported {path}"
    return text


# -- profiling ------------------------------------------------------------------------------


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


PROFILE_LOADS = (
    ("echo-64x32", Cell("echo", 64, 32)),
    ("echo-64x4k", Cell("echo", 64, 4096)),
    ("fanout-1000-burst", Cell("broadcast", 1000, 32, messages=100)),
    ("fanout-1000-lockstep", Cell("broadcast", 1000, 32, messages=20, lockstep=True)),
)


def perf_split(pid: int, seconds: float, out: Path) -> str | None:
    """On-CPU samples by binary (kernel, libpython, extensions), with ``perf``, if installed."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    record = [perf, "record", "-e", "cpu-clock", "-F", "499", "-p", str(pid), "-o", str(out)]
    report = [perf, "report", "-i", str(out), "--stdio", "--sort", "dso", "-q"]
    try:
        subprocess.run(
            [*record, "--", "sleep", str(seconds)],
            capture_output=True,
            check=True,
            timeout=seconds + 30,
        )
        text = subprocess.run(report, capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].endswith("%"):
            name = fields[1].replace("[kernel.kallsyms]", "kernel")
            parts.append(f"{fields[0]} {name}")
    return ", ".join(parts[:6]) or None


def profile(spec: ServerSpec, seconds: float, logs: Path) -> int:
    """Record a server under echo and fan-out load with py-spy and print its hot spots."""
    spy = py_spy()
    if spy is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 1
    status = 0
    # Files of another row than ours are prefixed with its name (``ikisocket-604db55-asyncio-``).
    prefix = "" if spec.name == OURS else spec.name.replace("/", "-").replace("@", "-") + "-"
    for load, cell in PROFILE_LOADS:
        slug = prefix + load
        started = start_server(spec, cell.scenario, logs)
        if isinstance(started, str):
            print(f"{spec.name}: {started}", file=sys.stderr)
            return 1
        out = RESULTS / f"profile-{slug}.speedscope.json"
        span = 2 * seconds + 3  # py-spy, then perf
        args = cell.loadgen_args(span, 0.2, 20.0)
        if cell.scenario == "broadcast":
            args += ["--reps", "100000", "--pause", "0", "--max-seconds", str(span)]
        else:
            args += ["--reps", "1"]
        url = f"ws://127.0.0.1:{started.port}/ws"
        cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url, *args]
        spy_cmd = [spy, "record", "--pid", str(started.proc.pid), "--duration", str(int(seconds))]
        # --gil: sample only while Python code runs. On a busy machine a wall-clock
        # sample also lands in socket writes where the scheduler preempted the server
        # (the peer it just woke takes the core); perf below measures the kernel part.
        spy_cmd += ["--rate", "200", "--function", "--gil", "--format", "speedscope"]
        spy_cmd += ["--output", str(out)]
        split = None
        try:
            gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            assert gen.stdout is not None
            line = read_line(gen.stdout, 30.0)
            if not line or '"ready"' not in line:
                print(f"{slug}: the load generator did not start: {line!r}", file=sys.stderr)
                stop(gen)
                status = 1
                continue
            subprocess.run(spy_cmd, capture_output=True, check=True, timeout=seconds + 30)
            split = perf_split(started.proc.pid, seconds, RESULTS / f"perf-{slug}.data")
            output, _ = gen.communicate(timeout=span + 30)
        finally:
            stop(started.proc)
        reps = [json.loads(x) for x in output.splitlines() if '"rep"' in x]
        rate = statistics.median(r["rate"] for r in reps) if reps else float("nan")
        title = f"{spec.name}, {cell.label} ({human(rate)} msg/s while sampled)"
        report = hot_spots(out, title)
        if split:
            report += f"\n\nOn-CPU time by binary (perf): {split}"
        (RESULTS / f"profile-{slug}.md").write_text(report + "\n")
        print(report + "\n", flush=True)
    return status


def _stacks(path: Path) -> Iterator[tuple[list[str], float]]:
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    names = []
    for f in frames:
        file = str(f.get("file", ""))
        for marker in ("site-packages/", "/src/", "/lib/python"):
            if marker in file:
                file = file.split(marker, 1)[1]
                if marker == "/lib/python":
                    file = "stdlib/" + file.split("/", 1)[-1]
                break
        names.append(f"{f['name']} ({file}:{f.get('line', '?')})")
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            yield [names[i] for i in stack], float(weight)


def hot_spots(path: Path, title: str, top: int = 15) -> str:
    """The functions with the most samples: own (self) and with callees (total)."""
    samples = 0
    own: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    by_file: dict[str, float] = defaultdict(float)
    all_weight = 0.0
    for stack, weight in _stacks(path):
        if not stack:
            continue
        samples += 1
        all_weight += weight
        own[stack[-1]] += weight
        by_file[stack[-1].rsplit("(", 1)[1].split(":", 1)[0]] += weight
        for name in set(stack):
            total[name] += weight
    if not all_weight:
        return f"{title}: no samples"

    def rows(counts: dict[str, float]) -> list[str]:
        # speedscope weights are seconds; leaf last in each stack (py-spy's order).
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"| {100 * w / all_weight:5.1f} % | `{name}` |" for name, w in ranked]

    return "\n".join(
        [
            f"Profile of {title}: {samples} samples with the GIL held, {path.name}",
            "",
            "| self | function |",
            "|---:|---|",
            *rows(own),
            "",
            "| total | function |",
            "|---:|---|",
            *rows({k: v for k, v in total.items() if v < 0.97 * all_weight}),
            "",
            "| self | file |",
            "|---:|---|",
            *rows(by_file),
        ]
    )


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter cells (under a minute)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per cell (median shown)")
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place the servers and the load generator (default: each on a "
        "core of its own: servers on the last, the load generator on the first)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds per echo repetition")
    p.add_argument(
        "--servers",
        default="",
        help="comma-separated names to run (default all): " + ", ".join(s.name for s in SERVERS),
    )
    p.add_argument(
        "--scenarios",
        default="echo,broadcast,idle",
        help="comma-separated: echo, broadcast, idle (default all three)",
    )
    p.add_argument("--profile", action="store_true", help="profile our server with py-spy")
    p.add_argument("--profile-server", default=OURS, help="which server --profile records")
    p.add_argument("--profile-seconds", type=float, default=8.0)
    p.add_argument("--render", metavar="JSON", help="print the tables of a saved run again")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run our servers at git revision REV (e.g. 604db55), as 'before' rows",
    )
    p.add_argument("--connections", type=int, default=None, help="idle: connections to open")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle: measured silence")
    p.add_argument("--idle-cap", type=float, default=60.0, help="idle: seconds connecting may take")
    return p.parse_args(argv)


def choose(
    args: argparse.Namespace,
) -> tuple[list[ServerSpec], list[Cell], Plan, dict[str, str] | None] | str:
    """The servers, cells and plan the command line asks for (or why it cannot be run)."""
    wanted = [w.strip() for w in args.servers.split(",") if w.strip()]
    specs = [s for s in SERVERS if not wanted or s.name in wanted]
    unknown = set(wanted) - {s.name for s in SERVERS}
    if unknown:
        return f"unknown server(s): {', '.join(sorted(unknown))}"
    baseline = None
    if args.baseline:
        short, full, root = extract_baseline(args.baseline)
        baseline = {"rev": args.baseline, "commit": full, "short": short, "dir": str(root)}
        specs = with_baseline(specs, short, root)
    scenarios = {s.strip() for s in args.scenarios.split(",")}
    cells = [c for c in (QUICK_CELLS if args.quick else FULL_CELLS) if c.scenario in scenarios]
    if args.connections:
        cells = [
            dataclasses.replace(c, clients=args.connections) if c.scenario == "idle" else c
            for c in cells
        ]
    plan = Plan(
        reps=args.reps,
        duration=args.duration or (0.25 if args.quick else 1.0),
        warmup=0.1 if args.quick else 0.2,
        cap=4.0 if args.quick else 8.0,
        idle_seconds=args.idle_seconds,
        idle_cap=args.idle_cap,
        idle_reps=1 if args.quick else args.reps,
    )
    return specs, cells, plan, baseline


def unavailable(specs: Sequence[ServerSpec]) -> list[tuple[ServerSpec, str]]:
    """The rows that cannot run, and why: a library not installed, or no compiled build."""
    out = [(s, f"not installed ({s.missing()})") for s in specs if s.missing()]
    unbuilt = compiled.prepare() if any(s.src == compiled.SITE for s in specs) else None
    out += [(s, f"not built ({unbuilt})") for s in specs if unbuilt and s.src == compiled.SITE]
    return out


def profile_command(args: argparse.Namespace, logs: Path) -> int:
    """``--profile``: record ``--profile-server`` under load (see :func:`profile`)."""
    known: Sequence[ServerSpec] = SERVERS
    if args.baseline:  # --profile-server ikisocket@REV/asyncio profiles the old code
        short, _, root = extract_baseline(args.baseline)
        known = with_baseline(SERVERS, short, root)
    spec = next((s for s in known if s.name == args.profile_server), None)
    if spec is None:
        print(f"unknown server {args.profile_server!r}", file=sys.stderr)
        return 2
    unbuilt = compiled.prepare() if spec.src == compiled.SITE else None
    if unbuilt:
        print(unbuilt, file=sys.stderr)
        return 2
    seconds = args.profile_seconds if not args.quick else min(4.0, args.profile_seconds)
    return profile(spec, seconds, logs)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    raise_fd_limit()
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / "logs"
    logs.mkdir(exist_ok=True)
    if args.render:
        print(render(Path(args.render)))
        return 0
    PIN.update(pinning(args.pin))
    if args.profile:
        return profile_command(args, logs)
    chosen = choose(args)
    if isinstance(chosen, str):
        print(chosen, file=sys.stderr)
        return 2
    specs, cells, plan, baseline = chosen

    env = environment(argv)
    if baseline:
        env["baseline"] = baseline
    print(describe(env), flush=True)
    results = Results()
    skipped = unavailable(specs)
    for spec, why in skipped:
        print(f"  skipping {spec.name}: {why}", flush=True)
        for cell in cells:
            results.failures[spec.name, cell.label] = why
    started = time.perf_counter()
    runnable = [s for s in specs if s not in {spec for spec, _ in skipped}]
    gen = LoadGen()
    try:
        measure(runnable, cells, plan, logs=logs, results=results, gen=gen)
    finally:
        gen.close()
    env["elapsed_s"] = round(time.perf_counter() - started, 1)
    env["loadavg_end"] = os.getloadavg()
    env["loadavg_during"] = results.loads
    env["imported"] = results.imported

    table = summarise(specs, cells, results)
    versus = compare(specs, cells, table, results)
    text = markdown(specs, cells, table, versus, plan.idle_seconds)
    print(f"\n{text}\n\n{describe(env)}\n({env['elapsed_s']:.0f} s)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dump = {
        "environment": env,
        "cells": [c.__dict__ | {"label": c.label} for c in cells],
        "skipped": {s.name: m for s, m in skipped},
        "summary": table,
        "compare": versus,
        "idle_s": plan.idle_seconds,
        "reps": {f"{k[0]} | {k[1]}": v for k, v in results.reps.items()},
        "failures": {f"{k[0]} | {k[1]}": v for k, v in results.failures.items()},
    }
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(dump, indent=1) + "\n")
    (RESULTS / f"bench-{stamp}.md").write_text(describe(env) + "\n\n" + text + "\n")
    print(f"saved bench/results/bench-{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
