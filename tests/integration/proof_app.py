"""The app the proofs run on every driver, and the server process that serves it.

``test_same_outcomes.py`` and ``test_memory.py`` need one application served
the same way by ``TestClient``, each socket adapter and the ASGI adapter,
with limits the CLI does not expose, and a record of the hub's events the
test can read back. This module is both: :func:`build_hub` makes the hub
(in-process for ``TestClient``), and run as a script it serves that hub in a
process of its own::

    python proof_app.py --driver asyncio --config main --events E --ready R

The server binds a free port of 127.0.0.1, writes it to the ``--ready``
file, and appends each hub event to the ``--events`` file as one JSON line
(``{"user", "event", "detail"}``); it runs until it is terminated.

Route ``/chat/:id`` (``id`` names the connection in the records):

* on open, ``joined:<id>`` to everyone else;
* a message ``flood``: :data:`FLOOD_PARTS` binary messages of
  :data:`FLOOD_PART_SIZE` bytes back to the sender, nothing else;
* any other message: ``echo:<data>`` back, ``<id>:<data>`` to everyone else,
  in the kind it arrived in;
* on disconnect, ``left:<id>`` to everyone else.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    Accept,
    ConnectionClosed,
    EventPayload,
    Hub,
    Request,
    Websocket,
)

__all__ = [
    "CONFIGS",
    "DRIVERS",
    "FLOOD_PARTS",
    "FLOOD_PART_SIZE",
    "FLOOD_REQUEST",
    "Recorder",
    "build_hub",
    "main",
]

#: The request that makes the hub flood its sender.
FLOOD_REQUEST = "flood"
#: How many messages one flood request sends back...
FLOOD_PARTS = 4
#: ... and how big each one is (one request stays below the ``main`` max_queue).
FLOOD_PART_SIZE = 16 * 1024

#: Server settings by name: what each proof needs (ServerConfig fields).
CONFIGS: dict[str, dict[str, Any]] = {
    # Slow readers are closed (1013) once 256 KiB wait; no keepalive traffic.
    "main": {"backpressure": "close", "max_queue": 256 * 1024, "ping_interval": None},
    # A ping every 0.5 s, answered within 0.5 s or 1011.
    "keepalive": {"ping_interval": 0.5, "ping_timeout": 0.5},
    # The defaults a user gets (1 MiB messages, 4 MiB output bound, compression).
    "memory": {},
}

#: ``--driver`` values: the socket adapters and the ASGI adapter behind uvicorn.
DRIVERS = ("asyncio", "trio", "anyio-asyncio", "anyio-trio", "uvicorn")

#: Where hub events go: ``record(user, event, detail)``.
Recorder = Callable[[str, str, str], None]


def build_hub(record: Recorder) -> Hub:
    """Build the proof hub (see the module docstring).

    Args:
        record: Called for each hub event, in the order the hub fires them.

    Returns:
        A new hub.
    """
    hub = Hub()
    flood_part = b"\xab" * FLOOD_PART_SIZE

    def user(ep: EventPayload) -> str:
        return str(ep.socket_attributes.get("user", "?"))

    @hub.before_upgrade
    def admit(request: Request) -> Accept | None:
        name = request.path.rsplit("/", 1)[-1]
        if name == "broken":
            raise RuntimeError("a before_upgrade hook that fails")
        if name.startswith("twin"):
            return Accept(uuid="twin", attributes={"user": name})  # one UUID for two names
        return None

    @hub.websocket("/chat/:id")
    def chat(kws: Websocket) -> None:
        name = kws.params["id"]
        kws.set_attribute("user", name)
        kws.broadcast(f"joined:{name}", except_self=True)

    @hub.on(EVENT_CONNECT)
    def on_connect(ep: EventPayload) -> None:
        record(user(ep), "connect", "")

    @hub.on(EVENT_MESSAGE)
    def on_message(ep: EventPayload) -> None:
        name = user(ep)
        record(name, "message", f"{ep.kind.name.lower()}:{len(ep.data)}")
        if ep.data == FLOOD_REQUEST.encode():
            for _ in range(FLOOD_PARTS):
                ep.kws.emit(flood_part, BINARY)
            return
        ep.kws.emit(b"echo:" + ep.data, ep.kind)
        ep.kws.broadcast(name.encode() + b":" + ep.data, except_self=True, kind=ep.kind)

    @hub.on(EVENT_ERROR)
    def on_error(ep: EventPayload) -> None:
        record(user(ep), "error", type(ep.error).__name__)

    def on_end(ep: EventPayload) -> None:
        name = user(ep)
        closed = ep.error
        assert isinstance(closed, ConnectionClosed)
        cause = type(closed.cause).__name__ if closed.cause is not None else "-"
        record(name, ep.name, f"{closed.code}:{cause}")
        if ep.name == EVENT_DISCONNECT:
            hub.broadcast(f"left:{name}")

    hub.on(EVENT_DISCONNECT, on_end)
    hub.on(EVENT_CLOSE, on_end)
    return hub


class _FileRecorder:
    """Appends each record to a file as one JSON line, flushed at once."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8", buffering=1)

    def __call__(self, user: str, event: str, detail: str) -> None:
        self._file.write(json.dumps({"user": user, "event": event, "detail": detail}) + "\n")
        self._file.flush()


