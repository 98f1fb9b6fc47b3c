"""Soak: churn thousands of connections against one server process, then check it is clean.

::

    python tests/soak/soak.py --adapter trio --minutes 2 [--actors 2000] [--out DIR]

(``make soak MINUTES=2 ADAPTER=trio`` runs this.) The server is ``server.py``
serving ``load_app.py`` in a subprocess, sampling itself each second (RSS,
open file descriptors, tasks, the hub's registry). ``--actors`` clients (see
``clients.churn``) connect, join rooms, chat, and leave cleanly, by TCP reset
or by misbehaving, over and over, for ``--minutes``. Then they stop, and the
soak checks that the server came back to where it started:

* the registry is empty, every connection had exactly one terminal event and
  no listener ran after it;
* open file descriptors are back to the start's count (:data:`FD_MARGIN`);
* RSS is back within :data:`RSS_MARGIN_KIB` of a *warm* start: the reading
  after a first wave of the same load (a fifth of the time, 20 s at least),
  and the interpreter holds no more than :data:`BLOCKS_MARGIN` more allocated
  blocks than then. Both readings are taken the same way, after every client
  left and the server's timers lapsed (:data:`TIMERS`), once the server
  collected garbage and asked the C allocator to hand free memory back
  (``malloc_trim``): without that, glibc keeps the freed
  zlib windows of compressed connections in fragmented heaps, and raw RSS
  saws up and down by tens of MiB whatever the code does (the summary gives
  the raw figures too).

It prints a summary, writes the samples (``samples-<adapter>.jsonl``) and a
plot of RSS, file descriptors and connections over time
(``soak-<adapter>.png``, when matplotlib is installed) to ``--out``, and exits
1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from clients import SOAK_MAX_MESSAGE, Tally, churn

from ikisocket_core.protocol import ServerConfig

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Open file descriptors the end may have over the start.
FD_MARGIN = 2
#: RSS the end may have over the warm start, in KiB (both after trimming). On trio,
#: what glibc cannot hand back after 2,000 concurrent connections moves by about 10 MiB
#: from run to run of the same code (+2.7, +8.3, +10.1 and +10.9 MiB measured), while a
#: leak of one KiB per connection over a 2-minute soak's 40,000 connections is 40 MiB.
RSS_MARGIN_KIB = 16 * 1024
#: Allocated interpreter blocks the end may have over the warm start.
BLOCKS_MARGIN = 20_000
#: Seconds the server gets to forget every client once they stopped.
SETTLE = 30.0
#: Seconds to wait after that before a reading: the server's longest timers
#: (``close_timeout`` and ``handshake_timeout``, at their defaults here) lapse first,
#: since what a timer still holds is not a leak (trio keeps a cancel scope that has
#: exited in its deadline heap until its deadline passes).
TIMERS = max(ServerConfig().close_timeout, ServerConfig().handshake_timeout) + 1.0
#: The server's limits for the soak: small messages (the 1009 behaviour), and every
#: client is on 127.0.0.1, so the per-address limit is lifted.
LIMITS = {"max_message_size": SOAK_MAX_MESSAGE, "max_connections_per_ip": 1_000_000}


def samples(path: Path) -> list[dict[str, Any]]:
    """Every sample the server wrote so far."""
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def wait_for(path: Path, ok: Any, timeout: float) -> dict[str, Any]:
    """The first new sample for which ``ok(sample)`` holds (or the last one, after ``timeout``)."""
    seen = len(samples(path))
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        fresh = samples(path)[seen:]
        for sample in fresh:
            last = sample
            if ok(sample):
                return sample
        seen += len(fresh)
        time.sleep(0.2)
    return last or samples(path)[-1]


def trimmed(server: subprocess.Popen[str], path: Path) -> dict[str, Any]:
    """Have the server collect garbage and trim its heap; the sample it wrote then."""
    server.send_signal(signal.SIGUSR1)
    return wait_for(path, lambda s: s["trimmed"], SETTLE)


def plot(rows: list[dict[str, Any]], title: str, out: Path) -> bool:
    """RSS, file descriptors and connections over time, as a PNG; whether it was written."""
    try:
        import matplotlib  # noqa: PLC0415 (optional: installed by ``make soak``)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    t = [r["t"] for r in rows]
    fig, (mem, fds) = plt.subplots(2, 1, sharex=True, figsize=(8, 5), constrained_layout=True)
    mem.plot(t, [r["rss_kib"] / 1024 for r in rows], label="RSS")
    mem.plot(t, [r["hwm_kib"] / 1024 for r in rows], label="peak RSS (VmHWM)", linestyle=":")
    mem.set_ylabel("MiB")
    mem.set_ylim(bottom=0)
    mem.legend(loc="lower right")
    mem.set_title(title)
    fds.plot(t, [r["fds"] for r in rows], label="open fds")
    fds.plot(t, [r["registry"] for r in rows], label="hub connections")
    fds.set_ylabel("count")
    fds.set_xlabel("seconds")
    fds.legend(loc="upper right")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def check(start: dict[str, Any], warm: dict[str, Any], end: dict[str, Any]) -> list[str]:
    """What is wrong at the end (nothing: the soak passed)."""
    problems = []
    if end["registry"]:
        problems.append(f"{end['registry']} connections still in the hub's registry")
    if end.get("connects", 0) != end.get("terminals", 0):
        problems.append(
            f"{end.get('connects')} connects but {end.get('terminals')} terminal events"
        )
    for book in ("late", "double"):
        if end.get(book):
            problems.append(f"{end[book]} {book} listener runs")
    if end["fds"] > start["fds"] + FD_MARGIN:
        problems.append(f"{end['fds']} open fds at the end, {start['fds']} at the start")
    if end["rss_kib"] > warm["rss_kib"] + RSS_MARGIN_KIB:
        problems.append(f"RSS {end['rss_kib']} KiB at the end, {warm['rss_kib']} KiB warm")
    if end["blocks"] > warm["blocks"] + BLOCKS_MARGIN:
        problems.append(f"{end['blocks']} allocated blocks at the end, {warm['blocks']} warm")
    return problems


def summary(
    adapter: str,
    minutes: float,
    tally: Tally,
    start: dict[str, Any],
    warm: dict[str, Any],
    end: dict[str, Any],
    raw_end: dict[str, Any],
    rows: list[dict[str, Any]],
) -> str:
    """The soak's figures, one per line."""
    peak = max(rows, key=lambda r: r["registry"])
    return "\n".join(
        [
            f"soak: {adapter}, {minutes:g} min, {sum(tally.behaviours.values())} client cycles "
            f"({', '.join(f'{k} {v}' for k, v in sorted(tally.behaviours.items()))})",
            f"  handshakes {tally.opened}, messages sent {tally.sent}, received {tally.received}, "
            f"client errors {dict(tally.errors)}",
            f"  server: {end.get('connects', 0)} connections, {end.get('messages', 0)} messages, "
            f"peak {peak['registry']} connected at t={peak['t']:.0f} s",
            f"  RSS KiB (trimmed): start {start['rss_kib']}, warm {warm['rss_kib']}, "
            f"end {end['rss_kib']}; peak {end['hwm_kib']}, raw before the end trim "
            f"{raw_end['rss_kib']}",
            f"  allocated blocks: start {start['blocks']}, warm {warm['blocks']}, "
            f"end {end['blocks']}",
            f"  fds: start {start['fds']}, peak {max(r['fds'] for r in rows)}, end {end['fds']}",
            f"  tasks: start {start['tasks']}, peak {max(r['tasks'] for r in rows)}, "
            f"end {end['tasks']}; registry at the end {end['registry']}",
        ]
    )


