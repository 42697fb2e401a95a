"""Each app's output file: its limits, its rotation, and reading it from the end or live.

An app's stdout and stderr are written to ``<log dir>/apps/<name>.log`` (``Paths.app_log``),
with a header line at each launch. When a write would take the file past ``LOG_MAX_BYTES`` it
is rotated at a line boundary, also while the app runs (``processes/output.py`` writes it), and
``LOG_BACKUPS`` older files are kept (``<name>.log.1`` the newest). Readers read from the end,
so a long file costs what the answer needs, never the whole file.

Standard library only: the API, the process side and the command line all read these rules.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
DEFAULT_LINES = 100
MAX_LINES = 10_000
BLOCK = 64 * 1024  # read backwards this much at a time
READ_LIMIT = 8 * 1024 * 1024  # and never more than this of one file (a file with no newlines)
MAX_LINE_BYTES = 64 * 1024  # a line longer than this is cut when read
HEADER_PREFIX = "--- orchestratr: "
STAMP = "%Y-%m-%dT%H:%M:%S%z"
_HEADER = re.compile(r"^--- orchestratr: (\S+) launching (.*)$")


def header(command: str, at: float | None = None) -> bytes:
    """The line that starts each run's output in the file."""
    stamp = time.strftime(STAMP, time.localtime(at))
    return f"{HEADER_PREFIX}{stamp} launching {command!r}\n".encode()


@dataclass(frozen=True)
class Launch:
    """A run's header, read back: the command as launched and when."""

    command: str
    at: float | None


def parse_header(line: str) -> Launch | None:
    """The run ``line`` starts, if it is a run's header."""
    match = _HEADER.match(line)
    if match is None:
        return None
    try:
        at: float | None = datetime.strptime(match.group(1), STAMP).timestamp()
    except ValueError:
        at = None
    return Launch(_unquoted(match.group(2)), at)


def _unquoted(written: str) -> str:
    """The command ``header`` quoted, as it was; a header written otherwise, as it stands."""
    try:
        command = ast.literal_eval(written)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return written
    return command if isinstance(command, str) else written


def rotated(path: Path, index: int) -> Path:
    """``<name>.log.<index>``: 1 is the newest of the older files."""
    return path.with_name(f"{path.name}.{index}")


def rotate(path: Path, backups: int = LOG_BACKUPS) -> None:
    """Shift ``.1 .. .N-1`` up by one (the oldest falls off) and make ``path`` the new ``.1``
    (``backups``: N; the daemon's own log keeps more than an app's)."""
    for index in range(backups - 1, 0, -1):
        older = rotated(path, index)
        if older.exists():
            older.replace(rotated(path, index + 1))
    with contextlib.suppress(FileNotFoundError):
        path.replace(rotated(path, 1))


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text[:MAX_LINE_BYTES]


def last_lines(path: Path, count: int, end: int | None = None) -> list[str]:
    """The last ``count`` lines of one file (of its first ``end`` bytes, if given), read
    backwards a block at a time and at most READ_LIMIT bytes back; a last line still being
    written (no newline yet) counts as a line. No file: no lines."""
    if count <= 0:
        return []
    try:  # plain descriptor calls: an exit's error quotes this on the exit's path
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return []
    try:
        size = os.fstat(fd).st_size
        end = size if end is None else min(end, size)
        position, chunks, newlines = end, [], 0
        while position > 0 and newlines <= count and end - position < READ_LIMIT:
            step = min(BLOCK, position)
            position -= step
            chunk = os.pread(fd, step, position)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    finally:
        os.close(fd)
    lines = b"".join(reversed(chunks)).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline: no partial last line
    # past ``count`` newlines, the first piece is a fragment of a longer line: it is left out
    return [_decode(line) for line in lines[-count:]]


def tail(path: Path, count: int, end: int | None = None) -> list[str]:
    """The last ``count`` lines of an app's output (up to byte ``end`` of the current file):
    its current file, and, when that holds fewer, the end of the previous (rotated) one."""
    lines = last_lines(path, count, end)
    if len(lines) < count:
        lines = last_lines(rotated(path, 1), count - len(lines)) + lines
    return lines


QUOTE_LOOKBACK = 3  # lines looked at for one worth quoting
RECENT_BYTES = 1024  # of an app's output its writer keeps in memory, for ``last_line``


def last_line(path: Path, recent: Recent | None = None) -> str:
    """The app's last line of output, to quote in its error (a header is no output), from
    ``recent`` when it can tell (no file read on the exit's path), else from the file."""
    if recent is not None:
        quoted = _quote(recent.lines(), trust_first=recent.whole)
        if quoted is not None:
            return quoted
    return _quote(last_lines(path, QUOTE_LOOKBACK), trust_first=True) or ""


@dataclass
class Recent:
    """The last bytes written to an app's file, as its writer keeps them. ``whole``: they
    start with the run's header (nothing written since was cut off), so their first line is
    whole; otherwise it may be the end of a longer one."""

    data: bytes = b""
    whole: bool = False

    def add(self, data: bytes) -> None:
        if data.startswith(HEADER_PREFIX.encode()):
            self.data, self.whole = b"", True
        joined = self.data + data[-RECENT_BYTES:]
        if len(joined) > RECENT_BYTES:
            joined, self.whole = joined[-RECENT_BYTES:], False
        self.data = joined

    def lines(self) -> list[str]:
        lines = self.data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the last line is ended
        return [_decode(line) for line in lines]


