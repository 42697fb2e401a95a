"""The restart policy: whether an app that exited starts again, after what delay, or whether it
is crash-looping. Pure: times are passed in, nothing here reads a clock or starts a timer.

The numbers are systemd's and supervisord's: the delay doubles per consecutive crash from the
app's ``restart_delay_ms`` up to MAX_BACKOFF_S, the count resets once the app stayed up
STABLE_AFTER_S, and a start that would be the (CRASH_BURST + 1)th within CRASH_WINDOW_S is
refused (systemd's StartLimitBurst / StartLimitIntervalSec).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from orchestratr.registry.model import AppSpec, RestartPolicy

STABLE_AFTER_S = 10.0  # an app up this long has its restart backoff reset
CRASH_WINDOW_S = 10.0  # systemd's StartLimitIntervalSec ...
CRASH_BURST = 5  # ... and StartLimitBurst
MAX_BACKOFF_S = 30.0
STARTS_KEPT = 16  # the crash-loop check looks at the last few starts only

Cancel = Callable[[], None]
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
    """The daemon's ``Schedule``: ``fn`` on a timer thread after ``delay_s``."""
    timer = threading.Timer(delay_s, fn)
    timer.daemon = True
    timer.start()
    return timer.cancel
