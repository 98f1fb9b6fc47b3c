"""The checks of :meth:`Hub.socketio`'s settings, before the mount is made.

They run before :class:`~ikisocket_core.SocketIO` is called and outside it: the compiled
build (docs/howto/compiled.md) compiles the mount, whose typed arguments mypyc converts or
refuses with a ``TypeError`` on the way in (``True`` becomes ``1.0``, ``1.5`` is no ``int``),
while a wrong setting must be a :class:`~ikisocket_core.LocalProtocolError` on both builds.
"""

from __future__ import annotations

from collections.abc import Mapping

from ikisocket_core._errors import LocalProtocolError

__all__: list[str] = []


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise LocalProtocolError(f"{name} must be a positive number, not {value!r}")


def check_settings(path: object, numbers: Mapping[str, object]) -> None:
    """Refuse a Socket.IO setting of the wrong type or range.

    Args:
        path: The mount's path.
        numbers: The numeric settings given, by name (any of ``ping_interval``,
            ``ping_timeout``, ``connect_timeout``, ``max_payload``,
            ``max_pending_acks``, ``max_attachments``; others are not looked at).

    Raises:
        LocalProtocolError: The path does not start with ``/``; a time is not a
            positive number, a bound not a positive integer, ``max_attachments``
            not an integer.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise LocalProtocolError(f"a path starts with '/', not {path!r}")
    for name in ("max_payload", "max_pending_acks"):
        value = numbers.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LocalProtocolError(f"{name} must be a positive integer, not {value!r}")
    attachments = numbers.get("max_attachments", 0)
    if isinstance(attachments, bool) or not isinstance(attachments, int):
        raise LocalProtocolError("max_attachments must be an integer")
    for name in ("ping_interval", "ping_timeout", "connect_timeout"):
        _positive(name, numbers[name])
