"""The process table as Linux's /proc shows it: cheap reads for the tracker's hot path and one
scan that serves every adoption at start-up.

psutil answers the same questions, but one ``process_iter`` with environments costs about ten
times a direct read of the few /proc files needed here, and a daemon that spawned its own apps
never loads it (2 MiB of resident memory). Everything here answers "unknown" (None, empty)
rather than raise: a process may end between any two reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterable
from functools import cache

import attrs

from orchestratr.paths import APP_ENV, CONFIG_DIR_ENV

PR_SET_CHILD_SUBREAPER = 36
PROC = "/proc"
MAX_PID = 2**31 - 1  # what a pid_t holds (the kernel's pid_max is far lower)


@attrs.frozen
class ProcInfo:
    """One process as the scan saw it; ``app`` and ``config_dir`` are its markers, if any."""

    pid: int
    ppid: int
    pgrp: int
    session: int
    create_time: float  # wall clock, as psutil computes it (boot time + start ticks)
    zombie: bool
    app: str | None = None
    config_dir: str | None = None


def available() -> bool:
    return os.path.isdir(f"{PROC}/self/task")


def become_subreaper() -> bool:
    """Make orphaned descendants come back to this process instead of init, so an app's
    process that ``setsid()``s away and loses its parent is still seen (and reaped) here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@cache
def _boot_time() -> float:
    with open(f"{PROC}/stat", "rb") as handle:
        for line in handle:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


@cache
def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> ProcInfo | None:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: the fields after it start after the last ")"
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return ProcInfo(pid=pid, ppid=int(fields[1]), pgrp=int(fields[2]),
                        session=int(fields[3]),
                        create_time=_boot_time() + int(fields[19]) / _ticks(),
                        zombie=fields[0] in (b"Z", b"X"))
    except (IndexError, ValueError):
        return None


def info(pid: int, with_markers: bool = False) -> ProcInfo | None:
    """One process, with its markers if asked (None: gone, or not readable)."""
    proc = _stat(pid)
    if proc is None or not with_markers:
        return proc
    app, config_dir = markers(pid)
    return attrs.evolve(proc, app=app, config_dir=config_dir)


def markers(pid: int) -> tuple[str | None, str | None]:
    """The ``ORCHESTRATR_APP`` and ``ORCHESTRATR_CONFIG_DIR`` a process was started with."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None, None
    app = config_dir = None
    app_key, dir_key = f"{APP_ENV}=".encode(), f"{CONFIG_DIR_ENV}=".encode()
    for item in raw.split(b"\0"):
        if item.startswith(app_key):
            app = os.fsdecode(item[len(app_key):])
        elif item.startswith(dir_key):
            config_dir = os.fsdecode(item[len(dir_key):])
    return app, config_dir


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (of every one of its threads)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"{PROC}/{pid}/task"):
            with contextlib.suppress(OSError), open(f"{PROC}/{pid}/task/{tid}/children",
                                                    "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
    return found


SEQ_PIECE = 2048  # a /proc list read that returns less than this has reached its end


class OwnChildren:
    """This process's children as its main thread holds them: orphans come back to a
    subreaper there (the kernel hands them to its first live thread, the main one).

    ``/proc/self/task/<main>/children`` is kept open by its owner (the tracker, for its life)
    and read again from the start: opening it, a walk through /proc, was a third of an exit's
    orphan check. The kernel regenerates the list on a read at offset 0, a page at most per
    read: a read that returns less than ``SEQ_PIECE`` bytes has taken all of it."""

    def __init__(self) -> None:
        me = os.getpid()
        try:
            self._fd: int | None = os.open(f"{PROC}/{me}/task/{me}/children",
                                           os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None

    def read(self) -> list[int]:
        if self._fd is None:
            return children(os.getpid())
        chunks, offset = [], 0
        while True:
            chunk = os.pread(self._fd, 65536, offset)
            chunks.append(chunk)
            offset += len(chunk)
            if len(chunk) < SEQ_PIECE:
                return [int(child) for child in b"".join(chunks).split()]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def own_children() -> list[int]:
    """The children of this process's main thread, read once (see ``OwnChildren``)."""
    reader = OwnChildren()
    try:
        return reader.read()
    finally:
        reader.close()


def descendants(roots: Iterable[int]) -> set[int]:
    """Every process below ``roots`` (not the roots themselves)."""
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def scan(with_markers: bool = True) -> list[ProcInfo]:
    """Every process this user can read (with its markers): one pass over /proc."""
    table = []
    for entry in os.listdir(PROC):
        if entry.isdigit():
            proc = info(int(entry), with_markers=with_markers)
            if proc is not None:
                table.append(proc)
    return table


def same_dir(value: str | None, config_dir: str) -> bool:
    return value is not None and (value == config_dir
                                  or os.path.realpath(value) == os.path.realpath(config_dir))
