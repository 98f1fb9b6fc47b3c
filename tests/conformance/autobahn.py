"""Autobahn|Testsuite runner: RFC 6455 conformance checks for a WebSocket server.

The Autobahn|Testsuite ``wstest`` tool is Python 2.7 code that pins old
releases of autobahn and Twisted, so it cannot live in the project's Python 3
environment.  :func:`ensure_wstest` builds (once, idempotently) a dedicated
Python 2.7 virtualenv for it in a cache directory outside the repository, and
:func:`run_fuzzingclient` drives ``wstest -m fuzzingclient`` against a server
URL and condenses ``index.json`` into a :class:`Summary`.

Cache directory: ``$IKISOCKET_AUTOBAHN_HOME`` or ``~/.cache/ikisocket/autobahn``.
Python 2.7 is looked up as ``$IKISOCKET_PYTHON27``, then
``$PYENV_ROOT/versions/2.7*/bin/python`` (``~/.pyenv`` by default), then
``python2.7`` / ``python2`` on ``PATH``.

Command line (stdlib only; exit status 0 when every case passes, 1 when any
case fails, 2 on setup or run errors)::

    python tests/conformance/autobahn.py --setup-only
    python tests/conformance/autobahn.py --url ws://127.0.0.1:9001 --agent NAME \\
        [--cases '1.*,2.*'] [--exclude '12.*,13.*'] [--outdir DIR] \\
        [--server-cmd 'python tests/conformance/wsproto_echo.py --port 9001']

A case passes when its ``behavior`` is OK, NON-STRICT or INFORMATIONAL and its
``behaviorClose`` is OK or INFORMATIONAL; anything else (FAILED, UNIMPLEMENTED,
WRONG CODE, ...) is a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "AUTOBAHNTESTSUITE_VERSION",
    "CONSTRAINTS",
    "AutobahnError",
    "AutobahnRunError",
    "AutobahnSetupError",
    "CaseResult",
    "Summary",
    "autobahn_home",
    "ensure_wstest",
    "find_python27",
    "main",
    "parse_index",
    "run_fuzzingclient",
    "serve",
]

#: Version of the ``autobahntestsuite`` package installed from PyPI.
AUTOBAHNTESTSUITE_VERSION = "25.10.1"
#: ``virtualenv`` release used to create the Python 2.7 environment; releases
#: from 20.22 on can no longer create Python 2 environments.
VIRTUALENV_REQUIREMENT = "virtualenv==20.21.1"
#: The full, known-good dependency set of the Python 2.7 environment, passed
#: to pip as a constraints file.  ``autobahntestsuite`` 25.10.1 already pins
#: its direct dependencies (autobahn 0.10.9, Twisted 19.10.0, txaio 2.1.0,
#: pyOpenSSL 19.1.0, cryptography 3.3.2, service-identity 18.1.0, ...); the
#: rest are the newest releases that still support Python 2.7 at the time of
#: writing, locked so that the build stays reproducible.
CONSTRAINTS: tuple[str, ...] = (
    "Automat==22.10.0",
    "Jinja2==2.11.3",
    "MarkupSafe==1.1.1",
    "PyHamcrest==1.10.1",
    "Twisted==19.10.0",
    "Werkzeug==1.0.1",
    "argparse==1.4.0",
    "attrs==21.4.0",
    "autobahn==0.10.9",
    f"autobahntestsuite=={AUTOBAHNTESTSUITE_VERSION}",
    "cffi==1.15.1",
    "constantly==15.1.0",
    "cryptography==3.3.2",
    "enum34==1.1.10",
    "hyperlink==21.0.0",
    "idna==2.10",
    "incremental==16.10.1",
    "ipaddress==1.0.23",
    "klein==17.10.0",
    "linecache2==1.0.0",
    "pyOpenSSL==19.1.0",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "pycparser==2.21",
    "service-identity==18.1.0",
    "setuptools==44.0.0",
    "six==1.16.0",
    "traceback2==1.4.0",
    "txaio==2.1.0",
    "typing==3.10.0.0",
    "ujson==2.0.3",
    "unittest2==1.1.0",
    "wsaccel==0.6.6",
    "zope.interface==4.6.0",
)

HOME_ENV = "IKISOCKET_AUTOBAHN_HOME"
PYTHON27_ENV = "IKISOCKET_PYTHON27"
#: Marker written into the Python 2.7 env once it is complete and verified.
MARKER_NAME = "ikisocket-autobahn.json"

#: ``behavior`` values that count as a pass.
PASSING_BEHAVIORS = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
#: ``behaviorClose`` values that count as a pass.
PASSING_CLOSE_BEHAVIORS = frozenset({"OK", "INFORMATIONAL"})

SERVER_START_TIMEOUT = 30.0
SERVER_STOP_GRACE = 5.0


class AutobahnError(Exception):
    """Base class for errors raised by this module."""


class AutobahnSetupError(AutobahnError):
    """The ``wstest`` environment could not be found or built."""


class AutobahnRunError(AutobahnError):
    """``wstest`` (or the server under test) did not produce usable results."""


def _log(message: str) -> None:
    print(f"[autobahn] {message}", file=sys.stderr, flush=True)


# -- environment ---------------------------------------------------------------


def autobahn_home() -> Path:
    """Return the cache directory holding the Autobahn|Testsuite environment."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "ikisocket" / "autobahn"


