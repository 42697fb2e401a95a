"""Waiting until descriptors are readable, whatever their number.

``select.select`` refuses descriptors from 1,024 up (FD_SETSIZE), and a daemon running 1,000
apps holds more than that: the config watcher, started after the apps' pipes and pidfds, died
on its first wait six times in a row and took the daemon down with it (issue 16). Every wait
on a descriptor goes through here: ``poll`` has no such limit.

Standard library only: every room may use it.
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from typing import Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def readable(fds: Iterable[int | HasFileno], timeout: float | None = None) -> list[int]:
    """The descriptors of ``fds`` that can be read without blocking (at their end or hung up
    counts), waiting up to ``timeout`` seconds for one (None: for ever, 0: not at all)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)]
