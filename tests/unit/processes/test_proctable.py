"""The process table as this process reads it (its own children, on every exit's path), and
the tracker's pidfds around it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading

from orchestratr.processes import proctable
from orchestratr.processes.tracker import ProcessTracker


def _spawn(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "60"]) for _ in range(count)]


def _end(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def test_own_children_are_read_again_after_each_change() -> None:
    """The list is kept open and read again: it must follow births and deaths, not repeat
    what it read first."""
    reader = proctable.OwnChildren()
    try:
        before = set(reader.read())
        procs = _spawn(3)
        try:
            assert set(reader.read()) - before == {p.pid for p in procs}
            procs[0].kill()
            procs[0].wait()
            assert set(reader.read()) - before == {p.pid for p in procs[1:]}
        finally:
            _end(procs)
        assert set(reader.read()) == before
    finally:
        reader.close()


def test_own_children_past_one_page_are_all_read() -> None:
    """The kernel hands the list out a page at a time: 700 pids (about 5 KB) take two reads,
    and an orphan on the second page must be seen like one on the first."""
    procs: list[subprocess.Popen[bytes]] = []
    reader = proctable.OwnChildren()
    try:
        procs += _spawn(700)
        for _ in range(2):  # the first read, and one again from the start
            listed = reader.read()
            assert {p.pid for p in procs} <= set(listed)
            assert len(listed) == len(set(listed))
    finally:
        reader.close()
        _end(procs)


def _pidfds() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]":
                found.append(int(name))
    return found


def test_a_dead_processs_pidfd_held_by_a_child_is_not_taken_for_the_next_process() -> None:
    """A child spawned at the instant an exit is handled holds a copy of the dead process's
    pidfd until its exec. Closing ours left the epoll entry in place under that number, and
    the next process's pidfd, given the same number, was taken for the dead one: its watch
    waited on a live process with the tracker's lock held, and every stop of every app waited
    behind it (a restart hung for 60 s). Here the copy is held on purpose, for longer."""
    tracker = ProcessTracker()
    tracker.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        first = subprocess.Popen(["sleep", "60"], start_new_session=True)
        procs.append(first)
        first_gone = threading.Event()
        tracker.watch_child(first, lambda _exit: first_gone.set())
        holder = subprocess.Popen(["sleep", "30"], pass_fds=_pidfds())
        procs.append(holder)
        first.kill()
        assert first_gone.wait(5)
        second = subprocess.Popen(["sleep", "60"], start_new_session=True)
        procs.append(second)
        second_gone = threading.Event()
        tracker.watch_child(second, lambda _exit: second_gone.set())
        assert not second_gone.wait(0.3), "a live process was reported gone"
        answered: list[set[int]] = []
        asking = threading.Thread(target=lambda: answered.append(tracker.processes(second.pid)),
                                  daemon=True)  # stuck with the tracker, if it is
        asking.start()
        asking.join(timeout=3)
        assert answered == [{second.pid}], "the tracker is stuck on a live process"
        second.kill()
        assert second_gone.wait(5)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        tracker.stop()
