"""The documentation builds with no warning, and documents what it promises to.

The build is ``sphinx-build -W -n`` (warnings are errors, every cross-reference
must resolve), run once per session in a subprocess into a temporary
directory. Without Sphinx the tests skip, except under CI (``CI=true``), where
the ``docs`` extra is installed and a missing Sphinx is a failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from ikisocket_core._state import TRANSITIONS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: A whole build takes 10-30 s here; this only stops a hung one.
BUILD_TIMEOUT = 240

# The first test pays for the build (the module-scoped fixture).
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + 60)

PUBLIC_MODULES = (
    "ikisocket_core",
    "ikisocket_core.protocol",
    "ikisocket_core.testing",
    "ikisocket_adapters.asyncio",
    "ikisocket_adapters.trio",
    "ikisocket_adapters.anyio",
    "ikisocket_adapters.asgi",
    "ikisocket_adapters.redis",
    "ikisocket_adapters.cli",
)


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if IN_CI:
            pytest.fail(f"{module} is not installed: the docs extra must be installed in CI")
        pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the docs once; the HTML output directory."""
    _require("sphinx")
    _require("myst_parser")
    _require("furo")
    out = tmp_path_factory.mktemp("docs-html")
    doctrees = tmp_path_factory.mktemp("docs-doctrees")
    env = {k: v for k, v in os.environ.items() if k != "IKISOCKET_DOCS_INTERSPHINX"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-n",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(doctrees),
            str(DOCS),
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    return out


def _inventory(html: Path) -> set[str]:
    """The Python object names in the build's ``objects.inv``."""
    raw = (html / "objects.inv").read_bytes()
    lines = raw.split(b"\n", 4)
    assert lines[0].startswith(b"# Sphinx inventory version 2")
    names = set()
    for line in zlib.decompress(lines[4]).decode("utf-8").splitlines():
        name, role = line.split(" ", 2)[:2]
        if role.startswith("py:"):
            names.add(name)
    return names


def test_the_docs_build_without_warnings(html: Path) -> None:
    assert (html / "index.html").is_file()
    for page in (
        "tutorial/index",
        "howto/write-your-own-adapter",
        "howto/testing",
        "explanation/events",
        "explanation/errors",
        "explanation/states",
        "reference/features",
        "changes",
    ):
        assert (html / f"{page}.html").is_file(), page


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_is_in_the_reference(html: Path, module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")  # its reference page is left out
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:  # an optional dependency is missing
        if IN_CI:
            raise
        pytest.skip(f"{module} does not import: {exc}")
    documented = _inventory(html)
    assert module in documented
    missing = [n for n in imported.__all__ if f"{module}.{n}" not in documented]
    assert missing == []


def test_build_survives_missing_optional_pages(tmp_path: Path) -> None:
    """Glob entries that match nothing (a page not written yet) are not warnings."""
    _require("sphinx")
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(DOCS / '_ext')!r}, {str(ROOT / 'src')!r}]\n"
        "extensions = ['ikisocket_docs']\n"
        "nitpicky = True\n",
        "utf-8",
    )
    (src / "index.rst").write_text(
        "Home\n====\n\n.. toctree::\n   :glob:\n\n   present\n   later*\n   *\n", "utf-8"
    )
    (src / "present.rst").write_text("Present\n=======\n", "utf-8")
    (src / "extra.rst").write_text("Extra\n=====\n", "utf-8")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    index = (out / "index.html").read_text("utf-8")
    assert "present.html" in index
    assert "extra.html" in index  # a page someone else adds is picked up by the glob


def test_state_diagram_is_generated_from_the_table(html: Path) -> None:
    page = (html / "explanation" / "states.html").read_text("utf-8")
    text = re.sub(r"<[^>]+>", "", page).replace("&gt;", ">")
    for (state, event), target in TRANSITIONS.items():
        assert f"{state.name} --> {target.name}: {event.value}" in text


def test_pages_other_people_write_are_picked_up_when_present(html: Path) -> None:
    for page in ("tutorial/chat", "explanation/sans-io", "explanation/performance", "howto/asgi"):
        if (DOCS / f"{page}.md").exists() or (DOCS / f"{page}.rst").exists():
            assert (html / f"{page}.html").is_file(), page


def test_changelog_fragments_render() -> None:
    _require("towncrier")
    result = subprocess.run(
        [sys.executable, "-m", "towncrier", "build", "--draft", "--version", "9.9.9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "## 9.9.9" in result.stdout
    for fragment in (ROOT / "newsfragments").glob("*.md"):
        if fragment.name != "README.md":
            first_line = fragment.read_text("utf-8").splitlines()[0]
            assert first_line in result.stdout, fragment.name