def _python_version(executable: str) -> str | None:
    """Return ``"X.Y"`` for an interpreter, or None if it does not run."""
    try:
        proc = subprocess.run(
            [
                executable,
                "-c",
                "import sys; sys.stdout.write('%d.%d' % sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _python27_candidates() -> list[str]:
    candidates: list[str] = []
    explicit = os.environ.get(PYTHON27_ENV)
    if explicit:
        candidates.append(explicit)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))

    found = (pyenv_root / "versions").glob("2.7*/bin/python")
    candidates.extend(str(path) for path in sorted(found, key=version_key, reverse=True))
    for name in ("python2.7", "python2"):
        which = shutil.which(name)
        if which:
            candidates.append(which)
    return list(dict.fromkeys(candidates))


def find_python27() -> Path:
    """Locate a working Python 2.7 interpreter.

    Raises:
        AutobahnSetupError: if none of the candidates is a runnable Python 2.7.
    """
    candidates = _python27_candidates()
    for candidate in candidates:
        if _python_version(candidate) == "2.7":
            return Path(candidate)
    looked = ", ".join(candidates) if candidates else "no candidates found"
    msg = (
        "Python 2.7 is required to run Autobahn|Testsuite (wstest) but none was found "
        f"(looked for ${PYTHON27_ENV}, ~/.pyenv/versions/2.7*/bin/python, python2.7 and "
        f"python2 on PATH; tried: {looked}). Install it, e.g. `pyenv install 2.7.18`, "
        f"or point {PYTHON27_ENV} at a python2.7 executable."
    )
    raise AutobahnSetupError(msg)


def _marker_content(python27: Path) -> dict[str, object]:
    return {
        "autobahntestsuite": AUTOBAHNTESTSUITE_VERSION,
        "constraints": list(CONSTRAINTS),
        "python": str(python27),
    }


def _ready_wstest(env_dir: Path) -> Path | None:
    """Return the env's ``wstest`` if the env was completely built with our pins."""
    wstest = env_dir / "bin" / "wstest"
    marker = env_dir / MARKER_NAME
    if not (wstest.is_file() and marker.is_file()):
        return None
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    if recorded.get("constraints") != list(CONSTRAINTS):
        return None
    if not Path(str(recorded.get("python", ""))).exists():
        return None
    return wstest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (serialises concurrent builds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(cmd: Sequence[str | Path], log: Path, what: str) -> None:
    """Run ``cmd``, appending its output to ``log``; raise with the log tail on failure."""
    argv = [str(part) for part in cmd]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    env.pop("VIRTUAL_ENV", None)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {shlex.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
        except OSError as exc:
            msg = f"{what} failed: cannot run {argv[0]}: {exc}"
            raise AutobahnSetupError(msg) from exc
    if proc.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-25:])
        msg = f"{what} failed (exit status {proc.returncode}); see {log}:\n{tail}"
        raise AutobahnSetupError(msg)


def _virtualenv_tool(home: Path, log: Path) -> list[str]:
    """Return the argv prefix that runs a Python-2-capable ``virtualenv``."""
    tools = home / "tools"
    python = tools / "bin" / "python"
    if not (tools / "bin" / "virtualenv").is_file():
        shutil.rmtree(tools, ignore_errors=True)
        _run_logged([sys.executable, "-m", "venv", tools], log, "creating the tools venv")
        _run_logged(
            [python, "-m", "pip", "install", "--quiet", VIRTUALENV_REQUIREMENT],
            log,
            f"installing {VIRTUALENV_REQUIREMENT}",
        )
    return [str(python), "-m", "virtualenv"]


