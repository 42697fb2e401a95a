"""The one place logging is configured.

structlog events go through the stdlib so third-party loggers (transitions, watchdog) land in
the same place: JSON lines in a rotated file, and readable, coloured lines on stderr when it
is a terminal (under systemd or a redirect, the file already holds every line). Records are
formatted and written on one writer thread, so a log call made while an app's lock is held
costs a queue put, never a disk write; the writer takes them a batch at a time (see
``_Writer``). Tracebacks are rendered to text before that hand-off: on the writer
thread no exception is active, so ``exc_info=True`` would show none.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import structlog

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
BATCH_S = 0.005  # how long the writer, woken by a record, waits for the rest of its burst

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    # in the calling thread for structlog events (sys.exc_info() is still the caught exception
    # there); stdlib records carry their exc_info tuple, rendered by the same step on the listener
    structlog.processors.format_exc_info,
]


class _RecordQueueHandler(logging.handlers.QueueHandler):
    """Hands the record over untouched: ProcessorFormatter needs the event dict, not a string."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _Batched:
    """A handler whose stream the writer flushes once per batch, not once per record."""

    stream: Any
    lock: Any

    def flush(self) -> None:
        """Nothing per record: see ``flush_batch``."""

    def flush_batch(self) -> None:
        with self.lock:
            if self.stream is not None:
                self.stream.flush()


class _Console(_Batched, logging.StreamHandler):
    pass


class _RotatingFile(_Batched, logging.handlers.RotatingFileHandler):
    """The rotated JSON log, minus RotatingFileHandler's per-record cost: to decide on a
    rollover it formatted every record a second time and stat'ed the file twice. Here the size
    is counted as lines are written (the lines are ASCII JSON: characters are bytes)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                         encoding="utf-8")
        self._size = path.stat().st_size

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            if self._size + len(line) > self.maxBytes:
                self.doRollover()
                self._size = 0
            if self.stream is None:  # closed at shutdown, and a thread still logs
                self.stream = self._open()
            self.stream.write(line)
            self._size += len(line)
        except Exception:  # noqa: BLE001 - the logging module's contract: handleError reports it
            self.handleError(record)


class _Writer:
    """The thread that formats and writes every record.

    The stdlib's QueueListener wakes once per record; at a few thousand requests a second, each
    with its log line, those wake-ups (and the GIL hand-overs they force on the serving threads)
    cost more than the formatting itself. This writer sleeps until a record comes, waits
    BATCH_S for the rest of the burst, then writes them all with one flush per handler: a
    line reaches the file at most BATCH_S late, and an idle daemon still never wakes.
    """

    _STOP = object()

    def __init__(self, records: queue.SimpleQueue[Any], handlers: list[logging.Handler]) -> None:
        self._records = records
        self._handlers = handlers
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._records.put(self._STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._records.get()]
            time.sleep(BATCH_S)
            while not self._records.empty():
                batch.append(self._records.get())
            for record in batch:
                if record is not self._STOP:
                    for handler in self._handlers:
                        handler.handle(record)
            for handler in self._handlers:
                handler.flush_batch()  # type: ignore[attr-defined]
            if self._STOP in batch:
                return


def configure_logging(
    level: str = "info", log_file: Path | None = None, stream: TextIO | None = None
) -> Callable[[], None]:
    """Route every log through structlog's processors; return a function that flushes and stops.
    Readable lines go to ``stream`` if given, else to stderr when it is a terminal."""
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _RotatingFile(log_file)
        file_handler.setFormatter(_formatter(structlog.processors.JSONRenderer()))
        handlers.append(file_handler)
    if stream is None and _is_terminal(sys.stderr):
        stream = sys.stderr
    if stream is not None:
        console = _Console(stream)
        console.setFormatter(_formatter(structlog.dev.ConsoleRenderer(
            colors=_is_terminal(stream))))
        handlers.append(console)

    _skip_unused_record_fields()
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = _Writer(records, handlers)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(_RecordQueueHandler(records))
    set_level(level)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    writer.start()

    def stop() -> None:
        writer.stop()
        for handler in handlers:
            handler.close()

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
    """Apply ``log_level`` (also on reload)."""
    logging.getLogger().setLevel(level.upper())


def _formatter(renderer: structlog.typing.Processor) -> logging.Formatter:
    return _Render(renderer)


class _Render(logging.Formatter):
    """ProcessorFormatter's output at half its cost for structlog's own records.

    For those, ProcessorFormatter copies the whole LogRecord and runs the stdlib's formatting
    around a renderer that already produced the line; at one ``http_request`` line a request,
    rendered twice (file and console), that was a fifth of a request's CPU under load. Here a
    structlog record's event dict goes straight to the renderer; anything else (third-party
    loggers) still goes through ProcessorFormatter and ``_SHARED``.
    """

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        super().__init__()
        self._renderer = renderer
        self._foreign = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )

    def format(self, record: logging.LogRecord) -> str:
        method = getattr(record, "_name", None)
        if method is None or not isinstance(record.msg, dict):
            return self._foreign.format(record)
        line = self._renderer(getattr(record, "_logger", None), method, dict(record.msg))
        return line if isinstance(line, str) else str(line)
