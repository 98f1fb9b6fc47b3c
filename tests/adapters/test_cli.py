"""The ``ikisocket`` command in a real subprocess: serve, talk, SIGTERM, and its error lines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.conformance.echo_app:hub"  # echoes on "/"
TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ikisocket(*args: str) -> list[str]:
    return [sys.executable, "-m", "ikisocket_adapters", *args]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``ikisocket ...`` to its end (a command that fails at once)."""
    return subprocess.run(
        ikisocket(*args), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``ikisocket ...``; yield it once it printed where it listens."""
    proc = subprocess.Popen(
        ikisocket(*args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on ws://127.0.0.1:" in line, (line, proc.stderr and proc.stderr.read())
        yield proc, line.rsplit(" ", 1)[-1].strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    "adapter",
    [
        ["--adapter", "asyncio"],
        ["--adapter", "asyncio", "--uvloop"],
        ["--adapter", "trio"],
        ["--adapter", "anyio"],
        ["--adapter", "anyio", "--backend", "trio"],
        ["--adapter", "anyio", "--backend", "asyncio"],
    ],
    ids=["asyncio", "uvloop", "trio", "anyio", "anyio-trio", "anyio-asyncio"],
)
def test_run_serves_and_sigterm_closes_clients_with_1001_then_exits_0(adapter: list[str]) -> None:
    port = free_port()
    with serving("run", APP, "--port", str(port), *adapter) as (proc, url):
        assert url == f"ws://127.0.0.1:{port}"
        with connect(url + "/", open_timeout=TIMEOUT) as ws:
            ws.send("over the wire")
            assert ws.recv(TIMEOUT) == "over the wire"
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(TIMEOUT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert proc.wait(TIMEOUT) == 0


def test_connection_limits_are_options() -> None:
    port = free_port()
    limits = ["--max-connections", "0", "--max-connections-per-ip", "1"]
    with serving("run", APP, "--port", str(port), *limits) as (proc, url):
        with connect(url + "/", open_timeout=TIMEOUT) as ws:
            with pytest.raises(InvalidStatus) as refused:
                connect(url + "/", open_timeout=TIMEOUT)
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"] == "5"
            ws.send("the first one is still served")
            assert ws.recv(TIMEOUT) == "the first one is still served"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0


@pytest.mark.parametrize("value", ["-1", "many"])
def test_a_bad_connection_limit_is_a_usage_error(value: str) -> None:
    done = run_cli("run", APP, "--max-connections-per-ip", value)
    assert done.returncode == 2
    assert "--max-connections-per-ip: expected a count (0: no limit)" in done.stderr


def test_sigint_exits_0_too() -> None:
    with serving("run", APP, "--port", str(free_port())) as (proc, _):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_here:hub", "cannot import 'no_such_module_here'"),
        ("tests.conformance.echo_app:nothing", "has no attribute 'nothing'"),
        ("tests.conformance.echo_app", "must look like 'package.module:hub'"),
        ("tests.conformance.echo_app:echo", "not an ikisocket_core.Hub"),
    ],
)
def test_a_bad_import_string_is_one_clear_line(spec: str, message: str) -> None:
    done = run_cli("run", spec, "--port", str(free_port()))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ikisocket: error: ")
    assert message in lines[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--adapter", "trio", "--backend", "trio"], "--backend applies to --adapter anyio only"),
        (["--backend", "asyncio"], "--backend applies to --adapter anyio only"),
        (["--adapter", "anyio", "--uvloop"], "--uvloop applies to --adapter asyncio only"),
    ],
)
def test_options_for_another_adapter_are_one_clear_line(options: list[str], message: str) -> None:
    done = run_cli("run", APP, "--port", str(free_port()), *options)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"ikisocket: error: {message}"]


def test_a_busy_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("run", APP, "--port", str(port))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0]


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("ikisocket")
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0
    assert "run" in done.stdout
    assert "demo" in done.stdout
