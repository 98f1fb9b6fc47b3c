"""The optional compiled build: what it compiles, and telling at run time which build runs.

The same suite runs on both builds: ``make test`` on the pure-Python modules of the editable
install, the nox session of the newest Python on the compiled build (``IKISOCKET_BUILD``
says which one each session installed, so a build that silently fell back fails here).
"""

from __future__ import annotations

import os
import re
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.metadata import distribution
from pathlib import Path

import ikisocket_core
from ikisocket_core._build import HOT_MODULES

ROOT = Path(__file__).resolve().parents[2]


def hook_includes() -> list[str]:
    """The files pyproject.toml's mypyc hook compiles (its ``include`` array)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    hook = text.split("[tool.hatch.build.targets.wheel.hooks.mypyc]", 1)[1].split("\n[", 1)[0]
    block = re.search(r"^include = \[(.*?)\]", hook, re.DOTALL | re.MULTILINE)
    assert block is not None, "the mypyc hook has no include array"
    return re.findall(r'"([^"]+)"', block.group(1))


def installed_extensions() -> set[str]:
    """The hot modules the installed distribution ships compiled (from its RECORD)."""
    files = distribution("ikisocket").files or []
    found = set()
    for file in files:
        name = str(file)
        suffix = next((s for s in EXTENSION_SUFFIXES if name.endswith(s)), None)
        if suffix is not None:
            found.add(name.removesuffix(suffix).replace("/", "."))
    return found & set(HOT_MODULES)


def test_the_hook_compiles_exactly_the_hot_modules() -> None:
    assert hook_includes() == [f"src/{name.replace('.', '/')}.py" for name in HOT_MODULES]


def test_build_info_says_where_each_hot_module_was_loaded_from() -> None:
    info = ikisocket_core.build_info()
    assert list(info) == list(HOT_MODULES)
    for name, compiled in info.items():
        file = str(sys.modules[name].__file__)
        assert compiled == (not file.endswith(".py")), file
    assert ikisocket_core.compiled is all(info.values())


def test_the_build_installed_is_the_build_loaded() -> None:
    shipped = installed_extensions()
    assert shipped in (set(), set(HOT_MODULES)), f"a partial compiled build: {shipped}"
    wanted = os.environ.get("IKISOCKET_BUILD") or ("compiled" if shipped else "pure")
    assert wanted in ("compiled", "pure"), f"IKISOCKET_BUILD={wanted!r}"
    info = ikisocket_core.build_info()
    if wanted == "pure":
        assert not shipped
        assert info == dict.fromkeys(HOT_MODULES, False), "compiled modules loaded (left in src/?)"
        assert ikisocket_core.compiled is False
        return
    assert shipped == set(HOT_MODULES), "IKISOCKET_BUILD=compiled but the wheel is pure"
    assert info == dict.fromkeys(HOT_MODULES, True)
    assert ikisocket_core.compiled is True
    for name in HOT_MODULES:
        compiled_file = Path(str(sys.modules[name].__file__))
        # The pure-Python module ships beside it: the fallback, and the source of its docs.
        assert compiled_file.with_name(name.rpartition(".")[2] + ".py").is_file()
