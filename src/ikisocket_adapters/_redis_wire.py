"""The Redis backplane's helpers: the relays' wire format, URLs, stream ids, and failures."""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from typing import Any
from urllib.parse import urlsplit

import coredis

from ikisocket_core import LocalProtocolError, MessageKind, Relay

from ._redis_routes import CLUSTER_SCHEMES, split_url

if sys.version_info < (3, 11):  # pragma: no cover (the backport anyio depends on)
    from exceptiongroup import BaseExceptionGroup

__all__: list[str] = []

_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


def encode_relay(relay: Relay) -> bytes:
    """Serialise a relay as compact JSON: its ``op`` tag and fields (the data as base64).

    Fields at their default are left out, so each message carries only what
    its kind of relay says.

    Args:
        relay: The relay.

    Returns:
        The message to publish.
    """
    doc: dict[str, Any] = {"op": relay.op}
    for field in dataclasses.fields(relay):
        value = getattr(relay, field.name)
        if value is None or value == field.default:
            continue
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, MessageKind):
            value = int(value)
        elif isinstance(value, tuple):  # uuids, or an event's binary attachments
            value = [
                base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for v in value
            ]
        doc[field.name] = value
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode_relay(message: bytes | str) -> Relay:
    """Parse a message made by :func:`encode_relay`.

    Args:
        message: The published message.

    Returns:
        The relay, of the class its ``op`` tag names.

    Raises:
        ValueError: It is not a relay.
    """
    return parse_relay(message)[0]


def _field(name: str, value: Any, annotation: object) -> Any:
    """One field of a decoded relay, checked and converted back from JSON.

    ``annotation`` is the relay field's type as written (``"int"``, ``"str"``...): a field
    declared ``int`` must come as a JSON integer, whatever its name (``request`` is an int in
    ack relays and a string in recovery claims).
    """
    if name == "data":
        return base64.b64decode(value, validate=True)
    if name == "kind":
        if value.__class__ is not int:
            raise ValueError("kind is 1 or 2")
        return MessageKind(value)
    if name == "attachments":
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise ValueError("attachments is a list of base64 strings")
        return tuple(base64.b64decode(a, validate=True) for a in value)
    if name == "uuids":
        if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
            raise ValueError("uuids is a list of strings")
        return tuple(value)
    if annotation in ("int", int):
        if value.__class__ is not int:
            raise ValueError(f"{name} is an int")
        return value
    if name == "final":
        if value.__class__ is not bool:
            raise ValueError("final is a bool")
        return value
    if name == "timeout":  # checked further (finite, at most a day) by the relay itself
        if value.__class__ not in (int, float):
            raise ValueError("timeout is a number")
        return float(value)
    if not isinstance(value, str):  # node, room, event, exclude, namespace, to, uuid, error...
        raise ValueError(f"{name} is a string")
    return value


def parse_relay(message: bytes | str) -> tuple[Relay, Any]:
    """A relay made by ``encode_relay``, and its publish time (ms since the epoch) if stamped."""
    try:
        doc = json.loads(message)
        cls = Relay.for_op(doc["op"])
        fields = {
            field.name: _field(field.name, doc[field.name], field.type)
            for field in dataclasses.fields(cls)
            if field.name in doc
        }
        sent = doc.get("t")
        return cls(**fields), sent if sent.__class__ is int else None
    except (KeyError, TypeError, AttributeError, ValueError, LocalProtocolError) as exc:
        raise ValueError(f"not a relay: {exc}") from None


def check_url(url: str) -> tuple[str, bool]:
    """Refuse a URL that is not a Redis URL (now, not in the reconnect loop).

    Returns the URL for coredis, and whether it names a Redis Cluster.
    """
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+cluster:// or "
            f"rediss+cluster:// (not {url!r})"
        )
    plain, cluster = split_url(url)
    try:
        coredis.ConnectionPool.from_url(plain)
    except Exception as exc:  # coredis raises what its URL parsing raises
        raise ValueError(f"not a usable Redis URL: {exc}") from None
    if cluster and urlsplit(plain).path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has database 0 only (not {url!r})")
    return plain, cluster


def stream_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id (``"ms-seq"``) as a pair that compares in stream order."""
    text = value.decode("ascii") if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Deaf(Exception):
    """This node stopped hearing its own heartbeat: its subscription is dead."""


def first_failure(exc: BaseException) -> str:
    """The first leaf of an exception group (anyio task groups wrap what failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
