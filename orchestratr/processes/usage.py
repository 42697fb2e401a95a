"""What an app's processes use: CPU and resident memory, read with psutil.

CPU is a rate, so it needs two looks: each process's CPU time is remembered at every look, and
the next look reports the share of one core used in between (``top``'s way). At the first look
there is nothing to compare with, and the whole life of the process is used instead (``ps``'s
way), so a single ``orchestratr show`` still says something true.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestratr.processes.tracker import app_tree
from orchestratr.supervisor.launcher import ProcessUsage

if TYPE_CHECKING:
    import psutil

FORGET_AFTER = 512  # processes remembered; beyond that the oldest looks are dropped


class Usage:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (pid, create time) -> (CPU seconds, monotonic time) at the last look
        self._seen: dict[tuple[int, float], tuple[float, float]] = {}

    def of(self, pid: int, group: bool, also: Iterable[int] = ()) -> list[ProcessUsage]:
        """The app's live processes, lowest pid first; [] if they are gone. ``also``: the
        tracker's (a child that left the group with ``setsid`` and came back to the daemon
        is in neither the group nor the leader's tree)."""
        import psutil

        found = []
        for member in sorted(app_pids(pid, group) | set(also)):
            with contextlib.suppress(psutil.Error):
                found.append(self._look(psutil.Process(member)))
        return found

    def _look(self, proc: psutil.Process) -> ProcessUsage:
        import psutil

        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise psutil.ZombieProcess(proc.pid)
            times, born, rss = proc.cpu_times(), proc.create_time(), proc.memory_info().rss
        cpu_s, now = times.user + times.system, time.monotonic()
        key = (proc.pid, born)
        with self._lock:
            before = self._seen.pop(key, None)
            self._seen[key] = (cpu_s, now)
            while len(self._seen) > FORGET_AFTER:
                del self._seen[next(iter(self._seen))]
        if before is not None and now > before[1]:
            used_s, over_s = cpu_s - before[0], now - before[1]
        else:
            used_s, over_s = cpu_s, time.time() - born
        percent = 100.0 * used_s / over_s if over_s > 0 else 0.0
        return ProcessUsage(proc.pid, round(max(percent, 0.0), 1), rss)


def app_pids(pid: int, group: bool) -> set[int]:
    """The app's live processes: its group and their descendants (``app_tree``), or for a
    process it announced, that process and its descendants."""
    import psutil

    if group:
        return app_tree(pid)
    try:
        return {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()
