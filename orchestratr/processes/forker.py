"""Every app is forked by one kept thread, never by the thread that asked for its launch.

The daemon is a child subreaper: the kernel hands an orphan to its first live thread, the
main one, and hands that thread the children of every thread that ends (a request's thread, an
autostart worker, a delayed restart's timer) as well. On every exit the tracker reads the main
thread's children list to find the orphans, and that read costs the kernel a few microseconds
per child listed: 26 µs with 100 apps running, 0.25 ms with 1,000, paid on each exit's path.
With every app forked here, on a thread that never ends, that list holds the orphans alone.
Forking on many threads at once gained nothing: a fork holds the GIL (400 spawns took
155-161 ms from 1, 4 or 16 threads alike).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from orchestratr.threads import supervised

T = TypeVar("T")


class _Job(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Lock()  # held until the job has run
        self.done.acquire()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            self.error = exc
        finally:
            self.done.release()


class Forker:
    """Runs each ``call`` on one kept thread (started at the first), in the order asked."""

    def __init__(self) -> None:
        self._jobs: deque[_Job[Any]] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the fork thread: its result, or its exception raised here."""
        if threading.current_thread() is self._thread:
            return fn()
        job = _Job(fn)
        with self._ready:
            if self._thread is None:
                self._thread = supervised("forker", self._run)
            self._jobs.append(job)
            self._ready.notify()
        job.done.acquire()
        if job.error is not None:
            raise job.error
        return cast(T, job.result)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs:
                    self._ready.wait()
                job = self._jobs.popleft()
            job.run()
