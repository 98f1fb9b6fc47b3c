"""Fixtures of the integration suite: real servers on 127.0.0.1, one per registered launcher."""

from __future__ import annotations

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
