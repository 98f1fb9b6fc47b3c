"""``running_clock``: the running loop's own clock, which the drivers read per message."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import trio
import trio.testing

from ikisocket_adapters._common import running_clock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_it_reads_what_anyio_reads_on_either_backend(anyio_backend: str) -> None:
    clock = running_clock()
    before = anyio.current_time()
    now = clock()
    after = anyio.current_time()
    assert before <= now <= after
    await anyio.sleep(0.02)
    assert clock() - now >= 0.02
    if anyio_backend == "asyncio":
        assert clock == asyncio.get_running_loop().time  # no lookup left per call


def test_a_trio_run_with_a_custom_clock_is_followed() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> tuple[float, float]:
        read = running_clock()
        first = read()
        await trio.sleep(3600)  # (the clock jumps: no real wait)
        return first, read()

    first, second = trio.run(main, clock=clock)
    assert second - first >= 3600
