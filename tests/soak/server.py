"""Serve the load application on one adapter, sampling the process once a second.

::

    python tests/soak/server.py --adapter trio --port 8765 --samples samples.jsonl

``--adapter`` is one of :data:`ADAPTERS`. Each second one JSON line goes to
``--samples``: seconds since start, RSS and its peak (KiB, from
``/proc/self/status``), open file descriptors, tasks of the event loop, the
hub's registry size, the interpreter's allocated blocks, and the load
application's books. On SIGUSR1 it collects garbage, asks the C allocator to
hand free memory back (glibc's ``malloc_trim``) and writes a sample marked
``"trimmed": true`` at once: RSS then is what the process really holds. It prints
``listening <port>`` once it accepts connections. On SIGTERM the server
shuts down gracefully (every client gets 1001, bounded by ``close_timeout``),
then prints one line ``report {json}`` with the books, the registry size and
the seconds the shutdown took, and exits 0.

Limits come as ``--option name=value`` (``ServerConfig`` fields, numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import anyio
import sniffio
import trio
import uvicorn

from ikisocket_adapters.anyio import serve
from ikisocket_adapters.asgi import asgi_app
from ikisocket_adapters.asyncio import start_server

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_app import BOOKS, hub

#: Every way the soak can serve the application.
ADAPTERS = ("asyncio", "uvloop", "trio", "anyio-asyncio", "anyio-trio", "uvicorn")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise LookupError(field)  # pragma: no cover - Linux always has both


def _tasks() -> int:
    if sniffio.current_async_library() == "trio":

        def count(task: Any) -> int:
            return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

        return count(trio.lowlevel.current_root_task())
    return len(asyncio.all_tasks())


def _trim() -> bool:
    """Hand the allocator's free memory back to the system (glibc); whether it could."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    return True


def sample(start: float, *, trimmed: bool = False) -> dict[str, Any]:
    """One reading of the process and the hub."""
    return {
        "t": round(time.monotonic() - start, 3),
        "trimmed": trimmed,
        "blocks": sys.getallocatedblocks(),
        "rss_kib": _status_kib("VmRSS:"),
        "hwm_kib": _status_kib("VmHWM:"),
        "fds": len(os.listdir("/proc/self/fd")),
        "tasks": _tasks(),
        "registry": len(hub),
        **BOOKS,
    }


async def _sampler(out: TextIO | None, start: float) -> None:
    while True:
        if out is not None:
            out.write(json.dumps(sample(start)) + "\n")
            out.flush()
        await anyio.sleep(1.0)


async def _trimmer(out: TextIO | None, start: float) -> None:
    """On SIGUSR1: collect garbage, trim the heap, then write a sample marked ``trimmed``."""
    with anyio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            gc.collect()
            trimmed = _trim()
            if out is not None:
                out.write(json.dumps(sample(start, trimmed=trimmed)) + "\n")
                out.flush()


def _announce(port: int) -> None:
    print(f"listening {port}", flush=True)


async def _serve_until_signalled(adapter: str, port: int, limits: dict[str, Any]) -> float:
    """Serve until SIGTERM or SIGINT, shut down gracefully; the shutdown's seconds."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        if adapter == "uvicorn":
            listener = socket.create_server(("127.0.0.1", port))
            # uvicorn's own keepalive is off: on a saturated machine its 20 s pong deadline
            # closed a slow test client with 1011 mid-test (seen once in a full `make test`).
            config = uvicorn.Config(
                asgi_app(hub, **limits),
                ws="wsproto",
                ws_ping_interval=None,
                lifespan="on",
                log_level="warning",
            )
            server = uvicorn.Server(config)
            _announce(int(listener.getsockname()[1]))
            # uvicorn takes SIGTERM itself (its shutdown closes WebSockets with 1012, then
            # the lifespan's); the signal it re-raises when done goes to our receiver.
            await server.serve(sockets=[listener])
            return 0.0
        if adapter in ("asyncio", "uvloop"):
            running = await start_server(hub, "127.0.0.1", port, **limits)
            _announce(running.port)
            async for _ in signals:
                break
            stopping = time.monotonic()
            running.close()
            await running.wait_closed()
            return time.monotonic() - stopping
        async with anyio.create_task_group() as tg:
            started = await tg.start(
                lambda task_status: serve(hub, "127.0.0.1", port, task_status=task_status, **limits)
            )
            _announce(int(started.port))
            async for _ in signals:
                break
            stopping = time.monotonic()
            tg.cancel_scope.cancel()  # the adapter's graceful shutdown (1001, close_timeout)
        return time.monotonic() - stopping


async def main(args: argparse.Namespace) -> None:
    """Serve until SIGTERM, then report."""
    start = time.monotonic()
    limits: dict[str, Any] = {}
    for option in args.option:
        name, _, value = option.partition("=")
        limits[name] = float(value) if "." in value else int(value)
    out = open(args.samples, "w") if args.samples else None  # noqa: SIM115
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_sampler, out, start)
            tg.start_soon(_trimmer, out, start)
            took = await _serve_until_signalled(args.adapter, args.port, limits)
            tg.cancel_scope.cancel()
        final = sample(start)
        if out is not None:
            out.write(json.dumps(final) + "\n")
    finally:
        if out is not None:
            out.close()
    print("report " + json.dumps({**final, "shutdown_s": round(took, 3)}), flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", choices=ADAPTERS, default="asyncio")
    p.add_argument("--port", type=int, default=0, help="0 picks a free one")
    p.add_argument("--samples", help="write a JSON line per second here")
    p.add_argument("--option", action="append", default=[], help="a ServerConfig limit: name=value")
    return p


if __name__ == "__main__":
    ns = _parser().parse_args()
    backend = "trio" if ns.adapter in ("trio", "anyio-trio") else "asyncio"
    options = {"use_uvloop": True} if ns.adapter == "uvloop" else {}
    anyio.run(main, ns, backend=backend, backend_options=options)
