"""One daemon per config dir, by the directory itself: an flock on the config dir.

The kernel drops an flock when its holder dies, however it dies, so a lock left by a killed
daemon never blocks the next start. The lock is on the directory, not on a file in it, so
deleting ``orchestratr.pid`` (which still names the holder, for people and the Go
orchestratr's tools) admits no second daemon. A config dir deleted and re-created is a new
directory: the daemon takes the lock on it again (``relock``), or learns that another daemon
was quicker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from orchestratr.errors import DaemonRunningError
from orchestratr.paths import write_atomically


class DaemonLock:
    def __init__(self, directory: Path, pid_file: Path) -> None:
        self.directory = directory
        self.pid_file = pid_file
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the directory and write our pid.

        Raises:
            DaemonRunningError: naming the holder.
            OSError: the directory cannot be opened.
        """
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonRunningError(_read_pid(self.pid_file), str(self.directory)) from None
        self._fd = fd
        self.write_pid()

    def relock(self) -> bool:
        """After the directory was re-created: lock the new one. False if another daemon
        holds it (this one must then stop)."""
        if self._fd is not None and _same_dir(self._fd, self.directory):
            return True
        old, self._fd = self._fd, None
        try:
            self.acquire()
        except (DaemonRunningError, OSError):
            self._fd = old
            return False
        if old is not None:
            os.close(old)
        return True

    def write_pid(self) -> None:
        with contextlib.suppress(OSError):  # a read-only dir: the lock still holds
            write_atomically(self.pid_file, str(os.getpid()), mode=0o644)

    def release(self) -> None:
        if self._fd is None:
            return
        if _read_pid(self.pid_file) == os.getpid():
            with contextlib.suppress(OSError):
                self.pid_file.unlink()
        os.close(self._fd)
        self._fd = None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _same_dir(fd: int, path: Path) -> bool:
    try:
        held, now = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
