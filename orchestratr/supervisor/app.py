"""One supervised app: its spec, its live state, its bounded history, and snapshots of them.

``App`` is the model a ``transitions`` machine drives. Its lock covers a trigger together with
the fields the trigger changes, so a snapshot never shows a half-applied transition.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from transitions import EventData

from orchestratr.registry.model import AppSpec
from orchestratr.supervisor.states import AppState, Source, Trigger

HISTORY_SIZE = 100
STARTS_KEPT = 16  # the crash-loop check looks at the last few starts only
# What an app that never moved holds instead of its own deque (about 600 bytes each, a tenth
# of an idle app's cost): ``apply`` replaces it at the first transition, nothing appends to it.
_NO_HISTORY: deque[HistoryEntry] = deque(maxlen=0)


class Changes:
    """A number that moves whenever anything ``GET /apps`` shows changes, so its answer can
    be reused until then without copying every app to compare.

    It moves inside the change's own app lock, before the field is written; a reader that
    reads it, then snapshots (which takes that lock), therefore never pairs a number with
    older fields.
    """

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self.value = 0

    def bump(self) -> None:
        self.value = next(self._count)


def _shown(app: App, _: attrs.Attribute[Any], value: Any) -> Any:
    app.changes.bump()
    return value


@attrs.frozen
class HistoryEntry:
    """One transition, as the history, the logs and the event stream all show it."""

    src: AppState
    dst: AppState
    trigger: Trigger
    source: Source
    at: float
    detail: Mapping[str, Any]

    def fields(self) -> dict[str, Any]:
        """Plain values, keyed as the event stream and the API name them."""
        return {
            "from": self.src.value,
            "to": self.dst.value,
            "trigger": self.trigger.value,
            "source": self.source.value,
            "at": self.at,
            "detail": dict(self.detail),
        }


@attrs.frozen
class AppSnapshot:
    """A consistent copy of an app's spec and live state, safe to hand to any thread."""

    spec: AppSpec
    state: AppState
    pid: int | None  # for a group: the group's id (its first leader's pid), see App.pid
    group: bool  # pid leads the app's own process group
    started_at: float | None  # wall clock: when the tracked process (group) was created
    launched_at: float | None
    ready_at: float | None
    error: str | None
    removed: bool
    history: tuple[HistoryEntry, ...] = ()
    lease_secs: float | None = None  # the lease the app holds now, if any
    expires_in: float | None = None  # seconds until the lease (or, if unresponsive, grace) ends

    @property
    def name(self) -> str:
        return self.spec.name


@attrs.define(eq=False)  # slots: AppMachine binds no methods to the instance
class App:
    spec: AppSpec = attrs.field(on_setattr=_shown)
    clock: Callable[[], float]  # wall clock, for `at` and the *_at fields
    state: AppState = attrs.field(default=AppState.stopped, on_setattr=_shown)
    # The tracked process; for a group we spawned, the group's id. That is the pid of the
    # group's first process, which may have exited (a launcher script) while the group lives
    # on: the id stays right for signalling the group, and no new process can take that
    # number while any member of the group is alive.
    pid: int | None = attrs.field(default=None, on_setattr=_shown)
    group: bool = False  # pid leads a process group we spawned (signal the group)
    started_at: float | None = None  # wall clock: when that process (group) was created
    launched_at: float | None = attrs.field(default=None, on_setattr=_shown)
    ready_at: float | None = attrs.field(default=None, on_setattr=_shown)
    error: str | None = attrs.field(default=None, on_setattr=_shown)
    # dropped from the registry while running; forgotten once it exits
    removed: bool = attrs.field(default=False, on_setattr=_shown)
    spawning: bool = False  # a spawn is in flight: its process will belong to this app
    run: int = 0  # bumped on every spawn/adopt so callbacks from an older process are ignored
    started: float = 0.0  # monotonic time of the last spawn
    starts: tuple[float, ...] = ()  # monotonic times of the last STARTS_KEPT spawns
    crashes: int = 0  # consecutive unexpected exits, for the restart backoff
    relaunch: bool = False  # a restart is waiting for the stop to finish
    last_entry: HistoryEntry | None = None  # what the last trigger recorded (None: internal)
    cancel_probe: Callable[[], None] | None = None
    restart_timer: threading.Timer | None = None
    lease_secs: float | None = None  # the lease held in this run (None: no heartbeats expected)
    deadline: float | None = None  # monotonic: the lease's end, or the grace period's
    monotonic: Callable[[], float] = time.monotonic
    history: deque[HistoryEntry] = _NO_HISTORY
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    changes: Changes = attrs.field(factory=Changes)  # the supervisor's, shared by its apps

    @property
    def name(self) -> str:
        return self.spec.name

    def apply(self, event: EventData) -> HistoryEntry | None:
        """Update the live fields for a transition that just happened and record it.

        Returns None for internal transitions (a notification that was already true).
        """
        dest = event.transition.dest
        if dest is None:
            return None
        now = self.clock()
        kwargs = event.kwargs
        if self.state in (AppState.launched, AppState.ready):
            self.error = None
        if self.state is AppState.launched:
            self.pid = kwargs.get("pid", self.pid)
            self.launched_at, self.ready_at = now, None
        elif self.state is AppState.ready:
            self.pid = kwargs.get("pid", self.pid)
            self.launched_at = self.launched_at or now
            if event.transition.source != AppState.unresponsive.name or self.ready_at is None:
                self.ready_at = now  # a revived app has been ready since it first said so
        elif self.state in (AppState.stopped, AppState.failed):
            self.pid = self.started_at = None
            self.group = False
            self.launched_at = self.ready_at = None
            self.error = kwargs.get("error") if self.state is AppState.failed else None
        entry = HistoryEntry(
            src=AppState[event.transition.source],
            dst=self.state,
            trigger=Trigger(event.event.name),
            source=kwargs["source"],
            at=now,
            detail={k: v for k, v in kwargs.items() if k != "source" and v is not None},
        )
        if self.history is _NO_HISTORY:
            self.history = deque(maxlen=HISTORY_SIZE)
        self.history.append(entry)
        return entry

    def note_start(self, at: float) -> None:
        self.starts = (*self.starts[1 - STARTS_KEPT:], at)

    def snapshot(self, with_history: bool = False) -> AppSnapshot:
        with self.lock:
            return AppSnapshot(
                spec=self.spec,
                state=self.state,
                pid=self.pid,
                group=self.group,
                started_at=self.started_at,
                launched_at=self.launched_at,
                ready_at=self.ready_at,
                error=self.error,
                removed=self.removed,
                history=tuple(self.history) if with_history else (),
                lease_secs=self.lease_secs,
                expires_in=None if self.deadline is None
                else max(0.0, self.deadline - self.monotonic()),
            )
