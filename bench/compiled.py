"""The compiled build of the working tree, unpacked where the ``ikisocket+mypyc`` rows import it.

``bench/run.py`` calls :func:`prepare` before it measures a ``+mypyc`` row: it builds the
working tree's wheel the way ``make compiled`` does (hatchling's mypyc hook switched on), unpacks
it into ``bench/results/compiled/site/`` and checks there that ``ikisocket_core.compiled`` is
true. The rows then run the same server scripts with that directory first on ``PYTHONPATH``. A
rebuild happens only when a file under ``src/`` (or pyproject.toml) changed since the last one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Where the unpacked compiled build lives (bench/results/ is ignored by git).
SITE = REPO / "bench" / "results" / "compiled" / "site"
_STAMP = SITE.parent / "source-hash"
_ENV = {"HATCH_BUILD_HOOK_ENABLE_MYPYC": "1"}


def source_hash() -> str:
    """A hash of what the compiled build is made of: ``src/`` and pyproject.toml."""
    digest = hashlib.sha256()
    files = [REPO / "pyproject.toml", *sorted((REPO / "src").rglob("*.py"))]
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def prepare() -> str | None:
    """Build and unpack the compiled build if it is missing or stale.

    Returns:
        ``None`` when ``SITE`` holds a compiled build of the working tree, else why not
        (no compiler, a failed build, or a build whose modules did not load compiled).
    """
    wanted = source_hash()
    if _STAMP.exists() and _STAMP.read_text() == wanted and SITE.is_dir():
        return None
    print("  building the compiled wheel (mypyc) for the +mypyc rows ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The sdist, then the wheel from it: mypyc's hook never builds inside src/.
        build = subprocess.run(
            [sys.executable, "-m", "build", "--outdir", tmp, str(REPO)],
            env=os.environ | _ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(tmp).glob("ikisocket-*.whl"))
        if build.returncode or not wheels:
            return "compiled build failed: " + (build.stderr.strip().splitlines() or ["?"])[-1]
        shutil.rmtree(SITE, ignore_errors=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(SITE)
    check = subprocess.run(
        [sys.executable, "-c", "import ikisocket_core as c; raise SystemExit(not c.compiled)"],
        env=os.environ | {"PYTHONPATH": str(SITE)},
        check=False,
    )
    if check.returncode:
        return f"the build in {SITE} does not load compiled"
    _STAMP.write_text(wanted)
    return None
