"""The one place logging is configured.

structlog events go through the stdlib so third-party loggers (transitions, watchdog) land in
the same place: JSON lines in a rotated file, and readable lines on stderr (coloured on a
terminal). Handlers run on a QueueListener thread, so a log call made while an app's lock is
held costs a queue put, never a disk write. Tracebacks are rendered to text before that
hand-off: on the listener thread no exception is active, so ``exc_info=True`` would show none.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from collections.abc import Callable
from pathlib import Path

import structlog

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


class _RecordQueueHandler(logging.handlers.QueueHandler):
    """Hands the record over untouched: ProcessorFormatter needs the event dict, not a string."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure_logging(
    level: str = "info", log_file: Path | None = None, stream: object = None
) -> Callable[[], None]:
    """Route every log through structlog's processors; return a function that flushes and stops."""
    stream = stream or sys.stderr
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
        file_handler.setFormatter(_formatter(structlog.processors.JSONRenderer()))
        handlers.append(file_handler)
    console = logging.StreamHandler(stream)  # type: ignore[arg-type]
    colors = bool(getattr(stream, "isatty", lambda: False)())
    console.setFormatter(_formatter(structlog.dev.ConsoleRenderer(colors=colors)))
    handlers.append(console)

    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=False)
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
    listener.start()

    def stop() -> None:
        listener.stop()
        for handler in handlers:
            handler.close()

    return stop


def set_level(level: str) -> None:
    """Apply ``log_level`` (also on reload)."""
    logging.getLogger().setLevel(level.upper())


def _formatter(renderer: structlog.typing.Processor) -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
