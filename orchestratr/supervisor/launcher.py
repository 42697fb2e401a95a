"""What the supervisor needs from the OS, as a small interface.

``orchestratr.processes`` implements it with subprocess, psutil and pidfds; the supervisor only
sees pids and ``ProcessExit`` values, so it stays free of OS code and tests can read it alone.
"""

from __future__ import annotations

from collections.abc import Callable
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

    def adopt(self, pid: int, on_exit: OnExit, group: bool = False) -> float:
        """Call ``on_exit`` once ``pid`` (or, with ``group``, its whole group) has ended.
        Returns the process's create time (wall clock), for the record of running apps.

        Raises:
            NoSuchProcessError: no such process.
            UnadoptablePidError: pid 0 or 1, the daemon itself or one of its ancestors.
        """

    def same_group(self, pid: int, leader: int) -> bool:
        """Whether ``pid`` belongs to the process group led by ``leader``."""

    def terminate(self, pid: int, group: bool, grace_s: float) -> None:
        """SIGTERM now, SIGKILL after ``grace_s`` if still alive. Returns at once."""

    def usage(self, pid: int, group: bool) -> list[ProcessUsage]:
        """Every live process of the app led by ``pid`` (its group, with ``group``, and their
        descendants), with its CPU and memory; none if it is gone."""

    def probe_ready(
        self, spec: AppSpec, on_ready: Callable[[], None], on_timeout: Callable[[], None]
    ) -> Callable[[], None]:
        """Poll ``spec.ready_cmd`` in the background; return a function that cancels it."""
