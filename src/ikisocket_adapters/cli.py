"""The ``ikisocket`` command: run an application's hub, or the chat demo.

::

    ikisocket run myapp.realtime:hub --adapter asyncio --host 127.0.0.1 --port 8000
    ikisocket run myapp.realtime:hub --adapter anyio --backend trio
    ikisocket demo --port 3000
    ikisocket run myapp.realtime:hub --redis redis://127.0.0.1:6379/0   # one of several nodes

SIGINT and SIGTERM close every client with 1001, wait for them (bounded by
``close_timeout``) and exit with status 0. Errors the user can fix (a bad
import string, a busy port, a missing TLS file) are one line on stderr and
exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from ikisocket_core import Hub

__all__ = ["CLIError", "load_hub", "main"]

ADAPTERS = ("asyncio", "trio", "anyio")
#: What ``--adapter anyio`` runs on.
BACKENDS = ("asyncio", "trio")


class CLIError(Exception):
    """A problem the user can fix; reported as one line."""


def load_hub(spec: str) -> Hub:
    """Import ``package.module:attribute`` and return the hub it names.

    The attribute may also be a zero-argument factory returning a hub.

    Args:
        spec: The import string.

    Returns:
        The hub.

    Raises:
        CLIError: The string is malformed, the import fails, or it is not a hub.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CLIError(f"import string {spec!r} must look like 'package.module:hub'")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the working directory is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CLIError(f"cannot import {module_name!r}: {exc}") from None
    return _hub_from(module, attr, spec)


def _hub_from(module: ModuleType, attr: str, spec: str) -> Hub:
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"{spec!r}: module has no attribute {attr!r}") from None
    if not isinstance(obj, Hub) and callable(obj) and _takes_no_arguments(obj):
        obj = obj()  # a factory
    if not isinstance(obj, Hub):
        raise CLIError(
            f"{spec!r} is a {type(obj).__name__}, not an ikisocket_core.Hub"
            " (or a function of no arguments returning one)"
        )
    return obj


def _takes_no_arguments(fn: Any) -> bool:
    try:
        inspect.signature(fn).bind()
    except (TypeError, ValueError):
        return False
    return True


def _demo_app() -> ModuleType:
    """Load the chat example (shipped in the wheel, or from the source tree)."""
    here = Path(__file__).resolve().parent
    for candidate in (
        here / "_examples" / "chat" / "app.py",
        here.parents[1] / "examples" / "chat" / "app.py",
    ):
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("ikisocket_chat_demo", candidate)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            return module
    raise CLIError("the chat example is not installed (examples/chat/app.py not found)")


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise CLIError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise CLIError(f"cannot load the TLS certificate: {exc}") from None
    return context


def _announce(scheme: str, host: str, port: int, what: str) -> None:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    print(f"ikisocket {what}: listening on {scheme}://{shown}:{port}", flush=True)


def _backplane(hub: Hub, redis_url: str | None, redis_mode: str = "pubsub") -> Any:
    """The Redis backplane for ``--redis`` (and ``--redis-mode``), or ``None``."""
    if redis_url is None:
        return None
    try:
        from .redis import RedisBackplane  # noqa: PLC0415
    except ImportError:
        raise CLIError("--redis needs coredis (pip install 'ikisocket[redis]')") from None
    try:
        return RedisBackplane(hub, redis_url, mode=cast(Any, redis_mode))
    except ValueError as exc:
        raise CLIError(f"--redis {redis_url}: {exc}") from None


def _run_asyncio(
    hub: Hub,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    limits: dict[str, Any],
    on_ready: Callable[[int], None],
    use_uvloop: bool,
    redis_url: str | None = None,
    redis_mode: str = "pubsub",
) -> None:
    import asyncio  # noqa: PLC0415 (only the chosen backend is imported)

    from .asyncio import start_server  # noqa: PLC0415

    backplane = _backplane(hub, redis_url, redis_mode)

    async def run() -> None:
        relaying: asyncio.Task[None] | None = None
        if backplane is not None:
            relaying = asyncio.create_task(backplane.run())
        # Signal handlers first: a supervisor may signal as soon as it reads "listening".
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        server = await start_server(hub, host, port, ssl_context=ssl_context, **limits)
        on_ready(server.port)
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
            if relaying is not None:  # after the clients closed: their "absent" goes out
                relaying.cancel()
                await asyncio.wait({relaying}, timeout=3.0)

    if use_uvloop:
        try:
            import uvloop  # noqa: PLC0415
        except ImportError:
            raise CLIError("--uvloop needs the uvloop package (pip install uvloop)") from None
        uvloop.run(run())
    else:
        asyncio.run(run())


def _run_anyio(
    backend: str,
    hub: Hub,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    limits: dict[str, Any],
    on_ready: Callable[[int], None],
    redis_url: str | None = None,
    redis_mode: str = "pubsub",
) -> None:
    """The trio adapter and the anyio adapter: one driver, on ``backend``."""
    import anyio  # noqa: PLC0415 (only the chosen backend is imported)

    from .anyio import serve  # noqa: PLC0415

    backplane = _backplane(hub, redis_url, redis_mode)

    async def run() -> None:
        async with anyio.create_task_group() as outer:
            if backplane is not None:
                await outer.start(backplane.run)
            # Signal handlers first: a supervisor may signal as soon as it reads "listening".
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:
                    started = await tg.start(
                        lambda task_status: serve(
                            hub,
                            host,
                            port,
                            ssl_context=ssl_context,
                            task_status=task_status,
                            **limits,
                        )
                    )
                    on_ready(int(started.port))
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        break
            # The server closed its clients; now the backplane (their "absent" goes out).
            outer.cancel_scope.cancel()

    anyio.run(run, backend=backend)


