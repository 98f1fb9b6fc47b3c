"""The README's code runs as shown, and its table covers the whole seed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SEED = Path("/work/shared/seed/ikisocket.md")


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_the_two_commands_open_the_readme() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_example_and_its_test_run_as_written() -> None:
    blocks = python_blocks()
    assert len(blocks) == 2
    assert len(blocks[0].strip().splitlines()) <= 20
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)


def test_every_seed_function_and_event_has_a_row() -> None:
    go_names = {
        "New",
        "On",
        "EmitToList",
        "EmitTo",
        "Broadcast",
        "Fire",
        "SetAttribute",
        "GetUUID",
        "SetUUID",
        "GetAttribute",
        "Emit",
        "Close",
        "Conn",
        "EventMessage",
        "EventPing",
        "EventPong",
        "EventDisconnect",
        "EventConnect",
        "EventClose",
        "EventError",
        "TextMessage",
        "BinaryMessage",
        "EventPayload",
    }
    if SEED.exists():  # the seed README, where this checkout can see it
        seed = SEED.read_text(encoding="utf-8")
        go_names |= set(re.findall(r"^func (?:\(kws \*Websocket\) )?([A-Z]\w*)\(", seed, re.M))
        go_names |= set(re.findall(r"^\s*(Event[A-Z]\w*)\s*=", seed, re.M))
    table = README.split("## From the Go seed to Python", 1)[1].split("\n## ", 1)[0]
    missing = {name for name in go_names if not re.search(rf"\b{name}\b", table)}
    assert not missing
