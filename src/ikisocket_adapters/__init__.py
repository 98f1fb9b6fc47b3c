"""Adapters that drive the sans-IO core on real I/O: asyncio, trio, anyio, ASGI, Redis."""
