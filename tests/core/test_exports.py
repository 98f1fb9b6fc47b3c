"""The package's public surface: ``__all__`` everywhere, re-exports, docstrings."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import ikisocket_core
from ikisocket_core.testing import TestClient

#: Every module of the package, subpackages' included (``_socketio._mount``...).
MODULES = sorted(
    info.name for info in pkgutil.walk_packages(ikisocket_core.__path__, "ikisocket_core.")
)
MODULES = [name.removeprefix("ikisocket_core.") for name in MODULES]
PRIVATE = [name for name in MODULES if name.startswith("_")]
PUBLIC = [name for name in MODULES if not name.startswith("_")]

#: Bound to ``default_hub``: the seed's package-level functions.
ALIASES = {"on", "off", "new", "emit_to", "emit_to_list", "broadcast", "fire", "default_hub"}
#: Offered by their private modules but internal: not re-exported (see ``test_internals...``).
INTERNAL = {"TRANSITIONS", "transition", "StateInput", "Router", "Match"}


def load(name: str) -> ModuleType:
    return importlib.import_module(f"ikisocket_core.{name}")


def test_the_core_modules_are_all_found() -> None:
    assert {
        "_actions",
        "_dispatch",
        "_errors",
        "_events",
        "_federation",
        "_hub",
        "_registry",
        "_relays",
        "_routing",
        "_state",
        "_websocket",
    } <= set(PRIVATE)
    assert "testing" in PUBLIC


@pytest.mark.parametrize("name", MODULES)
def test_each_module_declares_all_and_every_name_resolves(name: str) -> None:
    module = load(name)
    names = module.__dict__.get("__all__")
    assert isinstance(names, list), f"{name} has no __all__"
    assert len(names) == len(set(names)), f"{name}.__all__ repeats a name"
    for exported in names:
        assert hasattr(module, exported), f"{name}.__all__ lists missing {exported!r}"


def test_the_package_reexports_the_private_modules() -> None:
    union = {exported for name in PRIVATE for exported in load(name).__all__} - INTERNAL
    package = set(ikisocket_core.__all__)
    assert union <= package
    assert package - union == ALIASES
    for exported in package:
        assert hasattr(ikisocket_core, exported)
    for name in PRIVATE:
        for exported in set(load(name).__all__) - INTERNAL:
            assert getattr(ikisocket_core, exported) is getattr(load(name), exported)


@pytest.mark.parametrize("name", sorted(INTERNAL))
def test_internals_are_not_exported_but_still_resolve_with_a_warning(name: str) -> None:
    assert name not in ikisocket_core.__all__
    assert name not in vars(ikisocket_core)
    owner = next(load(m) for m in PRIVATE if name in load(m).__all__)
    with pytest.warns(DeprecationWarning, match=rf"ikisocket_core\.{name} is internal"):
        found = getattr(ikisocket_core, name)
    assert found is getattr(owner, name)


def test_an_unknown_attribute_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        ikisocket_core.nothing_here  # noqa: B018
    assert not hasattr(ikisocket_core, "Relays")


def test_aliases_are_bound_to_the_default_hub() -> None:
    hub = ikisocket_core.default_hub
    assert isinstance(hub, ikisocket_core.Hub)
    assert ikisocket_core.on == hub.on
    assert ikisocket_core.off == hub.off
    assert ikisocket_core.new == hub.websocket
    assert ikisocket_core.emit_to == hub.emit_to
    assert ikisocket_core.emit_to_list == hub.emit_to_list
    assert ikisocket_core.broadcast == hub.broadcast
    assert ikisocket_core.fire == hub.fire


def test_the_design_names_are_public() -> None:
    for exported in (
        "Hub",
        "Websocket",
        "EventPayload",
        "EVENT_MESSAGE",
        "EVENT_PING",
        "EVENT_PONG",
        "EVENT_DISCONNECT",
        "EVENT_CONNECT",
        "EVENT_CLOSE",
        "EVENT_ERROR",
        "TEXT",
        "BINARY",
        "UnknownConnection",
    ):
        assert exported in ikisocket_core.__all__
    assert TestClient.__module__ == "ikisocket_core.testing"


def own_doc(obj: object) -> str | None:
    """The docstring written for ``obj`` itself (not inherited, not generated)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if isinstance(obj, ModuleType) and ikisocket_core.build_info().get(obj.__name__):
        # mypyc drops a compiled module's docstring; the source file beside it has it.
        source = Path(str(obj.__file__)).with_name(obj.__name__.rpartition(".")[2] + ".py")
        doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8")))
    if isinstance(obj, type) and ikisocket_core.build_info().get(obj.__module__):
        # So does it a compiled class's (its methods are no Python functions: not listed).
        source = Path(str(sys.modules[obj.__module__].__file__))
        tree = ast.parse(source.with_name(source.name.partition(".")[0] + ".py").read_text())
        (node,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == obj.__name__)
        doc = ast.get_docstring(node)
    if isinstance(obj, type) and doc and doc.startswith(f"{obj.__name__}("):
        return None  # the signature dataclasses write when there is no docstring
    return doc if isinstance(doc, str) and doc.strip() else None


def public_objects() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = [("ikisocket_core", ikisocket_core)]
    for name in MODULES:
        module = load(name)
        found.append((module.__name__, module))
        for exported in module.__all__:
            obj = getattr(module, exported)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants and type aliases are documented with ``#:`` comments
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # a re-export: checked where it is defined
            found.append((f"{module.__name__}.{exported}", obj))
            if not inspect.isclass(obj):
                continue
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                function = (
                    member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                )
                if inspect.isfunction(function) or isinstance(function, property):
                    found.append((f"{module.__name__}.{exported}.{attr}", function))
    return found


def test_every_public_name_has_a_docstring() -> None:
    missing = [name for name, obj in public_objects() if own_doc(obj) is None]
    assert missing == []


def test_the_docstring_check_can_fail() -> None:
    @dataclass
    class Undocumented:
        x: int

        def method(self) -> None:
            pass

    class Documented:
        """Has one."""

    assert own_doc(Undocumented) is None
    assert own_doc(Undocumented.method) is None
    assert own_doc(Documented) == "Has one."
    assert len(public_objects()) > 100
