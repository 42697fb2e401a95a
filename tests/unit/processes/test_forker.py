"""Every app is forked on a kept thread, so the main thread's children list, which the tracker
reads on every exit, holds orphans and not every app a finished thread launched; an exec that
hangs holds up no other launch for longer than the stall."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from orchestratr.paths import Paths
from orchestratr.processes import proctable
from orchestratr.processes.forker import Forker, _Job
from orchestratr.processes.spawn import ProcessLauncher
from orchestratr.processes.tracker import ProcessTracker
from orchestratr.registry.model import AppSpec


def _ask(forker: Forker, fn: Callable[[], object], out: list[object]) -> threading.Thread:
    """A thread of its own that asks ``forker`` to run ``fn`` and keeps what it returned."""
    thread = threading.Thread(target=lambda: out.append(forker.call(fn)), daemon=True)
    thread.start()
    return thread


def _ran_on(forker: Forker) -> int:
    """The native id of the thread that ran a call asked by a thread that has ended since."""
    out: list[object] = []
    asking = _ask(forker, threading.get_native_id, out)
    asking.join(timeout=10)
    assert out and out[0] != asking.native_id
    return cast(int, out[0])


def _hang(forker: Forker, release: threading.Event) -> threading.Thread:
    """A call that holds a fork thread until ``release``; returns once it holds it."""
    entered = threading.Event()

    def held() -> None:
        entered.set()
        release.wait(30)

    thread = _ask(forker, held, [])
    assert entered.wait(10)
    return thread


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """What held calls wait for; set at the end whatever failed, so no thread stays held."""
    event = threading.Event()
    yield event
    event.set()


def test_calls_one_at_a_time_run_on_one_kept_thread() -> None:
    forker = Forker()
    try:
        assert len({_ran_on(forker) for _ in range(5)}) == 1
        assert forker.call(lambda: 42) == 42
    finally:
        forker.close()


def test_an_exception_is_raised_in_the_callers_thread_and_the_thread_goes_on() -> None:
    forker = Forker()

    def fail() -> None:
        raise OSError(24, "Too many open files")

    try:
        with pytest.raises(OSError, match="Too many open files"):
            forker.call(fail)
        assert forker.call(lambda: 42) == 42
    finally:
        forker.close()


def test_a_call_from_a_fork_thread_runs_at_once_on_it() -> None:
    forker = Forker(max_threads=1, stall_s=5)  # without the shortcut: a 5 s stall
    try:
        started = time.monotonic()
        outer, inner = forker.call(lambda: (threading.get_native_id(),
                                            forker.call(threading.get_native_id)))
        assert outer == inner
        assert time.monotonic() - started < 2
    finally:
        forker.close()


def test_jobs_queued_at_once_start_another_thread_even_while_one_is_idle(
    release: threading.Event,
) -> None:
    """Two launches at once with one thread idle: that thread counted for both, and the second
    waited behind the first (for ever, when the first exec hangs)."""
    forker = Forker(max_threads=2, stall_s=5)
    try:
        _ran_on(forker)  # one thread, idle now
        hanging, quick = _Job(lambda: release.wait(30)), _Job(threading.get_native_id)
        with forker._ready:  # both queued before the idle thread can take either
            forker._submit(hanging)
            forker._submit(quick)
        assert quick.done.acquire(timeout=2)
        assert not hanging.done.acquire(blocking=False)
    finally:
        release.set()
        forker.close()


def test_when_every_thread_is_held_a_call_forks_on_its_own_thread_after_the_stall(
    release: threading.Event,
) -> None:
    forker = Forker(max_threads=2, stall_s=0.2)
    try:
        _hang(forker, release)
        second = _ran_on(forker)  # a second kept thread: the first is held
        assert second == _ran_on(forker)
        _hang(forker, release)  # now both are
        out: list[object] = []
        asking = _ask(forker, threading.get_native_id, out)
        asking.join(timeout=5)
        assert out == [asking.native_id]  # ran on its caller, the hung ones still held
    finally:
        release.set()
        forker.close()


def test_closed_threads_end_and_later_calls_run_on_their_callers() -> None:
    forker = Forker()
    fork_thread = _ran_on(forker)
    forker.close()
    deadline = time.monotonic() + 5
    while any(t.native_id == fork_thread for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the fork thread did not end"
        time.sleep(0.01)
    assert forker.call(threading.get_native_id) == threading.get_native_id()


def _children_of(tid: int) -> set[int]:
    text = Path(f"/proc/self/task/{tid}/children").read_text()
    return {int(pid) for pid in text.split()}


@pytest.mark.skipif(not proctable.available(), reason="Linux /proc only")
def test_an_app_launched_by_a_thread_that_ended_is_not_a_child_of_the_main_thread(
    tmp_path: Path,
) -> None:
    tracker = ProcessTracker()
    launcher = ProcessLauncher(Paths(tmp_path, tmp_path / "logs").app_log, tracker)
    pids: list[int] = []
    asking = threading.Thread(target=lambda: pids.append(launcher.spawn(AppSpec("a", "sleep 30"))),
                              daemon=True)
    asking.start()
    asking.join(timeout=10)
    try:
        assert len(pids) == 1
        # the kernel hands a dead thread's children to the main thread: an app forked by the
        # asking thread itself would be listed there now
        assert pids[0] not in proctable.own_children()
        forkers = [t for t in threading.enumerate() if t.name.startswith("forker")]
        assert any(pids[0] in _children_of(t.native_id or 0) for t in forkers)
    finally:
        for pid in pids:
            os.killpg(pid, 9)
            os.waitpid(pid, 0)
        launcher.close()
        tracker.stop()
