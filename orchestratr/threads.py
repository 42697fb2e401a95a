"""No thread dies silently: every long-lived thread runs under ``supervised``.

An unexpected exception is logged as an error with its traceback, the part is marked degraded
(``GET /health`` lists it) and the thread is started again after a backoff. A part that keeps
failing (MAX_RESTARTS within RESTART_WINDOW_S) cannot be trusted to tell the truth any more:
the fatal handler then stops the daemon with a non-zero status and a one-line reason, rather
than let it serve answers that no thread keeps up to date.

Standard library and structlog only: every room (the core's lease clock too) may use it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import structlog

log = structlog.get_logger("orchestratr.threads")

MAX_RESTARTS = 5  # restarts within the window before the part is given up on
RESTART_WINDOW_S = 60.0
FIRST_BACKOFF_S = 0.05  # doubled per crash in the window, up to MAX_BACKOFF_S
MAX_BACKOFF_S = 2.0
DEGRADED_FOR_S = 300.0  # a part that crashed this recently is still reported


@attrs.define
class Part:
    """What ``GET /health`` says about one supervised part."""

    name: str
    crashes: list[float] = attrs.field(factory=list)  # monotonic times, within the window
    last_error: str | None = None
    down: bool = False  # given up on

    def view(self) -> dict[str, Any]:
        return {"part": self.name, "restarts": len(self.crashes), "error": self.last_error,
                "down": self.down}


_lock = threading.Lock()
_parts: dict[str, Part] = {}


def _default_fatal(message: str) -> None:
    print(f"orchestratr: {message}", file=sys.stderr, flush=True)


_fatal: list[Callable[[str], None]] = [_default_fatal]


def on_fatal(handler: Callable[[str], None]) -> None:
    """Who ends the daemon when a part cannot be kept running (the daemon sets it)."""
    _fatal[0] = handler


def supervised(name: str, target: Callable[[], None]) -> threading.Thread:
    """Start ``target`` in a thread named ``name`` that is restarted when it raises."""
    thread = threading.Thread(target=_guard, args=(name, target), name=name, daemon=True)
    thread.start()
    return thread


def _guard(name: str, target: Callable[[], None]) -> None:
    while True:
        try:
            target()
            return
        except Exception as exc:  # noqa: BLE001 - the point: nothing escapes unlogged
            backoff = _crashed(name, exc)
        if backoff is None:
            return
        time.sleep(backoff)
        log.warning("thread_restarted", thread=name)


def _crashed(name: str, exc: BaseException) -> float | None:
    """Log and count a crash; the backoff before the restart, or None if it is given up."""
    now = time.monotonic()
    with _lock:
        part = _parts.setdefault(name, Part(name))
        part.crashes = [t for t in part.crashes if now - t < RESTART_WINDOW_S] + [now]
        part.last_error = f"{type(exc).__name__}: {exc}"[:300]
        count = len(part.crashes)
        part.down = count > MAX_RESTARTS
    log.error("thread_crashed", thread=name, error=part.last_error, crashes=count,
              exc_info=exc)
    if part.down:
        _fatal[0](f"internal thread {name!r} failed {count} times within "
                  f"{RESTART_WINDOW_S:g} s (last: {part.last_error}); stopping rather than "
                  "serving stale answers")
        return None
    return min(FIRST_BACKOFF_S * 2 ** (count - 1), MAX_BACKOFF_S)


def degraded() -> list[dict[str, Any]]:
    """The parts that crashed recently or are down, for ``GET /health``."""
    now = time.monotonic()
    with _lock:
        return [part.view() for part in _parts.values()
                if part.down or (part.crashes and now - part.crashes[-1] < DEGRADED_FOR_S)]


def reset() -> None:
    """Forget every part's history (a new daemon in the same process: tests)."""
    with _lock:
        _parts.clear()
