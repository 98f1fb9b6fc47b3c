"""``each_unmask``: a reader test run with the unmasking installed, then with pure Python's.

Where ``websockets`` is installed with its C extension (the test environment installs it),
the engine unmasks every payload with its ``apply_mask``; the pure-Python unmasking is what
runs everywhere else, so the reader's tests run on both: import the fixture and mark the
module with ``pytestmark = pytest.mark.usefixtures("each_unmask")``. (On the compiled
build the patch does not reach the compiled reader: both runs take the installed path
there, and ``_unmask_py`` is tested directly.)
"""

from __future__ import annotations

import pytest

from ikisocket_core import _reader


@pytest.fixture(params=["installed", "python"])
def each_unmask(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs with the unmasking the environment has, then with the pure-Python one."""
    if request.param == "python":
        monkeypatch.setattr(_reader, "_c_unmask", None)
    return str(request.param)
