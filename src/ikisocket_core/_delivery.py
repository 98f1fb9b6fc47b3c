"""Delivery: one hub ``Send`` routed to the output of its targets' connections.

Split from :mod:`._connection` (whose ``ServerConnection`` it fills): the
fan-out path, where the work per target is counted in bytecodes. A broadcast
serialises its frame (or, at the message entry, its message) once and queues
the same object for every target; only a connection with its own deflate
context gets a frame of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._actions import Send
from ._connection import _MESSAGE, _SHARED_FRAME, ServerConnection
from ._frames import _frame, deflate_frame
from ._socketio._polling import Polling

if TYPE_CHECKING:
    from .protocol import Server

# Public through ikisocket_core.protocol's use of it, not the package top level.
__all__: list[str] = []


def deliver(node: Server, action: Send) -> None:
    """Route one hub ``Send`` to its targets: encode once, one append per target.

    The frame (or, at the message entry, the encoded message) is built once
    and the very same object is queued for every target without extensions;
    a compressed connection gets its own (RFC 7692 7.2: its own deflate
    context). The output bound applies per target.

    Args:
        node: The node the targets belong to.
        action: The hub's action.
    """
    shared: bytes | None = None
    shared_message: Any = None
    data = action.data
    kind = action.kind
    size = len(data)
    max_queue = node.config.max_queue
    dirty = node._dirty.append
    targets = action.targets
    skipped = 0  # targets that get no frame (frames_out counts the others)
    # What the previous target got (item, item_size), kept for the next while their
    # framing is the same: set by the first target, as no framing is -1.
    current = -1
    for kws in targets:
        conn = kws.conn
        if conn.__class__ is not ServerConnection or conn._out_closed:
            if conn.__class__ is Polling:  # a Socket.IO session on HTTP long-polling
                conn.push(data, kind)
            skipped += 1
            continue
        if conn._framing != current:
            current = conn._framing
            if current == _SHARED_FRAME:
                if shared is None:
                    shared = _frame(kind, data)
                    frame_size = len(shared)
                    node.stats.broadcast_encodes += 1
                item: Any = shared
                item_size = frame_size
            elif current == _MESSAGE:
                if shared_message is None:
                    shared_message = node.encode_message(kind, data)
                item = shared_message
                item_size = size
            else:  # _OWN_FRAME: its own, for it alone
                current = -1
                item = deflate_frame(conn._ws, data, kind)
                item_size = len(item)
        # Backpressure above max_queue; a message always fits an empty buffer. (The same
        # bound as ServerConnection.deliver_own, the single-target twin of this loop.)
        buffered = conn.buffered
        if buffered and buffered + item_size > max_queue:
            conn._overflow(buffered + item_size)
            continue
        conn._out.append(item)
        conn.buffered = buffered + item_size
        if not conn.dirty:
            conn.dirty = True
            dirty(conn)
    node.stats.frames_out += len(targets) - skipped
