"""Apps' output: from a pipe per run to the app's log file, rotated while it runs.

An app writing straight into its file could only be rotated at its next launch (a file of
100 MB was seen). Here each run's stdout and stderr are one pipe, and one thread copies every
pipe into its app's file, rotating it at a line boundary when a write would take it past
``applog.LOG_MAX_BYTES``; no line is lost, since a rotation happens between two writes.

The app's end of the pipe is opened read-write (through ``/proc/self/fd``), so the app itself
counts as a reader: if the daemon is gone, a write never raises EPIPE or SIGPIPE (it waits
once the pipe's 64 KiB are full). When the daemon stops while apps run, a drain process
(``python -m orchestratr.processes.output``) takes over their pipes until they end or a new
daemon is up; a new daemon adopting an app reopens its pipe through ``/proc/<pid>/fd/1``.

Where pipes or epoll are missing (not Linux), apps write to the file directly, rotated at launch.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import attrs

from orchestratr import applog
from orchestratr.threads import supervised

READ_SIZE = 64 * 1024
HAVE_PIPES = hasattr(select, "epoll") and os.path.isdir("/proc/self/fd")
DRAIN_POLL_S = 0.5  # how often a drain process looks for a new daemon's port file
HANGUP_GRACE_S = 0.05  # a pipe whose writers are all gone is let go this much later
ARMED = select.EPOLLIN | select.EPOLLONESHOT if HAVE_PIPES else 0


@attrs.define(eq=False)
class _File:
    """One app's log file, shared by the pipes of its runs (an old run may still write)."""

    path: Path
    fd: int
    size: int
    pipes: list[_Pipe] = attrs.field(factory=list)  # the runs writing to it
    recent: applog.Recent = attrs.field(factory=applog.Recent)  # its last bytes, for errors


@attrs.define(eq=False)
class _Pipe:
    fd: int  # our read end (non-blocking)
    file: _File


