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

INTERVAL_S = 0.5
ATTEMPT_LIMIT_S = 5.0


def start_probe(
    argv: list[str],
    timeout_s: float,
    on_ready: Callable[[], None],
    on_timeout: Callable[[], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Callable[[], None]:
    """Start polling in a daemon thread; return a function that cancels it."""
    cancelled = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + timeout_s
        while not cancelled.is_set():
            started = time.monotonic()
            ok = _attempt(argv, min(ATTEMPT_LIMIT_S, deadline - started), env, cwd)
            if cancelled.is_set():
                return
            if ok:
                on_ready()
                return
            if time.monotonic() >= deadline:
                on_timeout()
                return
            cancelled.wait(max(0.0, min(started + INTERVAL_S, deadline) - time.monotonic()))

    threading.Thread(target=run, name="ready-probe", daemon=True).start()
    return cancelled.set


def _attempt(
    argv: list[str], limit_s: float, env: Mapping[str, str] | None, cwd: str | None
) -> bool:
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    except OSError:
        return False
    try:
        return proc.wait(timeout=max(0.0, limit_s)) == 0
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
