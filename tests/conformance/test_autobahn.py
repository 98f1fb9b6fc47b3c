"""A fast slice of the Autobahn|Testsuite (cases 1-7 and some permessage-deflate) in `make test`.

The full suite runs with `make conformance` and in `.ci/run`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import autobahn
import matrix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def wstest() -> Path:
    try:
        return autobahn.ensure_wstest()
    except autobahn.AutobahnSetupError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Autobahn is required under CI: {exc}")
        pytest.skip(str(exc))


def test_autobahn_fast_slice_on_asyncio(wstest: Path, tmp_path: Path) -> None:
    cases = [*matrix.CASE_SETS["fast"], "12.1.1", "12.1.2", "13.1.1", "13.3.3"]
    summary = matrix.run_adapter("asyncio", cases, tmp_path)
    print(summary.line())
    assert summary.ok, "\n".join(summary.failure_lines())
    assert len(summary.cases) >= 240
