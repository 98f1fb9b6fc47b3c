"""``node`` with socket.io-client, installed from npm at test time next to this file.

``package.json`` here pins the client; ``node_modules`` is git-ignored. The
tests that drive socket.io-client in Node (``tests/integration``,
``tests/docs``) call :func:`node_with_socketio_client`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

#: This folder: ``package.json``, the scripts, and ``node_modules`` once installed.
NODE_DIR = Path(__file__).resolve().parent


def node_with_socketio_client(missing: Callable[[str], None]) -> str:
    """Return the path of ``node``, installing socket.io-client first when needed.

    Args:
        missing: Called with the reason when ``node``/``npm`` is absent or the
            install fails (it skips the test, or fails it under CI); it must raise.

    Returns:
        The ``node`` executable.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing("node and npm are needed for socket.io-client")
    assert node is not None
    assert npm is not None
    if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            missing(f"npm install failed: {done.stderr[-500:]}")
    return node
