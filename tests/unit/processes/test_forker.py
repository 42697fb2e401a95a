"""Every app is forked on a kept thread, so the main thread's children list, which the tracker
reads on every exit, holds orphans and not every app a finished thread launched."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from orchestratr.paths import Paths
from orchestratr.processes import proctable
from orchestratr.processes.forker import Forker
from orchestratr.processes.spawn import ProcessLauncher
from orchestratr.processes.tracker import ProcessTracker
from orchestratr.registry.model import AppSpec


def _in_a_thread(forker: Forker) -> int:
    """The native id of the thread that ran a call asked by a thread that has ended since."""
    ran_on: list[int] = []
    asking = threading.Thread(target=lambda: ran_on.append(forker.call(threading.get_native_id)))
    asking.start()
    asking.join(timeout=10)
    assert asking.native_id not in ran_on
    return ran_on[0]


def test_calls_one_at_a_time_run_on_one_kept_thread() -> None:
    forker = Forker()
    ran_on = {_in_a_thread(forker) for _ in range(5)}
    assert len(ran_on) == 1
    assert ran_on != {threading.get_native_id()}
    assert forker.call(lambda: 42) == 42


def test_an_exception_is_raised_in_the_callers_thread_and_the_thread_goes_on() -> None:
    forker = Forker()

    def fail() -> None:
        raise OSError(24, "Too many open files")

    with pytest.raises(OSError, match="Too many open files"):
        forker.call(fail)
    assert forker.call(lambda: 42) == 42


def test_a_call_from_a_fork_thread_runs_at_once() -> None:
    forker = Forker()
    inner = forker.call(lambda: forker.call(threading.get_native_id))  # would wait for itself
    assert inner == forker.call(threading.get_native_id)


def test_a_call_that_hangs_holds_up_no_other_until_every_thread_is_held() -> None:
    forker = Forker(max_threads=2)
    release = threading.Event()
    hung = threading.Thread(target=lambda: forker.call(lambda: release.wait(30)), daemon=True)
    hung.start()
    try:
        ran_on = _in_a_thread(forker)  # a second kept thread: the first is held
        assert ran_on == _in_a_thread(forker)
        second = threading.Thread(target=lambda: forker.call(lambda: release.wait(30)),
                                  daemon=True)
        second.start()
        waiting: list[int] = []
        third = threading.Thread(target=lambda: waiting.append(forker.call(lambda: 3)),
                                 daemon=True)
        third.start()
        third.join(timeout=0.3)
        assert waiting == []  # both threads are held: at most max_threads are started
    finally:
        release.set()
    third.join(timeout=10)
    assert waiting == [3]


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
    asking = threading.Thread(target=lambda: pids.append(launcher.spawn(AppSpec("a", "sleep 30"))))
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
