"""Run the test suite on the oldest and the newest supported Python."""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# pyenv keeps interpreters outside PATH; make them visible to nox.
for _bin in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin"))):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


@nox.session(python=["3.10", "3.13"])
def tests(session: nox.Session) -> None:
    """Install the package with its test extras and run pytest."""
    session.install("-e", ".[test,trio,anyio,redis,uvloop,docs]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)
