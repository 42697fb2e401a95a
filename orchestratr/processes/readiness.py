"""Polls an app's ``ready_cmd`` until it exits 0 or ``ready_timeout_ms`` runs out.

Every 0.5 s, one attempt at a time, each cut short (its whole process group killed) at 5 s or
at the deadline, whichever comes first, so a hung probe can neither pile up nor overrun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from orchestratr.threads import supervised

if TYPE_CHECKING:
    from orchestratr.processes.tracker import ProcessTracker

INTERVAL_S = 0.5
ATTEMPT_LIMIT_S = 5.0


def start_probe(
    tracker: ProcessTracker,
    argv: list[str],
    timeout_s: float,
    on_ready: Callable[[], None],
    on_timeout: Callable[[], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Callable[[], None]:
    """Start polling in a thread; return a function that cancels it. Each attempt's process
    is announced to ``tracker`` as no app's (the daemon is a subreaper: see the tracker)."""
    cancelled = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while not cancelled.is_set():
            started = time.monotonic()
            ok = _attempt(tracker, argv, min(ATTEMPT_LIMIT_S, deadline - started), env, cwd)
            if cancelled.is_set():
                return
            if ok:
                on_ready()
                return
            if time.monotonic() >= deadline:
                on_timeout()
                return
            cancelled.wait(max(0.0, min(started + INTERVAL_S, deadline) - time.monotonic()))

    supervised("ready-probe", run)
    return cancelled.set


def _attempt(
    tracker: ProcessTracker, argv: list[str], limit_s: float, env: Mapping[str, str] | None,
    cwd: str | None,
) -> bool:
    try:
        with tracker.spawning() as note:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
            note(proc.pid, False)
    except OSError:
        return False
    try:
        return proc.wait(timeout=max(0.0, limit_s)) == 0
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
    finally:
        tracker.forget_child(proc.pid)
