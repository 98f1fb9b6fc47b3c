"""Which build of the engine is loaded: the pure-Python modules or the compiled ones.

The optional compiled build (``make compiled``; see docs/howto/compiled.md) compiles the
engine's hot modules with mypyc into extension modules that sit beside their ``.py`` files.
Python imports an extension module in preference to the source file of the same name, so
where the build left one, it is what runs; everywhere else the ``.py`` file is the fallback,
with the same behaviour.
"""

from __future__ import annotations

from importlib import import_module
from importlib.machinery import EXTENSION_SUFFIXES

#: The modules the compiled build compiles, in the order of pyproject.toml's mypyc hook
#: (``[tool.hatch.build.targets.wheel.hooks.mypyc] include``; a test keeps both the same).
HOT_MODULES: tuple[str, ...] = (
    "ikisocket_core._reader",
    "ikisocket_core._frames",
    "ikisocket_core._connection",
    "ikisocket_core._delivery",
    "ikisocket_core._stats",
    "ikisocket_core._handshake",
    "ikisocket_core._socketio._packets",
    "ikisocket_core._socketio._session",
    "ikisocket_core._socketio._namespace",
    "ikisocket_core._socketio._mount",
)


def build_info() -> dict[str, bool]:
    """Which of the engine's hot modules run compiled.

    Returns:
        For each module the compiled build compiles (its dotted name), ``True`` when the
        module was loaded from a compiled extension and ``False`` when from its ``.py``
        file.
    """
    suffixes = tuple(EXTENSION_SUFFIXES)
    return {name: str(import_module(name).__file__).endswith(suffixes) for name in HOT_MODULES}


#: ``True`` when every hot module of the engine runs compiled (the compiled build is
#: installed), ``False`` for the pure-Python modules. :func:`build_info` says it per module.
compiled: bool = all(build_info().values())

#: ``True`` when payloads from clients are unmasked by websockets' C ``apply_mask`` (installed
#: with ``websockets``, the ``speedups`` extra), ``False`` when by the engine's pure Python.
native_unmask: bool = import_module("ikisocket_core._reader")._c_unmask is not None

__all__ = ["build_info", "compiled", "native_unmask"]
