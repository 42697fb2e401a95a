"""Every app is forked by a kept thread, never by the thread that asked for its launch.

The daemon is a child subreaper: the kernel hands an orphan to its first live thread, the
main one, and hands that thread the children of every thread that ends (a request's thread, an
autostart worker, a delayed restart's timer) as well. On every exit the tracker reads the main
thread's children list to find the orphans, and that read costs the kernel a few microseconds
per child listed: 26 µs with 100 apps running, 0.25 ms with 1,000, paid on each exit's path.
With every app forked here, on threads that never end, that list holds the orphans alone.

One thread forks while launches come one at a time, and more (up to ``MAX_THREADS``) start as
they overlap: forking from many threads at once gained nothing (400 spawns took 155-161 ms
from 1, 4 or 16 threads alike), but a fork waits for its child's exec, and an exec can hang (a
program on a dead network mount). A launch that finds every fork thread held for
``STALL_S`` forks on its own thread, as every launch did before: a hang holds up no other
launch for longer than that.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import structlog

from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.processes")

T = TypeVar("T")

MAX_THREADS = 4  # kept fork threads (each idle one costs a stack's few pages)
STALL_S = 0.25  # a launch waits this long for a fork thread, then forks on its own


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
    """Runs each ``call`` on a kept thread, in the order asked (see the module's docstring)."""

    def __init__(self, max_threads: int = MAX_THREADS, stall_s: float = STALL_S) -> None:
        self._max = max_threads
        self._stall_s = stall_s
        self._jobs: deque[_Job[Any]] = deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job
        self._closed = False

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a fork thread (or on this one, see ``STALL_S``): its result, or its
        exception raised here."""
        if threading.current_thread() in self._threads:
            return fn()
        job: _Job[T] = _Job(fn)
        with self._ready:
            closed = self._closed
            if not closed:
                self._submit(job)
        if closed:  # outside the lock: a fork may take a while
            return fn()
        if not job.done.acquire(timeout=self._stall_s):
            if self._take_back(job):
                return fn()
            job.done.acquire()  # a fork thread runs it already: a fork of ours, if it hangs
        if job.error is not None:
            raise job.error
        return cast(T, job.result)

    def close(self) -> None:
        """End the fork threads once they are idle; later calls run on their callers."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _submit(self, job: _Job[Any]) -> None:
        """Queue ``job`` (lock held), with one more thread when the idle ones are taken: a
        thread woken for an earlier job still counts as idle until it runs."""
        self._jobs.append(job)
        if len(self._jobs) > self._idle and len(self._threads) < self._max:
            self._add_thread()
        self._ready.notify()

    def _add_thread(self) -> None:
        """One more fork thread (lock held); none when the system refuses one (the job waits
        for a busy thread, or is taken back by its caller)."""
        try:
            self._threads.append(supervised(f"forker-{len(self._threads) + 1}", self._run))
        except RuntimeError as exc:  # can't start new thread: out of processes or memory
            log.warning("fork_thread_refused", error=str(exc), threads=len(self._threads))

    def _take_back(self, job: _Job[Any]) -> bool:
        """Whether ``job`` was still waiting for a thread, now taken out of the queue."""
        with self._ready:
            if job in self._jobs:
                self._jobs.remove(job)
                log.warning("fork_threads_held", threads=len(self._threads),
                            stall_ms=round(self._stall_s * 1000))
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._ready:
                self._idle += 1
                while not self._jobs and not self._closed:
                    self._ready.wait()
                self._idle -= 1
                if not self._jobs:
                    return
                job = self._jobs.popleft()
            job.run()