def ensure_wstest() -> Path:
    """Find or build the Autobahn|Testsuite environment and return its ``wstest``.

    The first call creates, under :func:`autobahn_home`, a Python 3 venv holding
    ``virtualenv`` and a Python 2.7 virtualenv holding ``autobahntestsuite``
    (about a minute; needs PyPI and a C compiler for ``wsaccel``).  Later calls
    return immediately.  A file lock makes concurrent calls safe.

    Raises:
        AutobahnSetupError: if Python 2.7 is missing or the install fails.
    """
    home = autobahn_home()
    env_dir = home / "py27"
    ready = _ready_wstest(env_dir)
    if ready is not None:
        return ready
    with _locked(home / ".lock"):
        ready = _ready_wstest(env_dir)
        if ready is not None:
            return ready
        python27 = find_python27()
        log = home / "install.log"
        log.write_text("", encoding="utf-8")
        started = time.monotonic()
        _log(f"building the Autobahn|Testsuite env in {env_dir} (about a minute; log: {log})")
        virtualenv = _virtualenv_tool(home, log)
        shutil.rmtree(env_dir, ignore_errors=True)
        _run_logged(
            [
                *virtualenv,
                "--no-periodic-update",
                "--python",
                str(python27),
                str(env_dir),
            ],
            log,
            "creating the Python 2.7 virtualenv",
        )
        constraints = home / "constraints.txt"
        constraints.write_text("\n".join(CONSTRAINTS) + "\n", encoding="utf-8")
        _run_logged(
            [
                env_dir / "bin" / "python",
                "-m",
                "pip",
                "install",
                "--constraint",
                constraints,
                f"autobahntestsuite=={AUTOBAHNTESTSUITE_VERSION}",
            ],
            log,
            f"installing autobahntestsuite=={AUTOBAHNTESTSUITE_VERSION}",
        )
        wstest = env_dir / "bin" / "wstest"
        _run_logged([wstest, "--autobahnversion"], log, "checking `wstest --autobahnversion`")
        if f"AutobahnTestSuite {AUTOBAHNTESTSUITE_VERSION}" not in log.read_text(
            encoding="utf-8",
            errors="replace",
        ):
            msg = f"`wstest --autobahnversion` did not report the expected version; see {log}"
            raise AutobahnSetupError(msg)
        (env_dir / MARKER_NAME).write_text(
            json.dumps(_marker_content(python27), indent=2) + "\n",
            encoding="utf-8",
        )
        _log(f"Autobahn|Testsuite env ready in {time.monotonic() - started:.0f}s")
        return wstest


# -- results -------------------------------------------------------------------


