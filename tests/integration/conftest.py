"""Fixtures of the integration suite: real servers on 127.0.0.1, one per registered launcher."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from servers import LAUNCHERS, RunningServer, launch


def _params() -> list[Any]:
    return [
        pytest.param(
            name,
            marks=[pytest.mark.xfail(reason=launcher.broken, strict=False)]
            if launcher.broken
            else [],
        )
        for name, launcher in LAUNCHERS.items()
    ]


@pytest.fixture(scope="session", params=_params())
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """The scenario app served by each registered launcher in turn (one process per session)."""
    launcher = LAUNCHERS[request.param]
    missing = launcher.missing()
    if missing:
        pytest.skip(f"{launcher.name} needs {', '.join(missing)}")
    with launch(launcher) as running:
        yield running


@pytest.fixture
def anyio_backend() -> str:
    """The scenarios use the ``websockets`` asyncio client."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _collect_coredis_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a Redis test, collect what coredis left to the garbage collector, there and then.

    coredis 6.9 leaves anyio memory streams unclosed (see ``redis_support.pytestmark``); the
    Redis tests ignore the warnings their collection raises. Collected later, inside another
    test (Python 3.13 collected them in an adapter scenario), the warnings failed that test.
    """
    yield
    if request.module.__name__.startswith("test_redis"):
        gc.collect()
