"""Run Autobahn's fuzzingclient against the echo app on every adapter; one summary line each.

::

    python tests/conformance/matrix.py --adapters all --cases all     # make conformance
    python tests/conformance/matrix.py --adapters asyncio --cases 1-10
    .nox/tests-3-13/bin/python tests/conformance/matrix.py --adapters asyncio --build compiled

The servers run on this interpreter (``sys.executable``), so on the ikisocket build installed
for it; ``--build compiled`` (or ``pure``) makes the run fail unless that is the build loaded.

Exit status 0 when every case of every adapter is OK, NON-STRICT or INFORMATIONAL.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import autobahn

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
_RUN = f"{PY} -m ikisocket_adapters run tests.conformance.echo_app:hub --port {{port}}"
_LIMITS = "--max-message-size 16777216 --ping-interval 0"

#: adapter name -> (server command template, module that must be importable)
ADAPTERS: dict[str, tuple[str, str]] = {
    "asyncio": (f"{_RUN} {_LIMITS}", "ikisocket_adapters.asyncio"),
    "asyncio-uvloop": (f"{_RUN} {_LIMITS} --uvloop", "uvloop"),
    "trio": (f"{_RUN} {_LIMITS} --adapter trio", "ikisocket_adapters.trio"),
    "anyio": (f"{_RUN} {_LIMITS} --adapter anyio", "ikisocket_adapters.anyio"),
    # Behind ASGI the server does the framing and our adapter sees whole messages, so this
    # row measures uvicorn's implementation as much as ours. Its wsproto implementation
    # passes every case. Its legacy ``--ws websockets`` fails 6.4.3/6.4.4 (invalid UTF-8
    # not failed fast) and 9.3.*/9.4.* (1009 on 4 MiB fragmented messages), and
    # ``--ws websockets-sansio`` fails 7.1.5 (1002 for data after a close frame), all in
    # the websockets library before our code runs (measured 2026-11-27).
    "uvicorn": (
        f"{PY} -m uvicorn tests.conformance.echo_asgi:app --port {{port}} --ws wsproto"
        " --ws-max-size 16777216 --ws-ping-interval 0 --log-level warning",
        "ikisocket_adapters.asgi",
    ),
}

CASE_SETS: dict[str, list[str]] = {
    "all": ["*"],
    "1-10": [f"{n}.*" for n in range(1, 11)],
    "fast": [f"{n}.*" for n in range(1, 8)],
    # What .ci/run gives the asyncio adapter: every case but the large compressed messages of
    # 12.2-12.5 and 13.2-13.7. Cases x.y.1-9 of each compression group (the same deflate
    # parameters on messages up to 4 KiB) take about a fifth of the time; x.y.10-18 (8 KiB to
    # 256 KiB, about 75 % of a full run on 2 cores) stay for 12.1 (text) and 13.1 (both
    # sides' default parameters). `make conformance` runs them all.
    "ci": [
        *(f"{n}.*" for n in range(1, 11)),
        # Exact ids: wstest anchors a pattern at its start only ("12.*.1" would take 12.5.13).
        *(f"12.{s}.{c}" for s in range(1, 6) for c in range(1, 10)),
        *(f"13.{s}.{c}" for s in range(1, 8) for c in range(1, 10)),
        "12.1.*",
        "13.1.*",
    ],
}


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_adapter(name: str, cases: Sequence[str], outdir: Path) -> autobahn.Summary:
    """Start ``name``'s echo server, run the cases, stop it.

    Args:
        name: A key of :data:`ADAPTERS`.
        cases: Autobahn case patterns.
        outdir: Where the reports go.

    Returns:
        The summary.
    """
    template, _ = ADAPTERS[name]
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    outdir.mkdir(parents=True, exist_ok=True)
    with autobahn.serve(template.format(port=port), url, log=outdir / "server.log"):
        return autobahn.run_fuzzingclient(url, agent=name, cases=cases, outdir=outdir)


def available(name: str) -> bool:
    """Whether the adapter's module can be imported here."""
    module = ADAPTERS[name][1]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--cases", default="1-10", help="all | ci | 1-10 | fast | patterns,...")
    parser.add_argument("--outdir", type=Path, default=autobahn.autobahn_home() / "runs")
    parser.add_argument(
        "--build", choices=("any", "compiled", "pure"), default="any", help="require this build"
    )
    args = parser.parse_args(argv)
    import ikisocket_core  # noqa: PLC0415 (the servers' interpreter and path are ours)

    build = "compiled" if ikisocket_core.compiled else "pure"
    print(f"autobahn: ikisocket {build} build ({Path(ikisocket_core.__file__).parent})", flush=True)
    if args.build not in ("any", build):
        print(f"autobahn: FAILED (the {args.build} build was asked for)")
        return 1
    names = list(ADAPTERS) if args.adapters == "all" else args.adapters.split(",")
    cases = CASE_SETS.get(args.cases) or [c.strip() for c in args.cases.split(",") if c.strip()]
    failed = False
    for name in names:
        if name not in ADAPTERS:
            print(f"autobahn[{name}]: unknown adapter", file=sys.stderr)
            return 2
        if not available(name):
            print(f"autobahn[{name}]: FAILED (adapter {ADAPTERS[name][1]} not importable)")
            failed = True
            continue
        started = time.monotonic()
        try:
            summary = run_adapter(name, cases, args.outdir / name)
        except autobahn.AutobahnError as exc:
            print(f"autobahn[{name}]: FAILED to run: {exc}")
            failed = True
            continue
        print(f"{summary.line()} ({time.monotonic() - started:.0f} s)", flush=True)
        for line in summary.failure_lines():
            print("  " + line)
        failed = failed or not summary.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
