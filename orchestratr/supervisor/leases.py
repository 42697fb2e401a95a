"""The lease clock: one thread that wakes at the nearest lease or grace deadline.

Heartbeats only ever move a deadline later, so they never wake the thread: at 1000 heartbeats a
second it still wakes only when something can actually expire, and an idle daemon with leases
uses no CPU between deadlines. The clock knows nothing of apps; it asks ``expire_due`` (the
supervisor) to act on what is due and to name the next deadline.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("orchestratr.supervisor")

DEFAULT_LEASE_S = 90.0  # a heartbeat from an app without a lease starts one this long (Koi's)


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
                self._thread = threading.Thread(target=self._loop, name="lease-clock",
                                                daemon=True)
                self._thread.start()
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
