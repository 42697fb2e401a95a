"""Which program a shell command runs first: what doctor looks for on PATH."""

from __future__ import annotations

import pytest

from orchestratr.cli.doctor import _program


@pytest.mark.parametrize(("command", "program"), [
    ("obsidian", "obsidian"),
    ("obsidian --vault ~/notes", "obsidian"),
    ("FOO=1 BAR='a b' exec env nohup firefox -P work", "firefox"),
    ("trap '' TERM; sleep 60", "trap"),
    ("sleep 60 | cat", "sleep"),
    ("'/opt/My App/run' --x", "/opt/My App/run"),
    ("$EDITOR notes.md", "$EDITOR"),
    ("it's unbalanced", None),
    ("", None),
])
def test_program(command: str, program: str | None) -> None:
    assert _program(command) == program
