"""One thread that notices every tracked process ending, the moment it ends.

On Linux each process is watched through a pidfd in one epoll set, so an exit wakes the thread
at once and an idle daemon uses no CPU. A pidfd names one process, not a pid number, so a reused
pid can never pass for the app. Elsewhere, watches are polled with psutil every 0.5 s
(``Process.is_running`` compares create times, for the same reason).

A spawned app is alive while any process of its group is: when the group leader exits, the
group's other live members are looked up and watched in turn.

psutil is imported on first use: a daemon whose apps it spawned itself never needs it, and it
costs about 2 MiB of resident memory.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import structlog

from orchestratr.errors import NoSuchProcessError, UnadoptablePidError
from orchestratr.supervisor.launcher import OnExit, ProcessExit

if TYPE_CHECKING:
    import psutil

log = structlog.get_logger("orchestratr.processes")

POLL_INTERVAL_S = 0.5
# Members that outlive their leader by less than this died with it (a group kill, a crash):
# the leader's status stands. Longer, and the app's status is no longer the leader's to tell.
LINGER_S = 1.0
HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(select, "epoll")


@attrs.define(eq=False)
class _Watch:
    pid: int  # the group leader we spawned, or the adopted process
    on_exit: OnExit
    popen: subprocess.Popen[bytes] | None  # ours to reap, for the exit status
    group: bool
    members: set[int] = attrs.field(factory=set)  # pids currently watched (pidfd or poll)
    code: int | None = None
    leader_exited_at: float | None = None
    lingered: bool = False  # the group outlived its leader by more than LINGER_S
    kill_at: float | None = None


class ProcessTracker:
    def __init__(self, poll_interval: float = POLL_INTERVAL_S) -> None:
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._fds: dict[int, tuple[_Watch, int]] = {}  # pidfd -> (watch, member pid)
        self._polled: dict[int, tuple[_Watch, psutil.Process]] = {}  # member pid -> ...
        self._epoll = select.epoll() if HAVE_PIDFD else None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        if self._epoll is not None:
            self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="process-tracker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the processes keep running) and release every descriptor."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            self._watches.clear()
        if self._epoll is not None:
            self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ------------------------------------------------------------- registering

    def watch_child(self, popen: subprocess.Popen[bytes], on_exit: OnExit) -> None:
        """Watch a group we spawned (``start_new_session``): report when all of it is gone."""
        watch = _Watch(popen.pid, on_exit, popen, group=True)
        self._add(watch, [popen.pid])

    def watch_pid(self, pid: int, on_exit: OnExit, group: bool = False) -> float:
        """Watch a process we did not spawn (or its whole group, led by ``pid``); return its
        create time (a group's: its oldest live member's).

        Raises:
            NoSuchProcessError: it is not running.
            UnadoptablePidError: pid 0 or 1, the daemon itself or one of its ancestors.
        """
        import psutil

        check_adoptable(pid, group)
        if group:
            members = group_members(pid)
            if not members:
                raise NoSuchProcessError(f"no running process in group {pid}")
            born = min(_create_time(member) for member in members)
            self._add(_Watch(pid, on_exit, None, group=True), members)
            return born
        try:
            proc = psutil.Process(pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE
            born = proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            alive = False
        if not alive:
            raise NoSuchProcessError(f"no running process with pid {pid}")
        self._add(_Watch(pid, on_exit, None, group=False), [pid])
        if not proc.is_running():  # died or was replaced while we set up the watch
            self._member_gone(pid)
        return born

    def reap(self, popen: subprocess.Popen[bytes]) -> None:
        """Wait for a child we do not track (a detached app) so it leaves no zombie behind;
        its group and its exit are nobody's concern."""
        self._add(_Watch(popen.pid, _ignore_exit, popen, group=False), [popen.pid])

    def terminate(self, pid: int, group: bool, grace_s: float) -> None:
        """SIGTERM now; SIGKILL after ``grace_s`` unless the watch has ended by then."""
        _signal(pid, group, signal.SIGTERM)
        with self._lock:
            watch = self._watches.get(pid)
            if watch is not None:  # a repeated stop must not postpone the SIGKILL
                deadline = time.monotonic() + grace_s
                watch.kill_at = min(watch.kill_at or deadline, deadline)
        self._wake()

    # ------------------------------------------------------------------- loop

    def _add(self, watch: _Watch, pids: list[int]) -> None:
        with self._lock:
            if self._stopping:  # the daemon is exiting; the process simply outlives it
                return
            self._watches[watch.pid] = watch
            opened = [pid for pid in pids if self._open(watch, pid)]
        if not opened:
            self._member_gone(watch.pid)
        self._wake()

    def _open(self, watch: _Watch, pid: int) -> bool:
        """Start watching one member (lock held). False if it is already gone."""
        if self._epoll is None:
            import psutil

            try:
                self._polled[pid] = (watch, psutil.Process(pid))
            except psutil.NoSuchProcess:
                return False
        else:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return False
            self._fds[fd] = (watch, pid)
            self._epoll.register(fd, select.EPOLLIN)
        watch.members.add(pid)
        return True

    def _loop(self) -> None:
        while not self._stopping:
            for fd in self._ready(self._timeout()):
                with self._lock:
                    entry = self._fds.pop(fd, None)
                    if entry is not None and self._epoll is not None:
                        self._epoll.unregister(fd)
                        os.close(fd)
                if entry is not None:
                    self._member_gone(entry[1], entry[0])
            self._poll_members()
            self._kill_overdue()

    def _ready(self, timeout: float | None) -> list[int]:
        if self._epoll is None:
            select.select([self._wake_r], [], [], timeout)
            self._drain_wake()
            return []
        fds = [fd for fd, _ in self._epoll.poll(-1 if timeout is None else timeout)]
        if self._wake_r in fds:
            self._drain_wake()
            fds.remove(self._wake_r)
        return fds

    def _timeout(self) -> float | None:
        with self._lock:
            deadlines = [w.kill_at for w in self._watches.values() if w.kill_at is not None]
            polling = bool(self._polled)
        waits = [max(0.0, d - time.monotonic()) for d in deadlines]
        if polling:
            waits.append(self._poll_interval)
        return min(waits) if waits else None

    def _member_gone(self, pid: int, watch: _Watch | None = None) -> None:
        """One watched process ended; if it was the last of its watch, report the exit."""
        with self._lock:
            watch = watch or self._watches.get(pid)
            if watch is None or self._watches.get(watch.pid) is not watch:
                return
            watch.members.discard(pid)
            if pid == watch.pid and watch.popen is not None:
                watch.code = watch.popen.wait()
                watch.leader_exited_at = time.monotonic()
            if watch.members:
                return
            while watch.group and (members := group_members(watch.pid)):
                if any([self._open(watch, member) for member in members]):  # noqa: C419 - open all
                    return
            if watch.leader_exited_at is not None:
                watch.lingered = time.monotonic() - watch.leader_exited_at > LINGER_S
            del self._watches[watch.pid]
        self._report(watch)

    def _report(self, watch: _Watch) -> None:
        code = None if watch.lingered or watch.popen is None else watch.code
        try:
            watch.on_exit(ProcessExit(code, describe_exit(code, watch.lingered)))
        except Exception:
            log.exception("exit_callback_failed", pid=watch.pid)

    def _poll_members(self) -> None:
        if not self._polled:
            return
        with self._lock:
            gone = [(pid, w) for pid, (w, p) in self._polled.items() if not _alive(p)]
            for pid, _ in gone:
                del self._polled[pid]
        for pid, watch in gone:
            self._member_gone(pid, watch)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [w for w in self._watches.values() if w.kill_at is not None and w.kill_at <= now]
            for watch in due:
                watch.kill_at = None
        for watch in due:
            log.warning("stop_timeout_kill", pid=watch.pid, group=watch.group)
            _signal(watch.pid, watch.group, signal.SIGKILL)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 512):
                pass


