"""Run the test suite on the oldest and the newest supported Python.

The oldest runs on the pure-Python modules (an editable install, as ``make test``); the newest
on the optional compiled build (mypyc, see docs/howto/compiled.md), so the whole suite runs
against both builds without a stage of its own. ``IKISOCKET_BUILD`` tells
tests/core/test_build.py which build the session installed, so a silent fallback fails.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# pyenv keeps interpreters outside PATH; make them visible to nox.
for _bin in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin"))):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

EXTRAS = ".[test,trio,anyio,redis,uvloop,docs]"
#: The Python whose session installs the compiled build.
COMPILED_ON = "3.13"
#: What makes hatchling run the mypyc hook (off by default, see pyproject.toml).
COMPILE_ENV = {"HATCH_BUILD_HOOK_ENABLE_MYPYC": "1"}


@nox.session(python=["3.10", COMPILED_ON])
def tests(session: nox.Session) -> None:
    """Install the package with its test extras (compiled on the newest Python) and run pytest."""
    if session.python == COMPILED_ON:
        build = "compiled"
        # Not editable: the compiled modules go to site-packages, never next to src/'s files.
        # `python -m build` makes the sdist, then the wheel from it in a temporary directory.
        out = Path(session.create_tmp())
        for old in out.glob("ikisocket-*"):
            old.unlink()
        session.install("build")
        session.run("python", "-m", "build", "--outdir", str(out), ".", env=COMPILE_ENV)
        (wheel,) = out.glob("ikisocket-*.whl")
        session.install("--force-reinstall", "--no-deps", str(wheel))
        session.install(f"{wheel}{EXTRAS[1:]}")
    else:
        build = "pure"
        session.install("-e", EXTRAS)
    # The soak's shutdown of 1,000 chatting clients (minutes on 2 cores) runs in `make test`;
    # it checks the adapters under load, not the interpreter, so the matrix leaves it out.
    args = session.posargs or ["--ignore=tests/soak"]
    session.run("python", "-m", "pytest", "-q", *args, env={"IKISOCKET_BUILD": build})
