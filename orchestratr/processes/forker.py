"""Every app is forked by a kept thread, never by the thread that asked for its launch.

The daemon is a child subreaper: the kernel hands an orphan to its first live thread, the
main one, and hands that thread the children of every thread that ends (a request's thread, an
autostart worker, a delayed restart's timer) as well. On every exit the tracker reads the main
thread's children list to find the orphans, and that read costs the kernel a few microseconds
per child listed: 26 µs with 100 apps running, 0.25 ms with 1,000, paid on each exit's path.
With every app forked here, on threads that never end, that list holds the orphans alone.
Forking on many threads at once gained nothing: a fork holds the GIL (400 spawns took
155-161 ms from 1, 4 or 16 threads alike). A few threads are kept all the same, started as
forks overlap: a fork waits for its child's exec, and an exec that hangs (a program on a dead
network mount) must not hold up every other launch, hotkeys' included.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from orchestratr.threads import supervised

T = TypeVar("T")

MAX_THREADS = 4  # kept fork threads: a fifth exec hanging at once would wait for one


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
    """Runs each ``call`` on a kept thread, in the order asked: on one while calls come one at
    a time, on up to ``max_threads`` while they overlap."""

    def __init__(self, max_threads: int = MAX_THREADS) -> None:
        self._max = max_threads
        self._jobs: deque[_Job[Any]] = deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a fork thread: its result, or its exception raised here."""
        if threading.current_thread() in self._threads:
            return fn()
        job: _Job[T] = _Job(fn)
        with self._ready:
            self._jobs.append(job)
            if self._idle == 0 and len(self._threads) < self._max:
                self._threads.append(supervised(f"forker-{len(self._threads) + 1}", self._run))
            else:
                self._ready.notify()
        job.done.acquire()
        if job.error is not None:
            raise job.error
        return cast(T, job.result)

    def _run(self) -> None:
        while True:
            with self._ready:
                self._idle += 1
                while not self._jobs:
                    self._ready.wait()
                self._idle -= 1
                job = self._jobs.popleft()
            job.run()
