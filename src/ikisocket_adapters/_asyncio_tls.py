"""TLS on asyncio's own loops with a read buffer sized to what a connection receives.

``loop.start_tls`` wraps the transport in asyncio's ``SSLProtocol`` (Python
3.11 and later), which makes one ``bytearray`` of its ``max_size``, 256 KiB,
per connection for the encrypted bytes it reads, zero-filled and so resident
from the handshake on: 288 KiB of server memory per idle ``wss://``
connection on the default loop against 42-44 KiB on uvloop or trio (400
connections, ``VmRSS``). Its reads of decrypted data ask for ``max_size``
too, which glibc serves with ``mmap`` (see ``_common.read_small``).

:func:`start_tls` does what ``loop.start_tls`` does with a subclass of that
protocol that starts at :data:`FIRST_READ` and grows to
:data:`~ikisocket_adapters._common.RECEIVE_SIZE` the first time a read fills
its buffer (a large message arriving): a connection that only ever receives
small messages holds :data:`FIRST_READ`. The buffer is the base class's own
(it grows it when asked for more); only its public ``max_size`` is set here.
Where that protocol is not the one this module knows (another Python), it
falls back to ``loop.start_tls``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from ._common import RECEIVE_SIZE

__all__: list[str] = []  # (the asyncio adapter's internals)

#: What a new TLS connection reads at a time: a whole TLS record (16 KiB of data).
FIRST_READ = 17 * 1024

_sslproto: Any = getattr(asyncio, "sslproto", None)
_Base: Any = getattr(_sslproto, "SSLProtocol", None)
#: Whether this Python's ``SSLProtocol`` reads into a buffer of its ``max_size`` (3.11+).
SIZED = all(hasattr(_Base, name) for name in ("max_size", "get_buffer", "buffer_updated"))


if SIZED:

    class _SSLProtocol(_Base):  # type: ignore[misc]
        """asyncio's ``SSLProtocol``, reading :data:`FIRST_READ` until a read comes back full."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.max_size = FIRST_READ  # (the base class sizes its buffer by it)
            super().__init__(*args, **kwargs)

        def buffer_updated(self, nbytes: int) -> None:
            if nbytes >= self.max_size and self.max_size < RECEIVE_SIZE:
                self.max_size = RECEIVE_SIZE  # the next get_buffer grows the buffer
            super().buffer_updated(nbytes)


async def start_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    handshake_timeout: float,
) -> asyncio.Transport | None:
    """Negotiate TLS as the server on ``transport`` and hand ``protocol`` the TLS transport.

    ``loop.start_tls(transport, protocol, context, server_side=True,
    ssl_handshake_timeout=handshake_timeout)``, with the protocol of this
    module (see its docstring). For asyncio's own loops (the adapter
    negotiates TLS itself only there; uvloop's loop does it on its own).

    Returns:
        The TLS transport (typed optional, as ``loop.start_tls``'s).

    Raises:
        Exception: As ``loop.start_tls`` does: the handshake failed or timed out.
    """
    if not SIZED:
        return await loop.start_tls(
            transport,
            protocol,
            context,
            server_side=True,
            ssl_handshake_timeout=handshake_timeout,
        )
    assert isinstance(transport, asyncio.Transport)
    waiter = loop.create_future()
    tls = _SSLProtocol(
        loop,
        protocol,
        context,
        waiter,
        server_side=True,
        ssl_handshake_timeout=handshake_timeout,
        call_connection_made=False,
    )
    # As loop.start_tls: no read before the TLS protocol has its transport.
    transport.pause_reading()
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    app: asyncio.Transport | None = tls._app_transport
    return app
