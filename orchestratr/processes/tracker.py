"""One thread that notices every tracked app ending, the moment it ends.

On Linux each process is watched through a pidfd in one epoll set, so an exit wakes the thread
at once and an idle daemon uses no CPU. A pidfd names one process, not a pid number, so a reused
pid can never pass for the app. Elsewhere, watches are polled with psutil every 0.5 s.

An app is every process descended from its spawn. The daemon is a child subreaper
(``subreaper=True``): when a watched process dies, its children come back to the daemon, even
those that called ``setsid()``, and are watched in its place, so the app lives while any of
them does, and ``terminate`` reaches them all. Finding them is a read of the daemon's own
children list at that moment: no scan of the process table on the exit path. A process the
daemon did not spawn (a survivor of an earlier daemon) is watched with the members the start-up
scan found; when the last of them ends, one more scan looks for processes still carrying the
app's markers before the exit is reported.

Without the subreaper (a supervisor built by a test), a spawned app is its process group, as
before: when the watched members are gone the group's remaining members are looked up.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING

import attrs
import structlog

from orchestratr.errors import NoSuchProcessError, UnadoptablePidError
from orchestratr.fds import readable
from orchestratr.processes import proctable
from orchestratr.supervisor.launcher import OnExit, ProcessExit
from orchestratr.threads import supervised

if TYPE_CHECKING:
    import psutil

log = structlog.get_logger("orchestratr.processes")

POLL_INTERVAL_S = 0.5
# Members that outlive their leader by less than this died with it (a group kill, a crash):
# the leader's status stands. Longer, and the app's status is no longer the leader's to tell.
LINGER_S = 1.0
SPAWN_WAIT_S = 0.05  # how long an orphan sweep waits for spawns in flight to be registered
# SIGCHLDs within this gather into one orphan sweep, which runs after the exit that sent them
# has been reported (a sweep per SIGCHLD ran on the tracker thread on every exit's path)
SWEEP_DELAY_S = 0.05
MAX_WAIT_S = 3600.0  # epoll takes milliseconds in a C int: a longer wait is cut to this
HAVE_PIDFD = hasattr(os, "pidfd_open") and hasattr(select, "epoll")


@attrs.define(eq=False)
class _Watch:
    pid: int  # the group leader we spawned, or the adopted process (group): the app's key
    on_exit: OnExit
    popen: subprocess.Popen[bytes] | None  # ours to reap, for the exit status
    group: bool
    app: str | None = None  # the ORCHESTRATR_APP marker its processes carry
    config_dir: str | None = None  # ... with this ORCHESTRATR_CONFIG_DIR (adopted watches)
    members: set[int] = attrs.field(factory=set)  # pids currently watched (pidfd or poll)
    code: int | None = None
    leader_exited_at: float | None = None
    lingered: bool = False  # the app outlived its leader by more than LINGER_S
    kill_at: float | None = None


class ProcessTracker:
    def __init__(self, poll_interval: float = POLL_INTERVAL_S, subreaper: bool = False,
                 config_dir: str | None = None) -> None:
        self._poll_interval = poll_interval
        # the ORCHESTRATR_CONFIG_DIR our apps carry: a child carrying another is no orphan of
        # theirs (another daemon's app; in the test suite, one run earlier in the process)
        self._config_dir = config_dir
        self._subreaper = subreaper and HAVE_PIDFD and proctable.available()
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._by_member: dict[int, _Watch] = {}
        self._fds: dict[int, tuple[_Watch, int]] = {}  # pidfd -> (watch, member pid)
        self._polled: dict[int, tuple[_Watch, psutil.Process]] = {}  # member pid -> ...
        self._dying: set[_Watch] = set()  # watches with a kill_at: a wake looks at these only
        self._epoll = select.epoll() if HAVE_PIDFD else None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        if self._epoll is not None:
            self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._spawns = threading.Condition()
        self._in_flight = 0
        self._expected: set[int] = set()  # spawned, not yet watched: not orphans
        self._ignored: set[int] = set()  # our children that are no app's (readiness probes)
        # SIGCHLD came: when to look for orphans nobody's death announced
        self._sweep_at: float | None = None
        self._my_session = os.getsid(0)
        self._children = proctable.OwnChildren()  # read on every exit's path
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = supervised("process-tracker", self._loop)

    def stop(self) -> None:
        """Stop watching (the processes keep running) and release every descriptor."""
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=2)
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            self._watches.clear()
            self._dying.clear()
            self._by_member.clear()
        if self._epoll is not None:
            self._epoll.close()
        self._children.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ------------------------------------------------------------- registering

    @contextlib.contextmanager
    def spawning(self) -> Iterator[Callable[[int, bool], None]]:
        """Around a fork: yields ``note(pid, app)`` to call once the pid is known (an app's
        process, or a probe that is no app's). Until then no orphan sweep runs, so a fresh
        child is never taken for an orphan, nor reaped behind ``subprocess``'s back."""
        with self._spawns:
            self._in_flight += 1

        def note(pid: int, app: bool) -> None:
            with self._lock:
                (self._expected if app else self._ignored).add(pid)

        try:
            yield note
        finally:
            with self._spawns:
                self._in_flight -= 1
                self._spawns.notify_all()

    def forget_child(self, pid: int) -> None:
        """A probe's process was waited for: its number may be anybody's from now on."""
        with self._lock:
            self._ignored.discard(pid)

    def watch_child(
        self, popen: subprocess.Popen[bytes], on_exit: OnExit, app: str | None = None
    ) -> None:
        """Watch an app we spawned (``start_new_session``): report when all of it is gone."""
        watch = _Watch(popen.pid, on_exit, popen, group=True, app=app)
        with self._lock:
            self._expected.discard(popen.pid)
        self._add(watch, [popen.pid])

    def watch_pid(
        self, pid: int, on_exit: OnExit, group: bool = False, members: Collection[int] = (),
        app: str | None = None, config_dir: str | None = None, born: float | None = None,
    ) -> float:
        """Watch a process we did not spawn (or, with ``group``, the app whose processes are
        ``members`` or else the group led by ``pid``); return its create time (the oldest
        member's, unless ``born`` gives it: adoption's scan has just read every member, and
        reading each again was a tenth of a restart with 1,000 apps). ``app`` and
        ``config_dir``: the markers a later rescan looks for.

        Raises:
            NoSuchProcessError: it is not running.
            UnadoptablePidError: pid 0 or 1, the daemon itself or one of its ancestors.
        """
        check_adoptable(pid, group)
        if group or members:
            found = list(members) or group_members(pid)
            if born is None:
                times = [t for t in map(_create_time, found) if t is not None]
                born = min(times, default=None)
            watch = _Watch(pid, on_exit, None, group=group, app=app, config_dir=config_dir)
            if born is None or not self._add(watch, found, report_gone=False):
                raise NoSuchProcessError(f"no running process in group {pid}")
            return born
        created = _create_time(pid)
        if created is None:
            raise NoSuchProcessError(f"no running process with pid {pid}")
        self._add(_Watch(pid, on_exit, None, group=False), [pid])
        if _create_time(pid) != created:  # died or was replaced while we set up the watch
            self._member_gone(pid)
        return created if born is None else born

    def reap(self, popen: subprocess.Popen[bytes]) -> None:
        """Wait for a child we do not track (a detached app) so it leaves no zombie behind;
        its group and its exit are nobody's concern."""
        with self._lock:
            self._expected.discard(popen.pid)
        self._add(_Watch(popen.pid, _ignore_exit, popen, group=False), [popen.pid])

    def terminate(self, pid: int, group: bool, grace_s: float) -> None:
        """SIGTERM to every process of the app now; SIGKILL after ``grace_s`` unless the
        watch has ended by then."""
        self._signal_app(pid, group, signal.SIGTERM)
        with self._lock:
            watch = self._watches.get(pid)
            if watch is not None:  # a repeated stop must not postpone the SIGKILL
                deadline = time.monotonic() + min(grace_s, MAX_WAIT_S)
                watch.kill_at = min(watch.kill_at or deadline, deadline)
                self._dying.add(watch)
        self._wake()

    def _members(self, key: int) -> set[int]:
        """The watched processes of the app watched as ``key`` (none when it is not)."""
        with self._lock:
            watch = self._watches.get(key)
            return set(watch.members) if watch is not None else set()

    def belongs(self, pid: int, key: int) -> bool:
        """Whether ``pid`` is one of the processes of the app watched as ``key``."""
        members = self._members(key)
        if pid in members or _pgid(pid) == key:
            return True
        return proctable.available() and pid in proctable.descendants(members)

    def owns(self, key: int, candidate: int) -> bool:
        """Whether ``candidate`` is a live process of the app watched as ``key`` (see
        ``in_app``), its members included: a child that left the group with ``setsid`` and
        came back to the daemon is below neither the leader nor the group."""
        return in_app(key, candidate, self._members(key))

    def processes(self, key: int) -> set[int]:
        """Every live process of the app watched as ``key``: its members and their
        descendants (empty when it is not watched)."""
        members = self._members(key)
        if proctable.available():
            members |= proctable.descendants(members)
        return members

    def children_changed(self) -> None:
        """SIGCHLD: an orphan may have come back to us without a watched death saying so (its
        parent was a process the app runs under a watched one); look on the tracker thread."""
        if self._subreaper and self._sweep_at is None:
            self._sweep_at = time.monotonic() + SWEEP_DELAY_S
            self._wake()

    # ------------------------------------------------------------------- loop

    def _add(self, watch: _Watch, pids: list[int], report_gone: bool = True) -> bool:
        """Watch ``pids`` as ``watch``; False if none of them runs (then the exit is reported,
        or with ``report_gone`` False the watch is dropped for the caller to say so)."""
        with self._lock:
            if self._stopping:  # the daemon is exiting; the process simply outlives it
                return True
            self._watches[watch.pid] = watch
            polled = len(self._polled)
            opened = [pid for pid in pids if self._open(watch, pid)]
            polled = len(self._polled) != polled
            if not opened and not report_gone:
                del self._watches[watch.pid]
                return False
        if not opened:
            self._member_gone(watch.pid, watch)
        if polled:  # a pidfd joins the epoll set as it waits; a polled member needs a timeout
            self._wake()
        return bool(opened)

    def _open(self, watch: _Watch, pid: int) -> bool:
        """Start watching one member (lock held). False if it is already gone."""
        if pid in watch.members:
            return True
        fd = None
        if self._epoll is not None:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return False
            except OSError:  # out of descriptors, say: polled, never taken for gone
                fd = None
        if fd is None:
            import psutil

            try:
                self._polled[pid] = (watch, psutil.Process(pid))
            except psutil.NoSuchProcess:
                return False
        else:
            assert self._epoll is not None
            self._fds[fd] = (watch, pid)
            self._epoll.register(fd, select.EPOLLIN)
        watch.members.add(pid)
        self._by_member[pid] = watch
        return True

    def _loop(self) -> None:
        while not self._stopping:
            for fd in self._ready(self._timeout()):
                with self._lock:
                    entry = self._fds.pop(fd, None)
                if entry is None:
                    continue
                try:
                    self._member_gone(entry[1], entry[0])
                finally:  # after the report, off the exit's path
                    self._forget_pidfd(fd)
            if self._sweep_at is not None and self._sweep_at <= time.monotonic():
                self._sweep_at = None  # before the sweep: a SIGCHLD from now on gets its own
                self._adopt_orphans(None)
            self._poll_members()
            self._kill_overdue()

    def _forget_pidfd(self, fd: int) -> None:
        """Out of the epoll set, then closed. Closing alone is not enough: a child being
        spawned that very instant holds a copy of the descriptor until its exec, the set keeps
        the entry under this number, and the next process's pidfd, given the same number, was
        taken for the dead one (its watch then waited on a live process, holding the lock)."""
        assert self._epoll is not None
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)
        os.close(fd)

    def _ready(self, timeout: float | None) -> list[int]:
        if self._epoll is None:
            readable([self._wake_r], timeout)
            self._drain_wake()
            return []
        fds = [fd for fd, _ in self._epoll.poll(-1 if timeout is None else timeout)]
        if self._wake_r in fds:
            self._drain_wake()
            fds.remove(self._wake_r)
        return fds

    def _timeout(self) -> float | None:
        with self._lock:
            deadlines = [w.kill_at for w in self._dying if w.kill_at is not None]
            polling = bool(self._polled)
        sweep_at = self._sweep_at
        if sweep_at is not None:
            deadlines.append(sweep_at)
        waits = [max(0.0, d - time.monotonic()) for d in deadlines]
        if polling:
            waits.append(self._poll_interval)
        return min(min(waits), MAX_WAIT_S) if waits else None

    def _member_gone(self, pid: int, watch: _Watch | None = None) -> None:
        """One watched process ended; if it was the last of its app, report the exit."""
        with self._lock:
            watch = watch or self._by_member.get(pid)
            if watch is None or self._watches.get(watch.pid) is not watch:
                return
            watch.members.discard(pid)
            if self._by_member.get(pid) is watch:
                del self._by_member[pid]
            if pid == watch.pid and watch.popen is not None:
                watch.code = watch.popen.wait()
                watch.leader_exited_at = time.monotonic()
            elif self._subreaper:
                _reap(pid)  # an orphan that came back to us: ours to collect
        if self._subreaper and watch.popen is not None:
            self._adopt_orphans(watch)
        with self._lock:
            if watch.members or self._watches.get(watch.pid) is not watch:
                return
            if self._find_more(watch):
                return
            if watch.leader_exited_at is not None:
                watch.lingered = time.monotonic() - watch.leader_exited_at > LINGER_S
            del self._watches[watch.pid]
            self._dying.discard(watch)
        self._report(watch)

    def _find_more(self, watch: _Watch) -> bool:
        """The watched members are gone (lock held): are other processes of the app left?
        Spawned under the subreaper, its orphans have come to us already; otherwise look for
        the rest of its group, or (adopted) for processes that carry its markers."""
        if watch.popen is not None and self._subreaper:
            return False
        if not watch.group:
            return False
        more = group_members(watch.pid)
        if watch.app is not None and watch.config_dir is not None:
            more += [p.pid for p in proctable.scan() if not p.zombie and p.app == watch.app
                     and proctable.same_dir(p.config_dir, watch.config_dir)]
        return any([self._open(watch, member) for member in set(more)])  # noqa: C419 - open all

    def _adopt_orphans(self, dying: _Watch | None) -> None:
        """Watch the children that came back to us (subreaper) as processes of their app:
        the app of the process that just died (``dying``), or the one their markers or their
        group name. Zombies nobody waits for are reaped."""
        children = self._children.read()
        with self._lock:
            unknown = [child for child in children if child not in self._by_member
                       and child not in self._expected and child not in self._ignored]
        if not unknown:
            return
        with self._spawns:  # a child still being spawned is no orphan: wait for its pid
            self._spawns.wait_for(lambda: self._in_flight == 0, SPAWN_WAIT_S)
        with self._lock:
            known = set(self._by_member) | self._expected | self._ignored
        for child in unknown:
            if child in known:
                continue
            proc = proctable.info(child, with_markers=True)
            if proc is None or proc.session == self._my_session:
                continue  # not an app's: someone in the daemon runs it and waits for it
            if proc.zombie:
                _reap(child)
                continue
            if self._foreign(proc):
                continue
            with self._lock:
                watch = self._owner(proc, dying)
                if watch is not None:
                    self._open(watch, child)
                    log.info("orphan_adopted", pid=child, app=watch.app, key=watch.pid)

    def _foreign(self, proc: proctable.ProcInfo) -> bool:
        """Whether ``proc`` carries another config dir's marker than ours."""
        return (self._config_dir is not None and proc.config_dir is not None
                and not proctable.same_dir(proc.config_dir, self._config_dir))

    def _owner(self, proc: proctable.ProcInfo, dying: _Watch | None) -> _Watch | None:
        """Whose process an orphan is (lock held)."""
        if proc.app is not None and (dying is None or proc.app != dying.app):
            named = [w for w in self._watches.values() if w.app == proc.app]
            if named:
                return named[0]
        if dying is not None:
            return dying
        return self._watches.get(proc.pgrp) or self._watches.get(proc.session)

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
            due = [w for w in self._dying if w.kill_at is not None and w.kill_at <= now]
            for watch in due:
                watch.kill_at = None
                self._dying.discard(watch)
            due = [w for w in due if self._watches.get(w.pid) is w]
        for watch in due:
            log.warning("stop_timeout_kill", pid=watch.pid, group=watch.group)
            self._signal_app(watch.pid, watch.group, signal.SIGKILL)

    def _signal_app(self, key: int, group: bool, sig: signal.Signals) -> None:
        """``sig`` to the app's group and to every process of the app, wherever its session."""
        targets = self.processes(key)
        if group and (not targets or any(_pgid(p) == key for p in targets)):
            _signal(key, True, sig)  # a number that leads no group of ours is left alone
        for pid in targets:
            _signal(pid, False, sig)

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
    if pid <= 1 or pid > proctable.MAX_PID:
        raise UnadoptablePidError(f"pid {pid} cannot be an app's process")
    me = os.getpid()
    if pid == me:
        raise UnadoptablePidError(f"pid {pid} is the orchestratr daemon itself")
    if pid in ancestors():
        raise UnadoptablePidError(
            f"pid {pid} is an ancestor of the orchestratr daemon (pid {me})")
    if group and pid in (os.getpgid(0), os.getsid(0)):
        raise UnadoptablePidError(f"group {pid} is the orchestratr daemon's own")


