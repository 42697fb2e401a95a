"""Hot reload: notice edits to config.yml and apps.d/*.yml and call back once they settle.

The directories are watched, not the files, so editors that save by writing a temporary file
and renaming it over the original are seen (the Go orchestratr missed those). Bursts of events
are folded into one callback after a 100 ms quiet period.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from orchestratr.paths import Paths
from orchestratr.registry.load import APP_SUFFIXES

log = structlog.get_logger("orchestratr.registry")

DEBOUNCE_S = 0.1
_CHANGES = {"created", "modified", "deleted", "moved", "closed"}


class ConfigWatcher(FileSystemEventHandler):
    def __init__(self, paths: Paths, on_change: Callable[[], None]) -> None:
        self._paths = paths
        self._on_change = on_change
        self._observer = Observer()
        self._apps_watch: ObservedWatch | None = None
        self._apps_inode: int | None = None
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-watcher", daemon=True)

    def start(self) -> None:
        self._observer.schedule(self, str(self._paths.config_dir), recursive=False)
        self._watch_apps_dir()
        self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        self._observer.stop()
        self._observer.join(timeout=2)
        self._thread.join(timeout=2)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(self._relevant(Path(str(p))) for p in paths if p):
            self._dirty.set()

    def _relevant(self, path: Path) -> bool:
        if path in (self._paths.config_file, self._paths.apps_dir):
            return True
        return path.parent == self._paths.apps_dir and path.name.lower().endswith(APP_SUFFIXES)

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            while self._dirty.is_set():  # wait for a quiet period
                self._dirty.clear()
                if self._stopping.wait(DEBOUNCE_S):
                    return
            self._watch_apps_dir()
            try:
                self._on_change()
            except Exception:
                log.exception("reload_callback_failed")

    def _watch_apps_dir(self) -> None:
        """Watch apps.d/, which may have been created or recreated since we last looked."""
        try:
            inode = self._paths.apps_dir.stat().st_ino if self._paths.apps_dir.is_dir() else None
        except OSError:
            inode = None
        if inode == self._apps_inode:
            return
        if self._apps_watch is not None:
            with contextlib.suppress(KeyError):
                self._observer.unschedule(self._apps_watch)
            self._apps_watch = None
        if inode is not None:
            self._apps_watch = self._observer.schedule(
                self, str(self._paths.apps_dir), recursive=False
            )
        self._apps_inode = inode