def _case_key(case_id: str) -> tuple[int | str, ...]:
    return tuple(int(part) if part.isdigit() else part for part in case_id.split("."))


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one Autobahn test case, as recorded in ``index.json``."""

    case_id: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None = None
    duration_ms: int | None = None
    reportfile: str | None = None

    @property
    def passed(self) -> bool:
        """Whether both the case and its closing handshake count as a pass."""
        return self.behavior in PASSING_BEHAVIORS and self.behavior_close in PASSING_CLOSE_BEHAVIORS

    def describe(self) -> str:
        """One line naming the case and how it went."""
        return (
            f"{self.case_id}: behavior={self.behavior} behaviorClose={self.behavior_close} "
            f"remoteCloseCode={self.remote_close_code}"
        )


@dataclass
class Summary:
    """Condensed results of a fuzzingclient run for one agent."""

    agent: str
    cases: list[CaseResult] = field(default_factory=list)
    report_dir: Path | None = None

    @property
    def failed(self) -> list[CaseResult]:
        """The cases that did not pass, in case-id order."""
        return [case for case in self.cases if not case.passed]

    @property
    def ok(self) -> bool:
        """True when at least one case ran and none failed."""
        return bool(self.cases) and not self.failed

    @property
    def behavior_counts(self) -> Counter[str]:
        """Raw count of every ``behavior`` value (OK, NON-STRICT, UNIMPLEMENTED...)."""
        return Counter(case.behavior for case in self.cases)

    @property
    def close_behavior_counts(self) -> Counter[str]:
        """Raw count of every ``behaviorClose`` value."""
        return Counter(case.behavior_close for case in self.cases)

    def counts(self) -> dict[str, int]:
        """Partition of the cases: passing ones by behavior, then FAILED.

        The values add up to the number of cases; FAILED covers every case whose
        behavior or closing behavior is not a passing one (UNIMPLEMENTED too).
        """
        passing = Counter(case.behavior for case in self.cases if case.passed)
        result = {name: passing.get(name, 0) for name in ("OK", "NON-STRICT", "INFORMATIONAL")}
        result["FAILED"] = len(self.failed)
        return result

    def line(self) -> str:
        """One-line summary, e.g. ``autobahn[x]: 517 cases, OK=514 ... FAILED=0``."""
        parts = " ".join(f"{name}={count}" for name, count in self.counts().items())
        return f"autobahn[{self.agent}]: {len(self.cases)} cases, {parts}"

    def failure_lines(self) -> list[str]:
        """One line per failed case with its behavior and close behavior."""
        return [f"  FAILED {case.describe()}" for case in self.failed]

    def __str__(self) -> str:
        """The summary line followed by the failed cases, if any."""
        return "\n".join([self.line(), *self.failure_lines()])


def parse_index(index: Path, agent: str) -> Summary:
    """Build a :class:`Summary` for ``agent`` from a fuzzingclient ``index.json``.

    Raises:
        AutobahnRunError: if the file is missing, malformed or lacks the agent.
    """
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read Autobahn results {index}: {exc}"
        raise AutobahnRunError(msg) from exc
    except ValueError as exc:
        msg = f"malformed Autobahn results {index}: {exc}"
        raise AutobahnRunError(msg) from exc
    if not isinstance(data, dict) or not isinstance(data.get(agent), dict):
        agents = sorted(data) if isinstance(data, dict) else []
        msg = f"no results for agent {agent!r} in {index} (agents present: {agents})"
        raise AutobahnRunError(msg)
    cases: list[CaseResult] = []
    for case_id, entry in data[agent].items():
        if not isinstance(entry, dict):
            continue
        code = entry.get("remoteCloseCode")
        duration = entry.get("duration")
        reportfile = entry.get("reportfile")
        cases.append(
            CaseResult(
                case_id=str(case_id),
                behavior=str(entry.get("behavior", "MISSING")),
                behavior_close=str(entry.get("behaviorClose", "MISSING")),
                remote_close_code=code if isinstance(code, int) else None,
                duration_ms=duration if isinstance(duration, int) else None,
                reportfile=reportfile if isinstance(reportfile, str) else None,
            ),
        )
    cases.sort(key=lambda case: _case_key(case.case_id))
    return Summary(agent=agent, cases=cases, report_dir=index.parent)


# -- running -------------------------------------------------------------------


def run_fuzzingclient(
    url: str,
    *,
    agent: str,
    cases: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    outdir: Path,
    timeout: float | None = None,
    wstest: Path | None = None,
) -> Summary:
    """Run ``wstest -m fuzzingclient`` against the server at ``url``.

    Writes ``outdir/spec.json``, runs wstest in ``outdir`` (its console output
    goes to ``outdir/wstest.log``; reports land in ``outdir/reports/servers``)
    and returns the parsed summary.  Results of an earlier run in the same
    directory are removed first.

    Args:
        url: ``ws://host:port[/path]`` of the server under test.
        agent: name under which the results are recorded.
        cases: case-id patterns to run, e.g. ``["1.*", "2.*"]``.
        exclude: case-id patterns to skip.
        outdir: directory for the spec, the log and the reports.
        timeout: seconds after which wstest is killed (None: no limit).
        wstest: the wstest executable (default: :func:`ensure_wstest`).

    Raises:
        AutobahnSetupError: if wstest cannot be provided.
        AutobahnRunError: if wstest fails or writes no results.
    """
    if isinstance(cases, str) or isinstance(exclude, str):
        msg = "cases and exclude must be sequences of patterns, not a string"
        raise TypeError(msg)
    wstest = wstest or ensure_wstest()
    outdir = Path(outdir).resolve()
    report_dir = outdir / "reports" / "servers"
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    spec = {
        "outdir": "./reports/servers",
        "servers": [{"agent": agent, "url": url}],
        "cases": list(cases),
        "exclude-cases": list(exclude),
        "exclude-agent-cases": {},
        "options": {"failByDrop": False},
    }
    spec_path = outdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    log = outdir / "wstest.log"
    argv = [str(wstest), "-m", "fuzzingclient", "-s", str(spec_path)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    with log.open("w", encoding="utf-8") as out:
        try:
            proc = subprocess.run(
                argv,
                cwd=outdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            msg = f"wstest did not finish within {timeout:g}s; see {log}"
            raise AutobahnRunError(msg) from exc
    index = report_dir / "index.json"
    if proc.returncode != 0 or not index.is_file():
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-20:])
        msg = f"wstest exited with status {proc.returncode} (results: {index}); see {log}:\n{tail}"
        raise AutobahnRunError(msg)
    try:
        return parse_index(index, agent)
    except AutobahnRunError as exc:
        failures = [
            line
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if "failed" in line.lower()
        ]
        hint = f"; wstest said: {failures[-1]}" if failures else f"; see {log}"
        raise AutobahnRunError(f"{exc}{hint}") from exc


def _url_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        msg = f"not a ws:// or wss:// URL: {url!r}"
        raise ValueError(msg)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return parts.hostname, port


def _wait_for_port(
    host: str,
    port: int,
    proc: subprocess.Popen[bytes],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            msg = f"server command exited with status {proc.returncode} before listening"
            raise AutobahnRunError(msg)
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            msg = f"server did not accept TCP connections on {host}:{port} within {timeout:g}s"
            raise AutobahnRunError(msg)
        time.sleep(0.1)


def _stop_server(proc: subprocess.Popen[bytes], grace: float = SERVER_STOP_GRACE) -> None:
    """SIGTERM the server's process group, then SIGKILL it after ``grace`` s."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the server runs in its own session
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        return


