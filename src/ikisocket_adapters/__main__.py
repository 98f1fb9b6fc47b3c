"""``python -m ikisocket_adapters run|demo ...``: the ``ikisocket`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