def main() -> int:
    """Run the soak (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="asyncio")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--actors", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"samples-{args.adapter}.jsonl"
    log = (args.out / f"server-{args.adapter}.log").open("w")  # refusals, one line each
    options = [f"--option={name}={value}" for name, value in LIMITS.items()]
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "server.py"),
            "--adapter",
            args.adapter,
            "--samples",
            str(path),
            *options,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("listening "):
            print(f"soak: the server did not start: {line!r}", file=sys.stderr)
            return 1
        url = f"ws://127.0.0.1:{line.split()[1]}/"
        wait_for(path, lambda s: True, 5.0)
        start = trimmed(server, path)
        # A first wave of the same load warms the server up; its end is the baseline for RSS.
        warming = max(20.0, args.minutes * 60 / 5)
        asyncio.run(churn(url, actors=args.actors, seconds=warming, seed=1))
        wait_for(path, lambda s: s["registry"] == 0, SETTLE)
        time.sleep(TIMERS)
        warm = trimmed(server, path)
        tally = asyncio.run(churn(url, actors=args.actors, seconds=args.minutes * 60, seed=2))
        raw_end = wait_for(
            path, lambda s: s["registry"] == 0 and s["fds"] <= start["fds"] + FD_MARGIN, SETTLE
        )
        time.sleep(TIMERS)
        end = trimmed(server, path)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
        log.close()
    rows = samples(path)
    print(summary(args.adapter, args.minutes, tally, start, warm, end, raw_end, rows))
    picture = args.out / f"soak-{args.adapter}.png"
    title = f"soak: {args.adapter}, {args.actors} churning clients, {args.minutes:g} min"
    if plot(rows, title, picture):
        print(f"  plot: {picture}")
    problems = check(start, warm, end)
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