def _quote(lines: list[str], trust_first: bool) -> str | None:
    """The line worth quoting among the last ``lines`` of a file: the last with text, "" if a
    header comes first, None if only the first could tell and it may be cut."""
    for index in range(len(lines) - 1, max(len(lines) - QUOTE_LOOKBACK, 0) - 1, -1):
        if index == 0 and not trust_first:
            return None
        text = lines[index].strip()
        if text.startswith(HEADER_PREFIX.strip()):
            return ""
        if text:
            return text[:300]
    return "" if trust_first or lines else None


class AppLogs:
    """Where each app's output is, and who waits for more of it.

    The writer (``processes/output.py``) calls ``written`` after each write; followers wait for
    that instead of polling, with ``FALLBACK_S`` as a bound for writes from elsewhere (a drain
    process left by an earlier daemon).
    """

    FALLBACK_S = 0.5

    def __init__(self, path_of: Callable[[str], Path]) -> None:
        self._path_of = path_of
        self._changed = threading.Condition()
        self._version = 0

    def path(self, name: str) -> Path:
        return self._path_of(name)

    def tail(self, name: str, count: int) -> list[str]:
        return tail(self.path(name), count)

    def written(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def version(self) -> int:
        return self._version

    def wait(self, version: int, timeout: float) -> None:
        """Block until something was written after ``version``, or ``timeout`` (at most
        FALLBACK_S) is over."""
        with self._changed:
            if self._version == version:
                self._changed.wait(min(timeout, self.FALLBACK_S))


@dataclass(frozen=True)
class Line:
    text: str
    launch: Launch | None  # when the line is a run's header


class Follower:
    """The lines added to an app's file from a point on, across its rotations: a rotated file
    is read to its end (it is final by then) before the new one is opened, so no line is
    skipped; each read returns at most READ_SIZE bytes' worth, so a flood is sent in pieces."""

    READ_SIZE = 64 * 1024

    def __init__(self, path: Path, backlog: int) -> None:
        self._path = path
        self._partial = b""
        self._handle: BinaryIO | None = None
        self._inode: int | None = None
        self._rotated = False  # the open file has been rotated away: finish it, then switch
        start = self._open(at_end=True)
        self._backlog = tail(path, backlog, end=start) if backlog else []

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def backlog(self) -> list[Line]:
        return [_line(text) for text in self._backlog]

    def read(self) -> list[Line] | None:
        """The complete lines in the next piece written; None when nothing new is there yet
        (the caller waits), [] when there may be more at once."""
        data = self._handle.read(self.READ_SIZE) if self._handle is not None else b""
        if data:
            *complete, self._partial = (self._partial + data).split(b"\n")
            if len(self._partial) > MAX_LINE_BYTES:  # a line without end: sent in pieces
                complete.append(self._partial)
                self._partial = b""
            return [_line(_decode(raw)) for raw in complete]
        if not self._rotated:
            self._rotated = self._replaced()
            return [] if self._rotated else None
        self._rotated = False
        lines = [_line(_decode(self._partial))] if self._partial else []
        self._partial = b""
        self._open_next()
        return lines

    def _open(self, at_end: bool, path: Path | None = None) -> int:
        """Open the file (or ``path``: a rotated one) at its end or its start; return where
        reading starts."""
        try:
            self._handle = (path or self._path).open("rb")
        except (FileNotFoundError, NotADirectoryError):
            self._handle, self._inode = None, None
            return 0
        stat = os.fstat(self._handle.fileno())
        self._inode = stat.st_ino
        if at_end:
            self._handle.seek(stat.st_size)
            return stat.st_size
        return 0

    def _open_next(self) -> None:
        """Open the file written after the one just finished: the one rotated after it, or
        the current file (a reader that fell behind by several rotations reads each of them).
        A rotation during the move would make that choice wrong, so it is checked after."""
        finished = self._inode
        self.close()
        for _ in range(LOG_BACKUPS + 2):
            place = None if finished is None else self._place_of(finished)
            self._open(at_end=False, path=self._after(finished, place))
            if finished is None or self._place_of(finished) == place:
                return
            self.close()
        self._open(at_end=False)

    def _after(self, finished: int | None, place: int | None) -> Path:
        """The file after the one that is now rotated file ``place`` (None: gone)."""
        if place is not None:
            return rotated(self._path, place - 1) if place > 1 else self._path
        if finished is None:  # there was no file: it has been created
            return self._path
        kept = [i for i in range(1, LOG_BACKUPS + 1) if rotated(self._path, i).exists()]
        return rotated(self._path, max(kept)) if kept else self._path  # it fell off the end

    def _place_of(self, inode: int) -> int | None:
        """Which rotated file (1 the newest) is ``inode`` now; None if none is."""
        for index in range(1, LOG_BACKUPS + 1):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                if rotated(self._path, index).stat().st_ino == inode:
                    return index
        return None

    def _replaced(self) -> bool:
        """The file was rotated away (or created) since it was opened; a truncated one is
        read again from its start."""
        try:
            stat = self._path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        if self._handle is None or stat.st_ino != self._inode:
            return True
        if stat.st_size < self._handle.tell():
            self._handle.seek(0)
        return False


def _line(text: str) -> Line:
    return Line(text, parse_header(text))


def follow(
    follower: Follower, logs: AppLogs, closed: Callable[[], bool], idle_s: float
) -> Iterator[list[Line]]:
    """Batches of new lines as they are written; an empty batch after ``idle_s`` without one
    (the caller sends a keep-alive), until ``closed()``."""
    quiet_since = time.monotonic()
    while not closed():
        version = logs.version()  # before reading: a write after the read ends the wait
        lines = follower.read()
        if lines:
            quiet_since = time.monotonic()
            yield lines
        elif lines is None:
            if time.monotonic() - quiet_since >= idle_s:
                quiet_since = time.monotonic()
                yield []
            logs.wait(version, max(0.0, idle_s - (time.monotonic() - quiet_since)))