def _backend(args: argparse.Namespace) -> str | None:
    """The event loop ``--adapter``/``--backend`` ask for (``None`` for the asyncio adapter)."""
    if args.backend is not None and args.adapter != "anyio":
        raise CLIError("--backend applies to --adapter anyio only")
    if args.uvloop and args.adapter != "asyncio":
        raise CLIError("--uvloop applies to --adapter asyncio only")
    if args.adapter == "anyio":
        return str(args.backend or "asyncio")
    return "trio" if args.adapter == "trio" else None


def _serve(args: argparse.Namespace, hub: Hub, what: str, limits: dict[str, Any]) -> None:
    ssl_context = _ssl_context(args.certfile, args.keyfile)
    scheme = "wss" if ssl_context else "ws"

    def on_ready(port: int) -> None:
        _announce(scheme, args.host, port, what)
        if what == "demo":
            print(f"ikisocket demo: open http://{args.host}:{port}", flush=True)

    backend = _backend(args)
    try:
        if backend is None:
            _run_asyncio(
                hub,
                host=args.host,
                port=args.port,
                ssl_context=ssl_context,
                limits=limits,
                on_ready=on_ready,
                use_uvloop=args.uvloop,
                redis_url=args.redis,
                redis_mode=args.redis_mode,
            )
        else:
            _run_anyio(
                backend,
                hub,
                host=args.host,
                port=args.port,
                ssl_context=ssl_context,
                limits=limits,
                on_ready=on_ready,
                redis_url=args.redis,
                redis_mode=args.redis_mode,
            )
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


def _limit(text: str) -> int | None:
    """A connection limit on the command line: a count, 0 for none."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count (0: no limit), not {text!r}")
    return value or None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ikisocket", description="Serve realtime events over WebSocket."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, port: int) -> None:
        p.add_argument("--adapter", choices=ADAPTERS, default="asyncio")
        p.add_argument(
            "--backend",
            choices=BACKENDS,
            default=None,
            help="the event loop of --adapter anyio (asyncio)",
        )
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=port)
        p.add_argument("--uvloop", action="store_true", help="run asyncio on uvloop")
        p.add_argument("--certfile", help="serve wss:// with this certificate (PEM)")
        p.add_argument("--keyfile", help="the certificate's private key (PEM)")
        p.add_argument(
            "--log-level",
            default="warning",
            choices=("debug", "info", "warning", "error"),
        )
        p.add_argument("--max-message-size", type=int, default=None, help="bytes (1 MiB)")
        p.add_argument("--ping-interval", type=float, default=None, help="seconds (20)")
        # Absent unless given: the engine's defaults apply (docs/security.md).
        p.add_argument(
            "--max-connections",
            type=_limit,
            default=argparse.SUPPRESS,
            help="open WebSockets of the server (no limit; 0: none)",
        )
        p.add_argument(
            "--max-connections-per-ip",
            type=_limit,
            default=argparse.SUPPRESS,
            help="open WebSockets from one address (1000; 0: no limit)",
        )
        p.add_argument(
            "--redis",
            metavar="URL",
            default=None,
            help="share connections with other processes through this Redis (any adapter); "
            "redis+cluster://HOST:PORT for a Redis Cluster (sharded channels)",
        )
        p.add_argument(
            "--redis-mode",
            choices=("pubsub", "streams"),
            default="pubsub",
            help="pubsub: at most once; streams: no loss while Redis keeps the stream (pubsub)",
        )

    run = sub.add_parser("run", help="serve the hub named by an import string")
    run.add_argument("app", help="package.module:hub")
    common(run, 8000)
    run.add_argument(
        "--handler-timeout",
        type=float,
        default=None,
        help="cancel an async listener after this many seconds (off)",
    )
    demo = sub.add_parser("demo", help="serve the chat demo with its web page")
    common(demo, 3000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    limits: dict[str, Any] = {}
    if args.max_message_size is not None:
        limits["max_message_size"] = args.max_message_size
    if args.ping_interval is not None:
        limits["ping_interval"] = args.ping_interval or None
    for name in ("max_connections", "max_connections_per_ip"):
        if hasattr(args, name):
            limits[name] = getattr(args, name)
    if getattr(args, "handler_timeout", None) is not None:
        limits["handler_timeout"] = args.handler_timeout
    try:
        if args.command == "demo":
            module = _demo_app()
            hub = _hub_from(module, "hub", "examples/chat/app.py:hub")
            static = getattr(module, "static", None)
            if callable(static):
                limits["static"] = static()
            _serve(args, hub, "demo", limits)
        else:
            _serve(args, load_hub(args.app), "run", limits)
    except CLIError as exc:
        print(f"ikisocket: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
