"""Heartbeat leases: the rules (when a lease runs, what a missed deadline means) and the clock.

A lease runs while the app runs (``launched`` or ``ready``), from its manifest or from whoever
started it; a missed one makes the app ``unresponsive`` for its grace period, whose end fails
it (or, under a restart policy, restarts it); a stop ends the lease.

The clock is one thread that wakes at the nearest lease or grace deadline. Heartbeats only ever
move a deadline later, so they never wake the thread: at 1000 heartbeats a second it still
wakes only when something can actually expire, and an idle daemon with leases uses no CPU
between deadlines.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import structlog

from orchestratr.registry.model import RestartPolicy
from orchestratr.supervisor.app import App, HistoryEntry
from orchestratr.supervisor.states import LIVE, RUNNING, AppState, Trigger
from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.supervisor")


class LeaseClock:
    def __init__(
        self,
        expire_due: Callable[[float], float | None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``expire_due(now)`` expires what is due and returns the next deadline, if any."""
        self._expire_due = expire_due
        self._mono = monotonic
        self._cond = threading.Condition()
        self._next = math.inf
        self._stopping = False
        self._thread: threading.Thread | None = None

    def schedule(self, deadline: float) -> None:
        """Make sure the clock wakes by ``deadline`` (it may wake earlier, never later)."""
        with self._cond:
            if self._stopping or deadline >= self._next:
                return
            self._next = deadline
            if self._thread is None:  # most daemons never hold a lease: no thread until one does
                self._thread = supervised("lease-clock", self._loop)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=2)

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                wait = self._next - self._mono()
                if wait > 0:
                    self._cond.wait(None if math.isinf(wait) else wait)
                    continue
                self._next = math.inf
                self._cond.release()
                try:
                    following = self._run()
                finally:
                    self._cond.acquire()
                if following is not None:
                    self._next = min(self._next, following)

    def _run(self) -> float | None:
        try:
            return self._expire_due(self._mono())
        except Exception:  # the clock must outlive a bug in one expiry
            log.exception("lease_check_failed")
            return self._mono() + 1.0


@attrs.frozen
class Expiry:
    """What a passed deadline means for an app: the trigger to fire, with its detail."""

    trigger: Trigger
    detail: Mapping[str, Any]


def expiry(app: App) -> Expiry | None:
    """The lease rule for an app whose deadline has passed (lock held); None: nothing is due
    any more (the app moved on meanwhile)."""
    grace_s = app.spec.grace_secs
    if app.state in RUNNING:
        return Expiry(Trigger.lease_expired, {"lease_secs": app.lease_s, "grace_secs": grace_s})
    if app.state is not AppState.unresponsive:
        return None
    drained = bool(app.history) and app.history[-1].trigger is Trigger.drain
    error = ("drained and not revived within the grace period" if drained
             else "heartbeat lease expired")
    restart = app.spec.restart is not RestartPolicy.never
    # without a restart policy the app fails, but its process is not forgotten (``held``)
    return Expiry(Trigger.grace_expired, {"error": error, "restart": restart or None,
                                          "held": (not restart and app.pid is not None) or None})


class Leases:
    """Keeps every app's deadline in step with its transitions and calls ``on_due(app)``, with
    the app's lock held, when one passes. ``apps()`` lists the apps to watch."""

    def __init__(
        self,
        apps: Callable[[], Iterable[App]],
        on_due: Callable[[App], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apps = apps
        self._on_due = on_due
        self._mono = monotonic
        self._clock = LeaseClock(self._expire_due, monotonic)

    def hold(self, app: App, lease_s: float) -> None:
        """The app holds a lease of ``lease_s`` from now (lock held)."""
        app.hold_lease(lease_s)
        if app.state in RUNNING:
            self._set_deadline(app, lease_s)

    def follow(self, app: App, entry: HistoryEntry) -> None:
        """Keep the lease in step with a transition (lock held): running from elsewhere takes
        the manifest's lease, unresponsive runs the grace period, anything else ends it."""
        if entry.dst in RUNNING:
            if entry.src not in LIVE:
                app.hold_lease(app.spec.lease_secs)
            app.set_deadline(None)
            if app.lease_s is not None:
                self._set_deadline(app, app.lease_s)
        elif entry.dst is AppState.unresponsive:
            self._set_deadline(app, app.spec.grace_secs)
        else:
            app.end_lease()

    def stop(self) -> None:
        self._clock.stop()

    def _set_deadline(self, app: App, seconds: float) -> None:
        deadline = self._mono() + seconds
        app.set_deadline(deadline)
        self._clock.schedule(deadline)

    def _expire_due(self, now: float) -> float | None:
        """The clock's callback: act on what is due, return the next deadline."""
        upcoming = []
        for app in self._apps():
            with app.lock:
                if app.deadline is not None and app.deadline <= now:
                    self._on_due(app)
                if app.deadline is not None:
                    upcoming.append(app.deadline)
        return min(upcoming, default=None)
