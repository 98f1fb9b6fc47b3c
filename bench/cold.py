"""What an ASGI app costs per message when the caches are cold: ours against the raw app.

``bench/callgrind.py`` counts instructions, which load leaves alone; but behind uvicorn a
message costs us more time than our share of the instructions says (docs/explanation/
performance.md, "Behind uvicorn, round 8"). Between two messages of one client, the kernel and
uvicorn's own parsing run, and what an app touches per message (its functions' code, its
objects, their types) has to come back from a farther cache. This measures that, in one
process and with no sockets: each app (``servers/uvicorn_raw_asgi.py``'s, and ours,
``asgi_app`` on the bench hub) gets N ``websocket.receive`` messages from a ``receive()`` that
first evicts the caches (copies a buffer of ``--evict`` MiB and parses and serialises one
frame with wsproto, as uvicorn would), and the app's own time per message is taken from the
moment ``receive()`` returns to the moment it is called again (the reply's ``send`` is a
no-op coroutine for both)::

    python bench/cold.py                      # hot (no eviction), 4 MiB and 48 MiB
    python bench/cold.py --evict 0,4 -n 4000  # only those
    python bench/cold.py --calibrate          # what 10 small functions or objects cost cold

``--calibrate`` adds two rows: the raw app plus ten distinct small functions called per
message, and plus ten distinct objects read per message; they put a price on each function
and each object a message path touches. Each row runs in a fresh process, ``--reps`` times
in turn; the figure is the median of each process's median. Machines here are shared: read
the rows of one run side by side, never one row against another run's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import TextMessage

HERE = Path(__file__).resolve().parent
Message = dict[str, Any]
App = Callable[[Message, Any, Any], Awaitable[None]]
#: The calibration's size: distinct functions, or distinct objects, per message.
K = 10


def _scope() -> Message:
    return {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": "ws",
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }


def _evictor(mib: float) -> Callable[[], None]:
    """What runs between two messages: a buffer copy and one frame through wsproto."""
    size = int(mib * (1 << 20))
    source, target = bytearray(os.urandom(size)), bytearray(size)
    server = Connection(ConnectionType.SERVER)
    frame = Connection(ConnectionType.CLIENT).send(TextMessage(data="a" * 32))

    def evict() -> None:
        target[:] = source
        server.receive_data(frame)
        for event in server.events():
            server.send(TextMessage(data=event.data))

    return evict


def _calibration(kind: str) -> Callable[[], int]:
    """K distinct small functions (or K distinct objects) a message path would touch."""

    class Obj:
        __slots__ = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n")

        def __init__(self) -> None:
            for name in self.__slots__:
                setattr(self, name, 1)

    objects = [Obj() for _ in range(K)]
    if kind == "objects":

        def touch() -> int:
            return sum(o.a + o.g + o.n for o in objects)

        return touch
    namespace: dict[str, Any] = {}
    for i in range(K):  # each its own code object, as each function of a path is
        exec(  # fixed source: K copies of one small function
            f"def f{i}(o, x):\n"
            "    y = o.a + x\n    if y > 99: return 0\n"
            "    z = o.b + y\n    if z > 99: return 1\n"
            "    return o.c + z\n",
            namespace,
        )
    functions = [namespace[f"f{i}"] for i in range(K)]
    first = objects[0]

    def call() -> int:
        return sum(f(first, 1) for f in functions)

    return call


def _app(which: str) -> App:
    sys.path.insert(0, str(HERE / "servers"))  # (a child process imports what it runs)
    from ikisocket_asyncio import make_hub  # noqa: PLC0415
    from uvicorn_raw_asgi import make_app  # noqa: PLC0415

    from ikisocket_adapters.asgi import asgi_app  # noqa: PLC0415

    if which == "ours":
        return asgi_app(make_hub("echo"))
    return make_app("echo")


async def _measure(
    app: App, n: int, evict: Callable[[], None], extra: Callable[[], int] | None
) -> float:
    messages = iter(
        [{"type": "websocket.connect"}]
        + [{"type": "websocket.receive", "text": "a" * 32} for _ in range(n)]
        + [{"type": "websocket.disconnect", "code": 1000}]
    )
    spans: list[int] = []
    started = 0
    clock = time.perf_counter_ns

    async def receive() -> Message:
        nonlocal started
        now = clock()
        if started:
            spans.append(now - started)
        evict()
        message = next(messages)
        started = clock()
        if extra is not None:
            extra()
        return message

    async def send(message: Message) -> None:
        pass

    await app(_scope(), receive, send)
    return statistics.median(spans)


def child(which: str, mib: float, n: int, reps: int) -> None:
    """Run one row in this process and print its median ns per message."""
    try:
        import uvloop  # noqa: PLC0415 (optional)
    except ImportError:  # (the bench extra installs it)
        uvloop = None
    evict = _evictor(mib) if mib else (lambda: None)
    extra = _calibration(which.split("+")[1]) if "+" in which else None
    app = _app(which.split("+", maxsplit=1)[0])
    gc.disable()  # (neither app collects per message: run.py's servers see no collection)
    results = []
    for _ in range(reps):
        run = _measure(app, n, evict, extra)
        results.append(uvloop.run(run) if uvloop is not None else asyncio.run(run))
    print(statistics.median(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evict", default="0,4,48", help="MiB copied between messages, per column")
    parser.add_argument("-n", type=int, default=0, help="messages per pass (default: by eviction)")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per row")
    parser.add_argument("--calibrate", action="store_true", help="add the function/object rows")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, mib = args.child
        child(which, float(mib), args.n, 3)
        return
    rows = ["raw", "ours"] + (["raw+functions", "raw+objects"] if args.calibrate else [])
    columns = [float(c) for c in args.evict.split(",")]
    figures: dict[tuple[str, float], list[float]] = {}
    for mib in columns:
        n = args.n or (50_000 if mib == 0 else 3_000 if mib < 16 else 600)
        for _ in range(args.reps):
            for which in rows:  # in turn, so that a change of load touches every row alike
                out = subprocess.run(
                    [sys.executable, __file__, "--child", which, str(mib), "-n", str(n)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures.setdefault((which, mib), []).append(float(out.stdout.split()[-1]))
    head = " | ".join(f"evict {c:g} MiB" for c in columns)
    print(f"| ns per message | {head} |")
    print("|---|" + "---:|" * len(columns))
    for which in rows:
        cells = []
        for mib in columns:
            mine = statistics.median(figures[(which, mib)])
            raw = statistics.median(figures[("raw", mib)])
            cells.append(f"{mine:,.0f}" + ("" if which == "raw" else f" (+{mine - raw:,.0f})"))
        print(f"| {which} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
