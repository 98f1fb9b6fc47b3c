"""ikisocket on its trio adapter; the same hub as ``ikisocket_asyncio.py``."""

from __future__ import annotations

import trio
from _common import HOST, OURS, announce, parse_args, raise_fd_limit
from ikisocket_asyncio import make_hub

from ikisocket_adapters.trio import open_server


async def main(mode: str) -> None:
    async with open_server(
        make_hub(mode),
        HOST,
        0,
        **OURS,
    ) as server:
        announce(server.port)
        await trio.sleep_forever()


if __name__ == "__main__":
    args = parse_args(loops=("trio",))
    raise_fd_limit()
    trio.run(main, args.mode)
