"""What the ASGI spec gives the adapter and what it answers with: scopes in, HTTP answers out.

The ASGI adapter's helpers that know ASGI's message shapes and nothing of the
engine: the path below a mount point, the :class:`~ikisocket_core.Request` a
scope stands for, a refusal before the upgrade, a plain response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ikisocket_core import Headers, Reject, Request

from ._common import logger

__all__ = ["ASGIApplication", "ASGISend", "Message", "Receive", "Scope"]

#: ASGI's types, spelled as Starlette and the ASGI spec spell them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
ASGISend = Callable[[Message], Awaitable[None]]
ASGIApplication = Callable[[Scope, Receive, ASGISend], Awaitable[None]]


def _route_path(scope: Scope) -> str:
    """The path below the mount point (ASGI paths include ``root_path``)."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :] or "/"
    return path


def _request(scope: Scope, path: str) -> Request:
    # ``path`` is already percent-decoded by the server: do not decode it twice.
    client = scope.get("client")
    headers = Headers(
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
        for name, value in scope.get("headers") or ()
    )
    offered = scope.get("subprotocols")
    if offered and "sec-websocket-protocol" not in headers:
        # Servers built on wsproto (uvicorn's) keep the offer only in the scope.
        headers = Headers((*headers.raw, ("sec-websocket-protocol", ", ".join(offered))))
    return Request(
        path=path,
        query_string=bytes(scope.get("query_string") or b"").decode("latin-1"),
        headers=headers,
        client=(str(client[0]), int(client[1])) if client else None,
        scheme=scope.get("scheme") or "ws",
    )


async def _reject(scope: Scope, send: ASGISend, reject: Reject) -> None:
    """Refuse before the upgrade: a real HTTP response where the server allows it."""
    try:
        if "websocket.http.response" in (scope.get("extensions") or {}):
            headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in reject.headers]
            body = reject.reason.encode("utf-8")
            await _respond(send, reject.status, body, headers, kind="websocket.http")
        else:
            # ASGI servers answer a close before the accept with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
    except Exception as exc:
        logger.debug("rejecting a WebSocket failed: %r", exc)


async def _lifespan_of_nothing(scope: Scope, receive: Receive, send: ASGISend) -> None:
    """The lifespan of an app with nothing else to start or stop."""
    while True:
        kind = (await receive())["type"]
        await send({"type": f"{kind}.complete"})
        if kind == "lifespan.shutdown":
            return


async def _respond(
    send: ASGISend,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    kind: str = "http",
) -> None:
    head = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        *(headers or []),
    ]
    await send({"type": f"{kind}.response.start", "status": status, "headers": head})
    await send({"type": f"{kind}.response.body", "body": body})
