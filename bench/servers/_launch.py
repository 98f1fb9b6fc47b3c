"""Start a benchmark server script, saying first which copy of a package it imports.

``bench/run.py`` starts every server as::

    python bench/servers/_launch.py [--probe ikisocket_core] SCRIPT --mode echo ...

This runs ``SCRIPT`` exactly as ``python SCRIPT ...`` would (its own directory
first on ``sys.path``, ``__name__ == "__main__"``), after importing the probed
package and writing ``PROBE ikisocket_core /path/to/ikisocket_core/__init__.py``
to stderr (the server's log). The script's own import then finds the module
already loaded, so the path is the one the server runs. The runner reads it back
to check that a ``--baseline`` row really runs the old revision's code (its
``src/`` first on ``PYTHONPATH``) and the other rows the working tree's. For
``ikisocket_core`` it also writes ``NATIVE_UNMASK True`` or ``False``: whether the
engine unmasks with websockets' C ``apply_mask`` (the bench installs websockets).

``SCRIPT`` may live in another directory (a baseline revision's
``bench/servers/``): this file only needs the standard library.
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path


def main() -> None:
    args = sys.argv[1:]
    probe = None
    if args[:1] == ["--probe"]:
        probe, args = args[1], args[2:]
    script = Path(args[0]).resolve()
    sys.argv = [str(script), *args[1:]]
    sys.path[0] = str(script.parent)
    if probe is not None:
        module = importlib.import_module(probe)
        sys.stderr.write(f"PROBE {probe} {module.__file__}\n")
        if hasattr(module, "native_unmask"):  # (ikisocket_core: which unmasking runs)
            sys.stderr.write(f"NATIVE_UNMASK {module.native_unmask}\n")
        sys.stderr.flush()
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
