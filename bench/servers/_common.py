"""What every benchmark server shares: its command line, the port announcement, the fd limit.

A server is started by ``bench/run.py`` as ``python bench/servers/NAME.py --mode
echo|broadcast [--loop asyncio|uvloop]``. It binds ``127.0.0.1`` on a free
port, prints ``PORT <n>`` on a line of its own, and serves ``/ws`` until it is
killed:

* ``echo``: every text message is sent back to its sender.
* ``broadcast``: every text message is sent to every *other* connection.

Compression and keepalive pings are off everywhere, so every server does the
same work per message.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import Literal

Mode = Literal["echo", "broadcast"]
HOST = "127.0.0.1"
#: The options every ikisocket bench server runs with. Every benchmark client comes from
#: 127.0.0.1, and the other servers have no such limits: lift them (docs/security.md).
OURS: dict[str, object] = {
    "backlog": 1024,
    "compression": False,
    "ping_interval": None,
    "max_connections_per_ip": None,
    "max_handshakes": None,
}
PATH = "/ws"
#: Listen backlog for every server (the load generator connects 100 at a time).
BACKLOG = 1024
#: The largest message any server accepts (the benchmark sends at most 4 KiB).
MAX_SIZE = 1024 * 1024


def raise_fd_limit() -> int:
    """Raise ``RLIMIT_NOFILE`` to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 16
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(loops: tuple[str, ...] = ("asyncio", "uvloop")) -> argparse.Namespace:
    """Parse ``--mode`` and ``--loop``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("echo", "broadcast"), required=True)
    parser.add_argument("--loop", choices=loops, default=loops[0])
    return parser.parse_args()


def announce(port: int) -> None:
    """Tell the runner which port to use (the first line it waits for)."""
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


def run_asyncio(main: Callable[[], Awaitable[None]], loop: str) -> None:
    """Run ``main()`` on the default asyncio loop or on uvloop."""
    raise_fd_limit()
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 (optional)

        uvloop.run(main())  # type: ignore[arg-type]
    else:
        asyncio.run(main())  # type: ignore[arg-type]