def ancestors() -> set[int]:
    """The daemon's parent, its parent, ... up to init (kept while the parent stays)."""
    parent = os.getppid()
    cached = _ANCESTORS.get(parent)
    if cached is None:
        cached = _ANCESTORS[parent] = frozenset(_walk_ancestors())
    return set(cached)


_ANCESTORS: dict[int, frozenset[int]] = {}


def _walk_ancestors() -> set[int]:
    found: set[int] = set()
    if proctable.available():
        proc = proctable.info(os.getpid())
        while proc is not None and proc.ppid > 0 and proc.ppid not in found:
            found.add(proc.ppid)
            proc = proctable.info(proc.ppid)
        return found
    import psutil

    return {parent.pid for parent in psutil.Process().parents()}


def _create_time(pid: int) -> float | None:
    """When a live process was created (None: gone or a zombie)."""
    if proctable.available():
        proc = proctable.info(pid)
        return None if proc is None or proc.zombie else proc.create_time
    import psutil

    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _ignore_exit(_exit: ProcessExit) -> None:
    """The exit of a reaped (untracked) child concerns nobody."""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, OverflowError):
        return []
    except PermissionError:
        pass
    if proctable.available():
        table = proctable.scan(with_markers=False)
        return [p.pid for p in table if p.pgrp == pgid and not p.zombie]
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
    descendant of those (a child that called ``setsid`` left the group, not the tree). For one
    app's details, not for a hot path (see ``in_app``)."""
    members = set(group_members(pid)) | {pid}
    if proctable.available():
        return members | proctable.descendants(members)
    import psutil

    for member in list(members):
        with contextlib.suppress(psutil.Error):
            members.update(child.pid for child in psutil.Process(member).children(recursive=True))
    return members


MAX_ANCESTORS = 64  # a process tree deeper than this is not an app's


def in_app(pid: int, candidate: int, members: Collection[int] = ()) -> bool:
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
            if current == pid or current in members or os.getpgid(current) == pid:
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
    with contextlib.suppress(ProcessLookupError, PermissionError, OverflowError):
        send(pid, sig)