class OutputPump:
    """Copies every app's pipe to its log file on one thread; ``on_written`` hears of each
    write (followers of the log wake on it)."""

    def __init__(
        self,
        on_written: Callable[[], None] = lambda: None,
        max_bytes: int = applog.LOG_MAX_BYTES,
    ) -> None:
        self._on_written = on_written
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._files: dict[Path, _File] = {}
        self._pipes: dict[int, _Pipe] = {}
        self._hung_up: list[tuple[float, _Pipe]] = []  # (when to let it go, the pipe)
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._started = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Copy from now on. The thread itself starts with the first pipe: a daemon whose
        apps never ran pays nothing for it (idle memory is measured)."""
        self._started = True
        if self._pipes:
            self._run()

    def _run(self) -> None:
        if self._started and not self._stopping and (
                self._thread is None or not self._thread.is_alive()):
            self._thread = supervised("app-output", self._loop)

    def stop(self) -> list[tuple[int, Path]]:
        """Stop copying; return the pipes still open with their files (their apps run on).
        The caller hands them to a drain process, then calls ``close``."""
        self._stopping = True
        self._wake()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=2)
        with self._lock:
            for pipe in list(self._pipes.values()):
                self._read(pipe)
            return [(pipe.fd, pipe.file.path) for pipe in self._pipes.values()]

    def close(self) -> None:
        with self._lock:
            for pipe in list(self._pipes.values()):
                self._release(pipe)
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def open_pipes(self) -> int:
        return len(self._pipes)

    # ------------------------------------------------------------------ pipes

    def open(self, path: Path, command: str) -> int:
        """A new run's pipe: the run's header is written, and the returned descriptor (the
        pipe's read-write end) is for the child's stdout and stderr; the caller closes it once
        the child has it.

        Raises:
            OSError: the file or the pipe cannot be made.
        """
        read_end, write_end = os.pipe()
        try:
            child_end = os.open(f"/proc/self/fd/{write_end}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        try:
            with self._lock:
                file = self._file(path, rotate_at_launch=True)
                self._write(file, applog.header(command))
                self._add(read_end, file)
        except OSError:
            os.close(read_end)
            os.close(child_end)
            raise
        self._on_written()
        return child_end

    def attach(self, read_end: int, path: Path) -> None:
        """Copy an existing pipe (a drain's, or one reopened from a running app) to ``path``."""
        os.set_blocking(read_end, False)
        with self._lock:
            self._add(read_end, self._file(path, rotate_at_launch=False))

    def drain(self, path: Path) -> None:
        """Copy what the pipes of ``path`` hold right now (a run has ended: its last lines
        must be in the file before its error quotes them)."""
        with self._lock:
            file = self._files.get(path)
            pipes = list(file.pipes) if file is not None else []
            for pipe in pipes:  # its end is let go by this pump's thread, off the exit's path
                self._read(pipe, release=False)
        if pipes:
            self._on_written()

    def recent(self, path: Path) -> applog.Recent | None:
        """The last bytes written to ``path``, kept up to date for as long as the caller holds
        them (a run's exit quotes its last line from them, even after its pipe has ended)."""
        with self._lock:
            file = self._files.get(path)
            return file.recent if file is not None else None

    def reopen(self, path: Path, pids: Iterable[int]) -> bool:
        """Copy the output of a running app this daemon did not spawn (a survivor): its pipe
        is the read-write pipe on fd 1 of one of ``pids``. False if none has one."""
        with self._lock:
            if path in self._files:
                return True
        for pid in pids:
            fd = _open_app_pipe(pid)
            if fd is not None:
                self.attach(fd, path)
                return True
        return False

    # ------------------------------------------------------------------ internals

    def _file(self, path: Path, rotate_at_launch: bool) -> _File:
        """The open file of ``path`` (lock held)."""
        file = self._files.get(path)
        if file is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            file = self._files[path] = _File(path, fd, os.fstat(fd).st_size)
        if rotate_at_launch and file.size >= self._max_bytes:
            self._rotate(file)
        return file

    def _add(self, fd: int, file: _File) -> None:
        pipe = self._pipes[fd] = _Pipe(fd, file)
        file.pipes.append(pipe)
        self._epoll.register(fd, ARMED)  # the thread's epoll.poll sees it at once
        self._run()

    def _release(self, pipe: _Pipe) -> None:
        """Forget a pipe whose writers are all gone (lock held)."""
        del self._pipes[pipe.fd]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(pipe.fd)
        os.close(pipe.fd)
        pipe.file.pipes.remove(pipe)
        if not pipe.file.pipes:
            del self._files[pipe.file.path]
            os.close(pipe.file.fd)

    def _read(self, pipe: _Pipe, once: bool = False, release: bool = True) -> bool:
        """Copy what the pipe holds (lock held); False once it has ended (and is released,
        unless not to ``release``). ``once``: one read only, so an app that writes without
        pause cannot keep the lock (and every other pipe, and the launches that open one)
        waiting for its pipe to empty; the pipe is armed again for what is left."""
        while True:
            try:
                chunk = os.read(pipe.fd, READ_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                if release:
                    self._release(pipe)
                return False
            self._write(pipe.file, chunk)
            if once:
                return True

    def _write(self, file: _File, data: bytes) -> None:
        """Append ``data``, rotating first whenever it would pass the limit: at the last line
        end that fits (a line longer than a whole file is cut where the file is full)."""
        while data:
            room = self._max_bytes - file.size
            if len(data) <= room:
                cut = len(data)
            else:
                cut = data.rfind(b"\n", 0, max(room, 0)) + 1
                if cut == 0 and file.size == 0:
                    cut = self._max_bytes
            if cut:
                _write_all(file.fd, data[:cut])
                file.recent.add(data[:cut])
                file.size += cut
                data = data[cut:]
            if data:
                self._rotate(file)

    def _rotate(self, file: _File) -> None:
        os.close(file.fd)
        applog.rotate(file.path)
        file.fd = os.open(file.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                          0o600)
        file.size = 0

    def _loop(self) -> None:
        """Each pipe is armed for one event at a time (``EPOLLONESHOT``): one read, then armed
        again. A pipe whose app has ended (hung up, empty) wakes this thread at the very
        instant the tracker sees the exit; it is let go ``HANGUP_GRACE_S`` later, so the two
        threads do not take turns on the GIL at every system call of the exit's path."""
        while not self._stopping:
            events = self._epoll.poll(self._grace_left())
            wrote = False
            with self._lock:
                for fd, mask in events:
                    if fd == self._wake_r:
                        _drain_wake(self._wake_r)
                        continue
                    pipe = self._pipes.get(fd)
                    if pipe is None:
                        continue
                    if not mask & select.EPOLLIN:
                        self._hung_up.append((time.monotonic() + HANGUP_GRACE_S, pipe))
                    elif self._read(pipe, once=True):
                        self._epoll.modify(fd, ARMED)
                        wrote = True
                self._let_go()
            if wrote:
                self._on_written()

    def _grace_left(self) -> float | None:
        return max(0.0, self._hung_up[0][0] - time.monotonic()) if self._hung_up else None

    def _let_go(self) -> None:
        """Release the hung-up pipes whose grace is over (lock held)."""
        now = time.monotonic()
        while self._hung_up and self._hung_up[0][0] <= now:
            _, pipe = self._hung_up.pop(0)
            if self._pipes.get(pipe.fd) is pipe and self._read(pipe):
                self._epoll.modify(pipe.fd, ARMED)  # written to again: not ended after all

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # a full or broken disk: the output is lost, the app goes on
        view = view[written:]


def _drain_wake(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 512):
            pass


def _open_app_pipe(pid: int) -> int | None:
    """A read end of the pipe on ``pid``'s stdout, if it is one of ours: a pipe the process
    holds read-write, as only ``OutputPump.open`` makes them."""
    try:
        info = os.open(f"/proc/{pid}/fdinfo/1", os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(info, 4096)
        finally:
            os.close(info)
        flags = next(line.split()[1] for line in text.splitlines()
                     if line.startswith(b"flags:"))
        if int(flags, 8) & os.O_ACCMODE != os.O_RDWR:
            return None
        fd = os.open(f"/proc/{pid}/fd/1", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


# ---------------------------------------------------------------------- hand-over

def hand_over(
    pipes: list[tuple[int, Path]], port_file: Path, env: Mapping[str, str]
) -> int | None:
    """Start a drain process for the pipes of apps that outlive the daemon; return its pid.
    ``env`` marks it as this config dir's (as the apps are)."""
    if not pipes:
        return None
    args = [f"{fd}={path}" for fd, path in pipes]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestratr.processes.output", str(port_file), *args],
        pass_fds=[fd for fd, _ in pipes], start_new_session=True, env={**os.environ, **env},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc.pid


def drain_main(argv: list[str]) -> int:
    """The drain process: copy the pipes handed over until they end, until a daemon is up
    again (its port file exists: it reopens them itself), or until SIGTERM."""
    port_file = Path(argv[0])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pump = OutputPump()
    for arg in argv[1:]:
        fd, _, path = arg.partition("=")
        os.set_inheritable(int(fd), False)
        pump.attach(int(fd), Path(path))
    pump.start()
    while pump.open_pipes and not port_file.exists() and not stop.wait(DRAIN_POLL_S):
        pass
    pump.stop()
    pump.close()
    return 0


if __name__ == "__main__":
    sys.exit(drain_main(sys.argv[1:]))
