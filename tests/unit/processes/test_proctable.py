"""The process table as this process reads it: its own children, on every exit's path."""

from __future__ import annotations

import subprocess

from orchestratr.processes import proctable


def _spawn(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "60"]) for _ in range(count)]


def _end(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def test_own_children_are_read_again_after_each_change() -> None:
    """The list is kept open and read again: it must follow births and deaths, not repeat
    what it read first."""
    reader = proctable.OwnChildren()
    try:
        before = set(reader.read())
        assert before == set(proctable.own_children())
        procs = _spawn(3)
        try:
            assert set(reader.read()) - before == {p.pid for p in procs}
            procs[0].kill()
            procs[0].wait()
            assert set(reader.read()) - before == {p.pid for p in procs[1:]}
        finally:
            _end(procs)
        assert set(reader.read()) == before
    finally:
        reader.close()


def test_own_children_past_one_page_are_all_read() -> None:
    """The kernel hands the list out a page at a time: 700 pids (about 5 KB) take two reads,
    and an orphan on the second page must be seen like one on the first."""
    procs = _spawn(700)
    reader = proctable.OwnChildren()
    try:
        for _ in range(2):  # the first read, and one again from the start
            listed = reader.read()
            assert {p.pid for p in procs} <= set(listed)
            assert len(listed) == len(set(listed))
    finally:
        reader.close()
        _end(procs)
