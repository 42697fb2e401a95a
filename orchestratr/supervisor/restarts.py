"""The restart policy: whether an app that exited starts again, after what delay, or whether it
is crash-looping. Pure (times are passed in, nothing reads a clock) but for ``thread_timer``,
the daemon's way of running a restart later.

The numbers are systemd's and supervisord's: the delay doubles per consecutive crash from the
app's ``restart_delay_ms`` up to MAX_BACKOFF_S, the count resets once the app stayed up
STABLE_AFTER_S, and a start that would be the (CRASH_BURST + 1)th within CRASH_WINDOW_S is
refused (systemd's StartLimitBurst / StartLimitIntervalSec).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING

import attrs
import structlog

from orchestratr.registry.model import AppSpec, RestartPolicy

STABLE_AFTER_S = 10.0  # an app up this long has its restart backoff reset
CRASH_WINDOW_S = 10.0  # systemd's StartLimitIntervalSec ...
CRASH_BURST = 5  # ... and StartLimitBurst
MAX_BACKOFF_S = 30.0
STARTS_KEPT = 16  # the crash-loop check looks at the last few starts only
IMMEDIATE_WORKERS = 16  # threads kept for restarts due at once (a crash storm queues on them)

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

log = structlog.get_logger("orchestratr.supervisor")

Cancel = Callable[[], object]
Schedule = Callable[[float, Callable[[], None]], Cancel]


@attrs.frozen
class Record:
    """An app's recent starts (monotonic times) and its consecutive unexpected exits."""

    starts: tuple[float, ...] = ()
    crashes: int = 0

    def started(self, at: float) -> Record:
        return attrs.evolve(self, starts=(*self.starts[1 - STARTS_KEPT:], at))


@attrs.frozen
class Restart:
    """Launch the app again after ``delay_s``; ``record`` counts this crash."""

    delay_s: float
    attempt: int
    record: Record


@attrs.frozen
class CrashLoop:
    """Too many starts too fast: the app fails and waits for a person."""

    error: str


def wants_restart(policy: RestartPolicy, clean: bool) -> bool:
    """Whether an exit (``clean``: status 0 or unknown) calls for a start under ``policy``."""
    return policy is RestartPolicy.always or (policy is RestartPolicy.on_failure and not clean)


def after_exit(
    spec: AppSpec, record: Record, *, clean: bool, uptime_s: float, now: float,
    last_error: str | None,
) -> Restart | CrashLoop | None:
    """What follows an app's own exit (not a requested stop): None for nothing."""
    if not wants_restart(spec.restart, clean):
        return None
    crashes = 0 if uptime_s >= STABLE_AFTER_S else record.crashes
    recent = sum(1 for t in record.starts if now - t < CRASH_WINDOW_S)
    if recent >= CRASH_BURST:
        why = f"crash loop: started {recent} times within {CRASH_WINDOW_S:g} s"
        return CrashLoop(f"{why}; not restarting until launched again "
                         f"(last: {last_error or 'exited'})")
    delay_s = min(spec.restart_delay_ms / 1000 * 2**crashes, MAX_BACKOFF_S)
    return Restart(delay_s, crashes + 1, attrs.evolve(record, crashes=crashes + 1))


def thread_timer(delay_s: float, fn: Callable[[], None]) -> Cancel:
    """The daemon's ``Schedule``: ``fn`` on a thread after ``delay_s``, its failure logged.

    One due at once (``restart_delay_ms: 0``) runs on one of a few threads kept for that: a
    crash storm of every app no longer starts a thread per app at once."""
    job = partial(_logged, fn)
    if delay_s <= 0:
        return _workers().submit(job).cancel
    timer = threading.Timer(delay_s, job)
    timer.daemon = True
    timer.start()
    return timer.cancel


@cache
def _workers() -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=IMMEDIATE_WORKERS, thread_name_prefix="restart")


def _logged(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # a scheduled call has nobody else to tell
        log.exception("scheduled_call_failed")
