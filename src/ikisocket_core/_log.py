"""What the engine logs: one line per refused or failed connection, nothing else.

Logging hygiene (docs/explanation/errors.md, "What is logged"): every line
names the peer's address and the reason; never a message body, a header
value or a traceback for what the peer did; nothing for the happy path.
"""

from __future__ import annotations

import logging

__all__: list[str] = []

logger = logging.getLogger("ikisocket")


def peer_name(client: tuple[str, int] | None) -> str:
    """The peer's address as logged: ``host:port``, ``[v6]:port`` or ``unknown peer``."""
    if client is None:
        return "unknown peer"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log_refusal(client: tuple[str, int] | None, status: int, reason: str) -> None:
    """Log one refused request: INFO for the peer's 4xx, WARNING for the server's 5xx.

    Args:
        client: The peer's address.
        status: The HTTP status it was answered with.
        reason: Why (the answer's reason, never a request header).
    """
    level = logging.WARNING if status >= 500 else logging.INFO
    logger.log(level, "refused %s: %d %s", peer_name(client), status, reason)
