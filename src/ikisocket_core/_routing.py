"""Requests, routes and the parsing of what a WebSocket request carries.

Routes use Fiber's syntax (``/ws/:id``, an optional ``:id?``, a trailing
wildcard ``*``) and the ``{id}`` syntax of Starlette and FastAPI, so a route
written for either reads the same here.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, unquote

from ._errors import LocalProtocolError

__all__ = ["Headers", "Match", "Request", "Route", "Router"]

_intern = sys.intern
#: Headers whose value is usually the same for many clients (not a key, a cookie or a token).
_ALIKE = frozenset(
    (
        "host",
        "upgrade",
        "connection",
        "origin",
        "user-agent",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "pragma",
    )
)


class Headers(Mapping[str, str]):
    """Request headers with case-insensitive names; repeated headers joined by ``", "``.

    ``Cookie`` is the exception: its repeats are joined by ``"; "``, the
    separator of its own syntax (RFC 6265 section 5.4; HTTP/2 clients send
    one header per cookie, RFC 9113 section 8.2.3), because a comma would
    end up inside a cookie value.

    Args:
        raw: ``(name, value)`` pairs as received.
    """

    __slots__ = ("_map", "raw")

    def __init__(self, raw: Iterable[tuple[str, str]] = ()) -> None:
        # Every connection keeps its request's headers for as long as it is open. Their
        # names, and the values of the headers every client sends alike, are interned, so
        # thousands of connections share one copy of each (an interned string is freed with
        # its last user): a few hundred bytes less per connection, more for a browser's.
        pairs: list[tuple[str, str]] = []
        merged: dict[str, str] = {}
        for given, value_given in raw:
            name = _intern(given)
            key = name.lower()
            key = name if key == name else _intern(key)
            value = _intern(value_given) if key in _ALIKE else value_given
            pairs.append((name, value))
            if key in merged:
                merged[key] += ("; " if key == "cookie" else ", ") + value
            else:
                merged[key] = value
        self.raw: tuple[tuple[str, str], ...] = tuple(pairs)
        self._map = merged

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"

    def get_list(self, name: str) -> list[str]:
        """Every comma-separated value of ``name``, stripped (e.g. subprotocols).

        Args:
            name: The header name, any case.

        Returns:
            The values in order; empty when the header is absent.
        """
        value = self._map.get(name.lower(), "")
        return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """The HTTP request that asked for a WebSocket, as a driver hands it to the hub.

    Attributes:
        path: The percent-decoded path, without the query string.
        query_string: The raw query string (without ``?``).
        headers: The request headers.
        client: The peer's ``(host, port)`` when known.
        scheme: ``"ws"`` or ``"wss"``.
    """

    path: str
    query_string: str = ""
    headers: Headers = field(default_factory=Headers)
    client: tuple[str, int] | None = None
    scheme: str = "ws"

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise LocalProtocolError(f"a request path starts with '/', got {self.path!r}")

    @classmethod
    def from_target(
        cls,
        target: str | bytes,
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        *,
        client: tuple[str, int] | None = None,
        scheme: str = "ws",
    ) -> Request:
        """Build a request from an HTTP request target (``/path?query``) and raw headers.

        Args:
            target: The request target as sent on the request line.
            headers: Header pairs; bytes are decoded as Latin-1 (RFC 9110 5.5).
            client: The peer's address.
            scheme: ``"ws"`` or ``"wss"``.

        Returns:
            The request.
        """
        if isinstance(target, bytes):
            target = target.decode("latin-1")
        path, _, query = target.partition("?")
        pairs = (
            (
                n.decode("latin-1") if isinstance(n, bytes) else n,
                v.decode("latin-1") if isinstance(v, bytes) else v,
            )
            for n, v in headers
        )
        return cls(
            path=unquote(path) or "/",
            query_string=query,
            headers=Headers(pairs),
            client=client,
            scheme=scheme,
        )

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return self.headers.get_list("sec-websocket-protocol")

    @property
    def origin(self) -> str | None:
        """The ``Origin`` header, if the client sent one (browsers always do)."""
        return self.headers.get("origin")

    def query(self) -> dict[str, str]:
        """The query parameters; the first value wins for a repeated name.

        Returns:
            A new dict of the parameters.
        """
        params: dict[str, str] = {}
        if not self.query_string:  # (most requests: every connection asks at its accept)
            return params
        for key, value in parse_qsl(self.query_string, keep_blank_values=True):
            params.setdefault(key, value)
        return params

    def cookies(self) -> dict[str, str]:
        """The cookies of the ``Cookie`` header; a malformed header gives none.

        Returns:
            A new dict of cookie names to values.
        """
        raw = self.headers.get("cookie")
        if not raw:
            return {}
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}


_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)(\?)?|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\*)")


@dataclass(frozen=True, slots=True)
class Route:
    """One WebSocket route: a path pattern and the callback run for each new connection.

    Attributes:
        pattern: The pattern as written (``/ws/:id``, ``/ws/{id}``, ``/files/*``).
        callback: The route callback (the seed's ``ikisocket.New`` callback).
    """

    pattern: str
    callback: Callable[[Any], Any]
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/"):
            raise LocalProtocolError(f"a route starts with '/', got {self.pattern!r}")
        parts: list[str] = []
        names: set[str] = set()
        pos = 0
        for m in _PARAM.finditer(self.pattern):
            literal = self.pattern[pos : m.start()]
            name = m.group(1) or m.group(3) or "*"
            if name in names:
                raise LocalProtocolError(f"route {self.pattern!r} repeats parameter {name!r}")
            names.add(name)
            # Prefixed so a parameter named like the wildcard's group cannot clash.
            group = "w" if name == "*" else f"p_{name}"
            if m.group(4):
                parts.append(re.escape(literal) + f"(?P<{group}>.*)")
            elif m.group(2) and literal.endswith("/"):
                # ``/ws/:id?`` also matches ``/ws`` (Fiber's optional parameter).
                parts.append(re.escape(literal[:-1]) + f"(?:/(?P<{group}>[^/]+))?")
            else:
                optional = "*" if m.group(2) else "+"
                parts.append(re.escape(literal) + f"(?P<{group}>[^/]{optional})")
            pos = m.end()
        parts.append(re.escape(self.pattern[pos:]))
        object.__setattr__(self, "regex", re.compile("".join(parts) + r"\Z", re.DOTALL))

    def match(self, path: str) -> dict[str, str] | None:
        """Match ``path`` against this route.

        Args:
            path: A percent-decoded request path.

        Returns:
            The parameters (``*`` for the wildcard) or ``None``.
        """
        m = self.regex.match(path)
        if m is None:
            return None
        return {("*" if k == "w" else k[2:]): (v or "") for k, v in m.groupdict().items()}


@dataclass(frozen=True, slots=True)
class Match:
    """A route that matched a path, with the parameters taken from it."""

    route: Route
    params: dict[str, str]


class Router:
    """The hub's routes, tried in the order they were added; the first match wins."""

    __slots__ = ("routes",)

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, pattern: str, callback: Callable[[Any], Any]) -> Route:
        """Add a route.

        Args:
            pattern: The path pattern.
            callback: The route callback.

        Returns:
            The new route.

        Raises:
            LocalProtocolError: The pattern is malformed or already routed.
        """
        if any(r.pattern == pattern for r in self.routes):
            raise LocalProtocolError(f"route {pattern!r} is already registered")
        route = Route(pattern, callback)
        self.routes.append(route)
        return route

    def match(self, path: str) -> Match | None:
        """Find the first route that matches ``path``.

        Args:
            path: A percent-decoded request path.

        Returns:
            The match, or ``None`` when no route fits.
        """
        for route in self.routes:
            params = route.match(path)
            if params is not None:
                return Match(route, params)
        return None