def describe_exit(code: int | None, lingered: bool = False) -> str:
    if code is None:
        return "exited (status unknown: its last process was not ours to wait on)" if lingered \
            else "exited (status unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    hint = {126: " (permission denied)", 127: " (command not found)"}.get(code, "")
    return f"exited with status {code}{hint}"


def check_adoptable(pid: int, group: bool = False) -> None:
    """Refuse a pid whose stop would signal the daemon, its session or the whole system.

    Raises:
        UnadoptablePidError: pid 0 or 1, the daemon, one of its ancestors, or (for a group)
            the daemon's own process group or session.
    """
    import psutil

    if pid <= 1:
        raise UnadoptablePidError(f"pid {pid} cannot be an app's process")
    daemon = psutil.Process()
    if pid == daemon.pid:
        raise UnadoptablePidError(f"pid {pid} is the orchestratr daemon itself")
    if pid in {parent.pid for parent in daemon.parents()}:
        raise UnadoptablePidError(
            f"pid {pid} is an ancestor of the orchestratr daemon (pid {daemon.pid})")
    if group and pid in (os.getpgid(0), os.getsid(0)):
        raise UnadoptablePidError(f"group {pid} is the orchestratr daemon's own")


def _create_time(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return time.time()  # gone meanwhile: its exit is reported through the watch


def _ignore_exit(_exit: ProcessExit) -> None:
    """The exit of a reaped (untracked) child concerns nobody."""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


def app_tree(pid: int) -> set[int]:
    """Every live process of the app led by ``pid``: its process group (a launcher shell that
    forked the GUI and exited leaves the GUI there, reparented to the daemon) and every
    descendant of those (a child that called ``setsid`` left the group, not the tree). A scan
    of the process table: for one app's details, not for a hot path (see ``in_app``)."""
    import psutil

    members = set(group_members(pid)) | {pid}
    for member in list(members):
        with contextlib.suppress(psutil.Error):
            members.update(child.pid for child in psutil.Process(member).children(recursive=True))
    return members


MAX_ANCESTORS = 64  # a process tree deeper than this is not an app's


def in_app(pid: int, candidate: int) -> bool:
    """Whether ``candidate`` is a live process of the app led by ``pid``: in its process group
    (a launcher shell that forked the GUI and exited leaves the GUI there, reparented to the
    daemon), or a descendant of one that is (a child that called ``setsid`` left the group, not
    the tree). Asked by walking up from ``candidate``, a few reads of /proc: listing the app's
    whole tree scanned every process on the machine twice, 60-100 ms with 2,000 processes,
    before each raise."""
    import psutil

    current = candidate
    for _ in range(MAX_ANCESTORS):
        if current <= 1:
            return False
        try:
            if current == pid or os.getpgid(current) == pid:
                return _alive(psutil.Process(candidate))
            current = psutil.Process(current).ppid()
        except (psutil.Error, OSError):
            return False
    return False


def _alive(proc: psutil.Process) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(pid: int, group: bool, sig: signal.Signals) -> None:
    send: Callable[[int, int], None] = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError, PermissionError):
        send(pid, sig)
