"""The one place logging is configured.

Every line lands in the same place: JSON lines in a rotated file, and readable, coloured lines
on stderr when it is a terminal (under systemd or a redirect, the file already holds every
line). structlog's events go from its processors straight to the writer, as event dicts (the
stdlib's Logger, LogRecord and handler machinery took half of a line's cost, paid on an exit's
path); third-party loggers (transitions, watchdog) come through a stdlib handler to the same
writer, rendered with the same processors (``_SHARED``). A record is
written by the thread that logs it when no other is writing (a page-cache append: an exit's
line used to wait a third of a millisecond for the writer thread to be scheduled), and
otherwise queued for the writer thread, which takes them a batch at a time (see ``_Writer``).
Either way records reach the file in the order they were logged. The queue is bounded and a
write error drops records (counted, and reported once writing works again): a full disk
neither kills logging nor grows memory.
Tracebacks are rendered to text before the hand-off: on the writer thread no exception is
active, so ``exc_info=True`` would show none.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import structlog

from orchestratr import applog
from orchestratr.threads import supervised

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    # in the calling thread for structlog events (sys.exc_info() is still the caught exception
    # there); stdlib records carry their exc_info tuple, rendered by the same step on the listener
    structlog.processors.format_exc_info,
]


MAX_QUEUED = 10_000  # records waiting for the writer; more are dropped (and counted)


class _Records:
    """The queue between logging callers and the writer, bounded: when the writer cannot
    keep up (or cannot write at all), records are dropped and counted, and memory stays put."""

    def __init__(self, limit: int = MAX_QUEUED) -> None:
        self._limit = limit
        self._items: deque[Any] = deque()
        # re-entrant: a signal handler that logs runs on whatever thread it interrupted, maybe
        # one inside ``put`` already (a plain lock deadlocked SIGTERM during a busy start-up)
        self._ready = threading.Condition(threading.RLock())
        self.dropped = 0

    def put(self, item: Any) -> None:
        """Queue ``item``, for whoever writes next (``wake`` calls the writer thread)."""
        with self._ready:
            if len(self._items) >= self._limit:
                self.dropped += 1
                return
            self._items.append(item)

    def wake(self) -> None:
        with self._ready:
            self._ready.notify()

    def wait(self, until: Callable[[], bool]) -> None:
        """Until a record is queued, or ``until()`` (checked at each ``wake``)."""
        with self._ready:
            while not self._items and not until():
                self._ready.wait()

    def take_all(self) -> list[Any]:
        """Every queued record (none, if another writer took them first)."""
        with self._ready:
            items = list(self._items)
            self._items.clear()
            return items

    def take_dropped(self) -> int:
        with self._ready:
            count, self.dropped = self.dropped, 0
            return count


Item = dict[str, Any] | logging.LogRecord  # structlog's event dict, or a third party's record


class _RecordQueueHandler(logging.Handler):
    """Hands a third-party record over untouched, to be rendered as structlog's events are."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.submit(record)