def _announce(ready: Path, port: int) -> None:
    partial = ready.with_suffix(".partial")
    partial.write_text(str(port), encoding="ascii")
    partial.replace(ready)  # the test never reads a half-written port


async def _forever_asyncio(hub: Hub, limits: dict[str, Any], ready: Path) -> None:
    from ikisocket_adapters.asyncio import start_server  # noqa: PLC0415

    server = await start_server(hub, "127.0.0.1", 0, **limits)
    _announce(ready, server.port)
    await asyncio.Event().wait()


async def _forever_anyio(hub: Hub, limits: dict[str, Any], ready: Path, flavour: str) -> None:
    import anyio  # noqa: PLC0415

    adapter: Any = importlib.import_module(f"ikisocket_adapters.{flavour}")
    async with adapter.open_server(hub, "127.0.0.1", 0, **limits) as server:
        _announce(ready, server.port)
        await anyio.sleep_forever()


def _serve_uvicorn(hub: Hub, limits: dict[str, Any], config: str, ready: Path) -> None:
    import uvicorn  # noqa: PLC0415

    from ikisocket_adapters.asgi import asgi_app  # noqa: PLC0415

    # The keywords this asgi_app takes (the ASGI adapter is moving to every ServerConfig field).
    accepted = inspect.signature(asgi_app).parameters
    app = asgi_app(hub, **{k: v for k, v in limits.items() if k in accepted})
    keepalive = CONFIGS["keepalive"]
    # Keepalive is the ASGI server's job: uvicorn's own pings, as our engine's in "keepalive".
    ping = (
        (keepalive["ping_interval"], keepalive["ping_timeout"]) if config == "keepalive" else None
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            ws="wsproto",
            http="h11",
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws_ping_interval=ping[0] if ping else None,
            ws_ping_timeout=ping[1] if ping else None,
        )
    )
    _announce(ready, int(listener.getsockname()[1]))
    server.run(sockets=[listener])


def main(argv: list[str] | None = None) -> None:
    """Serve the proof hub until terminated (see the module docstring).

    Args:
        argv: The command line (``sys.argv[1:]`` by default).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=DRIVERS, required=True)
    parser.add_argument("--config", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args(argv)
    limits = CONFIGS[args.config]
    hub = build_hub(_FileRecorder(args.events))
    if args.driver == "asyncio":
        asyncio.run(_forever_asyncio(hub, limits, args.ready))
    elif args.driver == "uvicorn":
        _serve_uvicorn(hub, limits, args.config, args.ready)
    else:
        import anyio  # noqa: PLC0415

        flavour, _, backend = args.driver.partition("-")
        anyio.run(_forever_anyio, hub, limits, args.ready, flavour, backend=backend or "trio")


if __name__ == "__main__":
    main()
