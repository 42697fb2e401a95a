"""What the supervisor needs from the OS, as a small interface.

``orchestratr.processes`` implements it with subprocess, psutil and pidfds; the supervisor only
sees pids and ``ProcessExit`` values, so it stays free of OS code and tests can read it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

import attrs

from orchestratr.registry.model import AppSpec, described


@attrs.frozen
class ProcessExit:
    """How a tracked process (or its whole group) ended."""

    code: int | None  # exit status; negative: killed by that signal; None: not ours to know
    description: str  # "exited with status 127 (command not found)", "killed by SIGKILL", ...
    output_tail: str = ""  # the last line the app wrote, for failures


OnExit = Callable[[ProcessExit], None]


@attrs.frozen
class ProcessUsage:
    """One process of an app, and what it uses now."""

    pid: int
    cpu_percent: float = attrs.field(metadata=described(
        "% of one core since the previous look (at the first: over its life)"))
    rss_bytes: int = attrs.field(metadata=described("resident memory"))


class Launcher(Protocol):
    def spawn(self, spec: AppSpec) -> int:
        """Start ``spec.command`` in a new process group; return its pid.

        Raises:
            LaunchError: the command could not be started at all.
        """

    def track(self, pid: int, on_exit: OnExit) -> None:
        """Call ``on_exit`` once the process group led by ``pid`` (spawned by us) is empty."""

    def reap(self, pid: int) -> None:
        """A process we spawned but will not track (a detached app): collect its exit status
        when it ends, so it leaves no zombie and no handle behind."""

    def adopt(
        self, pid: int, on_exit: OnExit, group: bool = False, members: Collection[int] = (),
        app: str | None = None, born: float | None = None,
    ) -> float:
        """Call ``on_exit`` once ``pid`` (or, with ``group``, the app whose processes are
        ``members``, else the group led by ``pid``) has ended; ``app`` names the marker its
        processes carry. Returns the create time (wall clock), for the record of running apps:
        ``born`` when the caller knows it already (the members are then not read again).

        Raises:
            NoSuchProcessError: no such process.
            UnadoptablePidError: pid 0 or 1, the daemon itself or one of its ancestors.
        """

    def check_adoptable(self, pid: int) -> None:
        """Refuse a pid whose stop would signal the daemon or the whole system.

        Raises:
            UnadoptablePidError: pid 0 or 1, the daemon itself or one of its ancestors.
        """

    def same_group(self, pid: int, leader: int) -> bool:
        """Whether ``pid`` is one of the processes of the app tracked as ``leader`` (its group,
        or a process descended from it)."""

    def terminate(self, pid: int, group: bool, grace_s: float) -> None:
        """SIGTERM now, SIGKILL after ``grace_s`` if still alive. Returns at once."""

    def usage(self, pid: int, group: bool) -> list[ProcessUsage]:
        """Every live process of the app led by ``pid`` (its group, with ``group``, and their
        descendants), with its CPU and memory; none if it is gone."""

    def probe_ready(
        self, spec: AppSpec, on_ready: Callable[[], None], on_timeout: Callable[[], None]
    ) -> Callable[[], None]:
        """Poll ``spec.ready_cmd`` in the background; return a function that cancels it."""


class RunningRecord(Protocol):
    """The durable record of the processes the supervisor tracks, so that a daemon killed at
    any instant leaves a record of every app it started (``processes.journal`` keeps it)."""

    def started(self, name: str, pid: int, group: bool, born: float, ready: bool = False,
                wait: bool = True) -> None:
        """Record that ``name`` runs as ``pid``; returns once the record is on disk (unless
        not ``wait``: an adopted process, whose record is on disk already)."""

    def durable(self) -> None:
        """Return once everything recorded so far is on disk."""

    def ready(self, name: str, pid: int) -> None:
        """The app is ready (a hint for the next daemon; not waited for)."""

    def leased(self, name: str, pid: int, lease_s: float, wait: bool = True) -> None:
        """The app announced a lease of ``lease_s``; returns once it is on disk (``wait``)."""

    def ended(self, name: str, pid: int) -> None:
        """``pid`` is no longer the app's (not waited for)."""


class NoRecord:
    """A supervisor without a record (tests, benchmarks of the core alone)."""

    def started(self, name: str, pid: int, group: bool, born: float, ready: bool = False,
                wait: bool = True) -> None:
        pass

    def durable(self) -> None:
        pass

    def ready(self, name: str, pid: int) -> None:
        pass

    def leased(self, name: str, pid: int, lease_s: float, wait: bool = True) -> None:
        pass

    def ended(self, name: str, pid: int) -> None:
        pass
