"""``ikisocket_core`` stays sans-IO: no event loop, socket, thread or clock is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ikisocket_core

FORBIDDEN = frozenset({"asyncio", "trio", "anyio", "socket", "selectors", "threading", "time"})
PACKAGE = Path(ikisocket_core.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def forbidden_imports(source: str) -> list[str]:
    """Every forbidden module ``source`` imports, wherever the import statement is."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots = [alias.name.partition(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots = [node.module.partition(".")[0]]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots = [node.args[0].value.partition(".")[0]]
        else:
            continue
        found += [root for root in roots if root in FORBIDDEN]
    return found


def test_every_core_module_is_checked() -> None:
    names = {path.name for path in SOURCES}
    assert {"__init__.py", "_hub.py", "_websocket.py", "testing.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_core_module_imports_no_io(path: Path) -> None:
    assert forbidden_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import os, socket",
        "import trio.lowlevel",
        "import anyio as a",
        "from time import monotonic",
        "from selectors import DefaultSelector",
        "from threading import Lock",
        "def f():\n    import time\n",
        "class C:\n    def m(self):\n        from asyncio import sleep\n",
        "if True:\n    try:\n        import trio\n    except ImportError:\n        pass\n",
        "__import__('socket')",
        "importlib.import_module('asyncio.events')",
    ],
)
def test_the_checker_finds_forbidden_imports(source: str) -> None:
    assert forbidden_imports(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import timeit",
        "import asyncio_extra",
        "from . import time",
        "from .socket import x",
        "from os import time",
        "import json, logging",
        "import_module(name)",
    ],
)
def test_the_checker_allows_other_imports(source: str) -> None:
    assert forbidden_imports(source) == []
