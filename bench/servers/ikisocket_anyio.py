"""ikisocket on its anyio adapter (``--loop asyncio`` or ``--loop trio``: anyio's backend).

The same hub as ``ikisocket_asyncio.py``; the asyncio backend runs on the default loop.
"""

from __future__ import annotations

import anyio
from _common import HOST, OURS, announce, parse_args, raise_fd_limit
from ikisocket_asyncio import make_hub

from ikisocket_adapters.anyio import open_server


async def main(mode: str) -> None:
    async with open_server(make_hub(mode), HOST, 0, **OURS) as server:
        announce(server.port)
        await anyio.sleep_forever()


if __name__ == "__main__":
    args = parse_args(loops=("asyncio", "trio"))
    raise_fd_limit()
    anyio.run(main, args.mode, backend=args.loop)
