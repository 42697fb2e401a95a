"""Hot reload: notice edits to config.yml and apps.d/*.yml and call back once they settle.

The directories are watched, not the files, so editors that save by writing a temporary file
and renaming it over the original are seen (the Go orchestratr missed those). Bursts of events
are folded into one callback after a 100 ms quiet period. The config dir's parent is watched
too: a config dir deleted and made again is watched again (and ``on_recreated`` told).
``poke`` asks for a reload as an edit would (SIGHUP).

On Linux the watch is inotify, read directly through libc: watchdog's observer costs about
1 MiB of resident memory for the same two watches (a fifth of the daemon's idle budget).
Elsewhere, or if inotify cannot be had, watchdog watches instead.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from orchestratr.fds import readable
from orchestratr.paths import Paths
from orchestratr.registry.load import APP_SUFFIXES
from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.registry")

DEBOUNCE_S = 0.1
_CHANGES = {"created", "modified", "deleted", "moved", "closed"}  # watchdog's event types


class _Backend(Protocol):
    def start(self) -> None: ...

    def watch(self, directory: Path) -> None: ...

    def unwatch(self, directory: Path) -> None: ...

    def stop(self) -> None: ...


class ConfigWatcher:
    def __init__(
        self, paths: Paths, on_change: Callable[[], None],
        on_recreated: Callable[[], None] | None = None,
    ) -> None:
        self._paths = paths
        self._on_change = on_change
        self._on_recreated = on_recreated
        self._backend: _Backend | None = None
        self._apps_inode: int | None = None
        self._config_inode: int | None = None  # the config dir watched now (None: gone)
        self._config_seen: int | None = None  # the last config dir that existed
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._backend = _inotify_or_none(self.changed) or _watchdog(self.changed)
        with contextlib.suppress(OSError):
            self._backend.watch(self._paths.config_dir.parent)
        self._watch_config_dir()
        self._watch_apps_dir()
        self._backend.start()
        self._thread = supervised("config-watcher", self._run)

    def poke(self) -> None:
        """Reload as if a file had changed (SIGHUP)."""
        self._dirty.set()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        if self._backend is not None:
            self._backend.stop()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=2)

    def changed(self, paths: list[Path]) -> None:
        """A backend saw these paths change: reload if one of them is ours."""
        if any(self._relevant(path) for path in paths):
            self._dirty.set()

    def _relevant(self, path: Path) -> bool:
        if path in (self._paths.config_file, self._paths.apps_dir, self._paths.config_dir):
            return True
        return path.parent == self._paths.apps_dir and path.name.lower().endswith(APP_SUFFIXES)

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            while self._dirty.is_set():  # wait for a quiet period
                self._dirty.clear()
                if self._stopping.wait(DEBOUNCE_S):
                    return
            if self._watch_config_dir() and self._on_recreated is not None:
                self._on_recreated()
            self._watch_apps_dir()
            try:
                self._on_change()
            except Exception:
                log.exception("reload_callback_failed")

    def _watch_config_dir(self) -> bool:
        """Watch the config dir, which may have been re-created; True if it was: since it
        was last seen, however long it was gone (the daemon holds the old one open, locked,
        so a new one never gets its inode)."""
        assert self._backend is not None
        inode = _inode(self._paths.config_dir)
        if inode == self._config_inode:
            return False
        self._backend.unwatch(self._paths.config_dir)
        self._config_inode = inode
        if inode is None:
            return False  # gone: it counts as re-created when it is back
        self._backend.watch(self._paths.config_dir)
        recreated = self._config_seen is not None and inode != self._config_seen
        self._config_seen = inode
        return recreated

    def _watch_apps_dir(self) -> None:
        """Watch apps.d/, which may have been created or recreated since we last looked."""
        assert self._backend is not None
        inode = _inode(self._paths.apps_dir)
        if inode == self._apps_inode:
            return
        self._backend.unwatch(self._paths.apps_dir)
        if inode is not None:
            self._backend.watch(self._paths.apps_dir)
        self._apps_inode = inode


def _inode(directory: Path) -> int | None:
    try:
        return directory.stat().st_ino if directory.is_dir() else None
    except OSError:
        return None


# ---------------------------------------------------------------- inotify (Linux)

IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR = 0x4000, 0x8000, 0x1000000
# no IN_MODIFY: a file is read once its writer closes it, and running.journal, appended to
# through an open descriptor at every launch and exit, woke this thread for nothing
IN_MASK = (IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
           | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


class _Inotify:
    """An inotify descriptor over directories, read by one thread that reports the changed
    paths (a queue overflow, or a watched directory going away, reports the directory)."""

    def __init__(self, libc: Any, fd: int, on_paths: Callable[[list[Path]], None]) -> None:
        self._libc = libc
        self._fd = fd
        self._on_paths = on_paths
        self._dirs: dict[int, Path] = {}  # watch descriptor -> directory
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = supervised("inotify", self._loop)

    def watch(self, directory: Path) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), IN_MASK)
        if wd >= 0:
            with self._lock:
                self._dirs[wd] = directory

    def unwatch(self, directory: Path) -> None:
        with self._lock:
            wds = [wd for wd, path in self._dirs.items() if path == directory]
            for wd in wds:
                del self._dirs[wd]
                self._libc.inotify_rm_watch(self._fd, wd)  # fails harmlessly once it is gone

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)

    def _loop(self) -> None:
        while True:
            ready = readable([self._fd, self._wake_r])
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            self._on_paths(self._paths(data))

    def _paths(self, data: bytes) -> list[Path]:
        """The paths the events in ``data`` are about."""
        paths: list[Path] = []
        offset = 0
        with self._lock:  # the watcher thread adds and drops directories meanwhile
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size:offset + _HEADER.size + length].rstrip(b"\0")
                offset += _HEADER.size + length
                directory = self._dirs.get(wd)
                if mask & IN_Q_OVERFLOW:
                    paths.extend(self._dirs.values())  # events were lost: assume all changed
                elif directory is not None:
                    gone = mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)
                    paths.append(directory if gone else directory / os.fsdecode(name))
        return paths


def _inotify_or_none(on_paths: Callable[[list[Path]], None]) -> _Inotify | None:
    """An inotify backend, or None where there is no inotify (not Linux, or no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        log.warning("inotify_unavailable", error=os.strerror(ctypes.get_errno()))
        return None
    return _Inotify(libc, fd, on_paths)


# ------------------------------------------------------------ watchdog (elsewhere)


def _watchdog(on_paths: Callable[[list[Path]], None]) -> _Backend:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer
    from watchdog.observers.api import ObservedWatch

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in _CHANGES:
                paths = [event.src_path, getattr(event, "dest_path", "")]
                on_paths([Path(os.fsdecode(p)) for p in paths if p])

    class WatchdogBackend:
        def __init__(self) -> None:
            self._observer = Observer()
            self._handler = Handler()
            self._watches: dict[Path, ObservedWatch] = {}

        def start(self) -> None:
            self._observer.start()

        def watch(self, directory: Path) -> None:
            self._watches[directory] = self._observer.schedule(
                self._handler, str(directory), recursive=False)

        def unwatch(self, directory: Path) -> None:
            watch = self._watches.pop(directory, None)
            if watch is not None:
                with contextlib.suppress(KeyError):
                    self._observer.unschedule(watch)

        def stop(self) -> None:
            self._observer.stop()
            self._observer.join(timeout=2)

    return WatchdogBackend()
