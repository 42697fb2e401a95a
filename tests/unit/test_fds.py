"""Waiting on descriptors numbered past select's 1,024 (a daemon running 1,000 apps has them)."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

import pytest

from orchestratr.fds import readable

HIGH = 1500  # past FD_SETSIZE (1,024), where select.select raises ValueError


@pytest.fixture
def high_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end is descriptor ``HIGH``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= HIGH:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, HIGH * 2), hard))
    r, w = os.pipe()
    os.dup2(r, HIGH)
    os.close(r)
    try:
        yield HIGH, w
    finally:
        for fd in (HIGH, w):
            with contextlib.suppress(OSError):
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_high_descriptor_is_waited_on(high_pipe: tuple[int, int]) -> None:
    r, w = high_pipe
    assert readable([r], 0) == []
    os.write(w, b"x")
    assert readable([r], 1) == [r]


def test_a_hung_up_descriptor_is_readable(high_pipe: tuple[int, int]) -> None:
    """As with select: the end of a pipe is something to read (b"")."""
    r, w = high_pipe
    os.close(w)
    assert readable([r], 1) == [r]


def test_objects_with_a_fileno_are_taken(high_pipe: tuple[int, int]) -> None:
    r, w = high_pipe
    os.write(w, b"x")

    class Display:
        def fileno(self) -> int:
            return r

    assert readable([Display()], 0) == [r]