class _Sink:
    """Where formatted lines go, a batch at a time, never raising: a line that cannot be
    written is dropped and counted, and once writing works again one warning says how many
    were lost (a full disk once killed the writer, and memory grew without end)."""

    def __init__(self, render: _Render) -> None:
        self.render = render
        self.lines: list[str] = []
        self.dropped = 0

    def add(self, item: Item) -> None:
        try:
            self.lines.append(self.render(item) + "\n")
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is dropped
            self.dropped += 1

    def commit(self) -> None:
        lines, self.lines = self.lines, []
        if not lines:
            return
        if self.dropped:
            lines.insert(0, self.render(_dropped_record(self.dropped)) + "\n")
        try:
            self.write(lines)
        except OSError:
            self.dropped += len(lines) - (1 if self.dropped else 0)
            return
        self.dropped = 0

    def write(self, lines: list[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release."""


def _dropped_record(count: int) -> dict[str, Any]:
    """The one warning, as structlog's processors would have made it."""
    return {"event": "log_records_dropped", "dropped": count, "level": "warning",
            "logger": "orchestratr.logs",
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
            "hint": "the log could not be written (a full disk?); logging resumed"}


class _Console(_Sink):
    """stderr, written by a thread of its own through a bounded buffer: a console nobody
    reads (a pipe left full) drops console lines, and never holds up the log file."""

    MAX_PENDING = 1024 * 1024  # characters waiting for the console

    def __init__(self, render: _Render, stream: TextIO) -> None:
        super().__init__(render)
        self._stream = stream
        self._pending: deque[str] = deque()
        self._size = 0
        self._ready = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def write(self, lines: list[str]) -> None:
        text = "".join(lines)
        with self._ready:
            if self._size + len(text) > self.MAX_PENDING:
                return  # the console is stuck: its lines are lost, the file's are not
            self._pending.append(text)
            self._size += len(text)
            self._ready.notify()
            if self._thread is None:
                self._thread = supervised("log-console", self._run)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if not self._pending:
                    return
                text = "".join(self._pending)
                self._pending.clear()
                self._size = 0
            with contextlib.suppress(OSError, ValueError):
                self._stream.write(text)
                self._stream.flush()

    def close(self) -> None:
        """Write what is pending (for at most a second), then end the thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=1)


class _RotatingFile(_Sink):
    """The rotated JSON log. The size is counted as lines are written (the lines are ASCII
    JSON: characters are bytes), so a rollover costs no second formatting and no stat."""

    def __init__(self, render: _Render, path: Path) -> None:
        super().__init__(render)
        self._path = path
        self._fd: int | None = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, lines: list[str]) -> None:
        """One write per run of lines that fits before the size limit."""
        if self._fd is None:
            self._fd = self._open()
            self._size = os.fstat(self._fd).st_size
        chunk: list[bytes] = []
        size = self._size
        for line in lines:
            data = line.encode("utf-8", "replace")
            if size and size + len(data) > LOG_MAX_BYTES:
                self._write(b"".join(chunk))
                self._rollover()
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        if not data:
            return
        assert self._fd is not None
        try:
            written = os.write(self._fd, data)
            if written < len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            with contextlib.suppress(OSError):  # the disk filled mid-batch: no torn line
                os.ftruncate(self._fd, self._size)
            raise
        self._size += written

    def _rollover(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        applog.rotate(self._path, LOG_BACKUPS)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Writer:
    """Formats and writes every record, a batch at a time, in the order they were queued.

    Whoever holds ``_turn`` writes: the thread that logs a record, when nobody else is
    writing, or else the writer thread, woken for it. Each takes every record queued and
    writes each sink's lines in one write, so bursts share writes without any added wait, and
    an idle daemon never wakes. Records are taken only with ``_turn`` held: two batches are
    never written at once, nor out of order.
    """

    def __init__(self, records: _Records, sinks: list[_Sink]) -> None:
        self._records = records
        self._sinks = sinks
        self._turn = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = supervised("log-writer", self._run)

    def submit(self, item: Item) -> None:
        self._records.put(item)
        # not blocking: a signal handler may log on a thread that is writing already
        if self._stopping or not self._turn.acquire(blocking=False):
            self._records.wake()  # whoever writes now may have taken the queue already
            return
        try:
            self._write(self._records.take_all())
        finally:
            self._turn.release()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._stopping = True
        self._records.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._records.wait(lambda: self._stopping)
            with self._turn:
                self._write(self._records.take_all())
                if self._stopping:
                    return

    def _write(self, batch: list[Item]) -> None:
        dropped = self._records.take_dropped()
        for sink in self._sinks:
            sink.dropped += dropped
            for item in batch:
                sink.add(item)
            sink.commit()


def configure_logging(
    level: str = "info", log_file: Path | None = None, stream: TextIO | None = None
) -> Callable[[], None]:
    """Route every log through structlog's processors; return a function that flushes and stops.
    Readable lines go to ``stream`` if given, else to stderr when it is a terminal.

    Raises:
        OSError: the log file's directory cannot be made.
    """
    sinks: list[_Sink] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        sinks.append(_RotatingFile(_Render(structlog.processors.JSONRenderer()), log_file))
    if stream is None and _is_terminal(sys.stderr):
        stream = sys.stderr
    if stream is not None:
        renderer = structlog.dev.ConsoleRenderer(colors=_is_terminal(stream))
        sinks.append(_Console(_Render(renderer), stream))

    _skip_unused_record_fields()
    writer = _Writer(_Records(), sinks)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(_RecordQueueHandler(writer))
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)

    global _writer
    _writer = writer
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            _hand_over,
        ],
        logger_factory=_Logger,
        cache_logger_on_first_use=False,  # so ``set_level`` and tests' capture_logs apply
    )
    set_level(level)
    writer.start()

    def stop() -> None:
        writer.stop()
        for sink in sinks:
            sink.close()

    return stop


def _is_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _skip_unused_record_fields() -> None:
    """Stop the stdlib from finding each call's source line, thread and process names: no
    renderer here shows them, and they were a third of a log call's cost (one per request).
    These are the switches the logging HOWTO's "Optimization" section names."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def set_level(level: str) -> None:
    """Apply ``log_level`` (also on reload): structlog's calls below it do nothing at all."""
    number = logging.getLevelName(level.upper())
    logging.getLogger().setLevel(number)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(number))


_writer: _Writer | None = None  # where structlog's events go, once logging is configured


class _Logger:
    """What structlog's bound loggers call with each processed event: hand it to the writer.
    ``name`` is the name given to ``structlog.get_logger`` (``add_logger_name`` reads it)."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, event_dict: dict[str, Any]) -> None:
        if _writer is not None:
            _writer.submit(event_dict)

    debug = info = warning = error = critical = msg  # the names of structlog's levels


def _hand_over(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The last processor: the event dict itself goes to ``_Logger``, rendered per sink."""
    return (event_dict,), {}


class _Render:
    """A sink's renderer: structlog's event dicts go straight to it; third-party records go
    through ProcessorFormatter with the same processors (``_SHARED``) first."""

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer
        self._foreign = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )

    def __call__(self, item: Item) -> str:
        if isinstance(item, logging.LogRecord):
            return self._foreign.format(item)
        line = self._renderer(None, str(item.get("level", "")), dict(item))
        return line if isinstance(line, str) else str(line)