@contextlib.contextmanager
def serve(
    command: str | Sequence[str],
    url: str,
    *,
    log: Path | None = None,
    startup_timeout: float = SERVER_START_TIMEOUT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command for the duration of a ``with`` block.

    The command (a shell-like string split with :func:`shlex.split`, or an
    argv) starts in its own session; the block is entered once ``url``'s port
    accepts TCP connections.  On exit the process group gets SIGTERM, then
    SIGKILL after 5 s.

    Raises:
        AutobahnRunError: if the server exits early or never listens.
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    host, port = _url_address(url)
    sink = log.open("wb") if log is not None else None
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sink if sink is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        if sink is not None:
            sink.close()
        msg = f"cannot start server command {argv!r}: {exc}"
        raise AutobahnRunError(msg) from exc
    try:
        _wait_for_port(host, port, proc, startup_timeout)
        yield proc
    finally:
        _stop_server(proc)
        if sink is not None:
            sink.close()


# -- command line --------------------------------------------------------------


def _split_patterns(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autobahn.py",
        description="Run Autobahn|Testsuite (fuzzingclient) against a WebSocket server.",
    )
    parser.add_argument("--url", help="server URL, e.g. ws://127.0.0.1:9001")
    parser.add_argument("--agent", help="agent name recorded in the reports")
    parser.add_argument(
        "--cases",
        default="*",
        help="comma-separated case patterns (default: '*')",
    )
    parser.add_argument(
        "--exclude",
        default="",
        help="comma-separated case patterns to skip, e.g. '12.*,13.*'",
    )
    parser.add_argument(
        "--outdir",
        type=Path,
        help="directory for spec, logs and reports (default: <cache>/runs/<agent>)",
    )
    parser.add_argument(
        "--server-cmd",
        help="command that starts the server on the URL's port; stopped after the run",
    )
    parser.add_argument(
        "--server-timeout",
        type=float,
        default=SERVER_START_TIMEOUT,
        help="seconds to wait for --server-cmd to accept connections (default: 30)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds after which wstest is killed",
    )
    parser.add_argument(
        "--setup-only",
        action="store_true",
        help="only build/find wstest and print its path",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.setup_only:
        if not args.url or not args.agent:
            parser.error("--url and --agent are required (unless --setup-only)")
        try:
            _url_address(args.url)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        wstest = ensure_wstest()
        if args.setup_only:
            print(wstest)
            return 0
        outdir: Path = args.outdir or autobahn_home() / "runs" / args.agent
        outdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            if args.server_cmd:
                stack.enter_context(
                    serve(
                        args.server_cmd,
                        args.url,
                        log=outdir / "server.log",
                        startup_timeout=args.server_timeout,
                    ),
                )
            summary = run_fuzzingclient(
                args.url,
                agent=args.agent,
                cases=_split_patterns(args.cases) or ["*"],
                exclude=_split_patterns(args.exclude),
                outdir=outdir,
                timeout=args.timeout,
                wstest=wstest,
            )
    except AutobahnError as exc:
        print(f"autobahn: error: {exc}", file=sys.stderr)
        return 2
    print(summary)
    print(
        f"autobahn: {time.monotonic() - started:.1f}s; "
        f"report: {outdir / 'reports' / 'servers' / 'index.html'}",
        file=sys.stderr,
    )
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
