"""Authorization before the upgrade: a token picks the user, and only our site's pages may connect.

Browsers cannot set headers on a WebSocket request, so the token may also come
in the query string (``/ws?token=...``) or a cookie; other clients can send
``Authorization: Bearer ...``.
"""

from __future__ import annotations

from ikisocket_core import Accept, Hub, Reject, Request, Websocket

#: token -> user; a real application asks its session store.
TOKENS = {"t-alice": "alice", "t-bob": "bob"}

# A browser page from any other origin is refused with 403 (cross-site
# WebSocket hijacking). Clients that send no Origin header (not browsers) pass.
hub = Hub(allowed_origins={"https://chat.example.com"})


@hub.before_upgrade
def authorize(request: Request) -> Accept | Reject:
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ") if header else request.query().get("token", "")
    user = TOKENS.get(token)
    if user is None:
        return Reject(
            status=401,
            reason="a valid token is required",
            headers=(("www-authenticate", "Bearer"),),
        )
    # The user id becomes the connection's UUID: hub.emit_to("alice", ...) just works.
    # A second connection for the same UUID is refused with 409.
    return Accept(uuid=user, attributes={"user": user})


@hub.websocket("/ws")
def on_open(kws: Websocket) -> None:
    kws.emit(f"signed in as {kws.get_attribute('user')}")
