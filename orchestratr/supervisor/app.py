"""One supervised app: its spec, its live state, its bounded history, and snapshots of them.

``App`` is the model the state machine drives, and the only writer of its own fields: a
transition changes them as ``states.FACTS`` says (``apply``), and every other change is a named
method here, so a reader finds what a field means in one place. Its lock covers a trigger
together with the fields the trigger changes, so a snapshot never shows a half-applied
transition.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from orchestratr.registry.model import AppSpec
from orchestratr.supervisor.restarts import Cancel, Record
from orchestratr.supervisor.states import (
    FACTS,
    LIVE,
    AppState,
    Cause,
    Error,
    Process,
    Stamp,
    Trigger,
)

HISTORY_SIZE = 100


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
    cause: Cause
    at: float
    detail: Mapping[str, Any]

    def fields(self) -> dict[str, Any]:
        """Plain values, keyed as the event stream and the API name them."""
        return {
            "from": self.src.value,
            "to": self.dst.value,
            "trigger": self.trigger.value,
            "source": self.cause.value,
            "at": self.at,
            "detail": dict(self.detail),
        }


@attrs.frozen
class LastExit:
    """How the app's last process (group) ended."""

    code: int | None  # its exit status; None when killed by a signal or not ours to know
    signal: str | None  # the signal that killed it, e.g. SIGKILL
    at: float  # wall clock


# What an app that never moved holds instead of its own deque (about 600 bytes each, a tenth
# of an idle app's cost): ``apply`` replaces it at the first transition, nothing appends to it.
_NO_HISTORY: deque[HistoryEntry] = deque(maxlen=0)


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
    lease_s: float | None = None  # the lease the app holds now, if any
    expires_in_s: float | None = None  # until the lease (or, if unresponsive, grace) ends
    restarts: int = 0  # runs that replaced an earlier one (policy, lease or command)
    last_exit: LastExit | None = None

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
    # wall clock: when that process (group) was created; an adoption keeps the earliest
    started_at: float | None = attrs.field(default=None, on_setattr=_shown)
    launched_at: float | None = attrs.field(default=None, on_setattr=_shown)
    ready_at: float | None = attrs.field(default=None, on_setattr=_shown)
    error: str | None = attrs.field(default=None, on_setattr=_shown)
    # dropped from the registry while running; forgotten once it exits
    removed: bool = attrs.field(default=False, on_setattr=_shown)
    spawning: bool = False  # a spawn is in flight: its process will belong to this app
    run: int = 0  # bumped on every spawn/adopt so callbacks from an older process are ignored
    started: float = 0.0  # monotonic time of the last spawn or adoption
    restarts: Record = Record()  # recent starts and crashes, for the restart policy
    restart_count: int = attrs.field(default=0, on_setattr=_shown)  # see AppSnapshot.restarts
    last_exit: LastExit | None = attrs.field(default=None, on_setattr=_shown)
    relaunch: bool = False  # a restart is waiting for the stop to finish
    last_entry: HistoryEntry | None = None  # what the last trigger recorded (None: internal)
    cancel_probe_fn: Cancel | None = None
    cancel_restart_fn: Cancel | None = None
    lease_s: float | None = None  # the lease held in this run (None: no heartbeats expected)
    deadline: float | None = None  # monotonic: the lease's end, or the grace period's
    monotonic: Callable[[], float] = time.monotonic
    history: deque[HistoryEntry] = _NO_HISTORY
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    changes: Changes = attrs.field(factory=Changes)  # the supervisor's, shared by its apps

    @property
    def name(self) -> str:
        return self.spec.name

    # ------------------------------------------------------------ transitions

    def apply(
        self, src: AppState, trigger: Trigger, kwargs: Mapping[str, Any]
    ) -> HistoryEntry:
        """Update the live fields for a transition into the current state (``states.FACTS``)
        and record it in the history."""
        now = self.clock()
        facts = FACTS[self.state]
        if facts.process is Process.take:
            self.pid = kwargs.get("pid", self.pid)
        elif facts.process is Process.drop or (facts.process is Process.hold
                                               and not kwargs.get("held")):
            self.pid = self.started_at = None
            self.group = False
        if facts.error is not Error.keep:
            self.error = kwargs.get("error") if facts.error is Error.set else None
        self.launched_at = _stamp(facts.launched_at, self.launched_at, now)
        self.ready_at = _stamp(facts.ready_at, self.ready_at, now)
        entry = HistoryEntry(
            src=src,
            dst=self.state,
            trigger=trigger,
            cause=kwargs["cause"],
            at=now,
            detail={k: v for k, v in kwargs.items() if k != "cause" and v is not None},
        )
        if self.history is _NO_HISTORY:
            self.history = deque(maxlen=HISTORY_SIZE)
        self.history.append(entry)
        self.last_entry = entry
        return entry

    def moved(self) -> None:
        """Before a trigger: forget what the previous one recorded."""
        self.last_entry = None

    # ------------------------------------------------------------ the registry

    def respec(self, spec: AppSpec) -> None:
        """A reload changed (or brought back) the app's spec: used from its next launch."""
        self.spec, self.removed = spec, False

    def retire(self) -> None:
        """The app left the registry: forgotten once it has no process."""
        self.removed = True
        self.cancel_restart()

    # ------------------------------------------------------------ processes

    def new_run(self) -> int:
        """Callbacks for the process the app had until now concern it no more."""
        self.run += 1
        return self.run

    def begin_spawn(self) -> int:
        """A spawn is on its way (``launching``); returns its run token."""
        self.spawning = True
        return self.new_run()

    def spawn_ended(self, started: float | None) -> None:
        """The spawn returned; ``started`` (monotonic) when it made a process."""
        self.spawning = False
        if started is not None:
            self.started = started
            self.restarts = self.restarts.started(started)

    def own_group(self, born: float) -> None:
        """The group just spawned is the app's (its pid comes with ``spawned``)."""
        self.group, self.started_at = True, born

    def take_group(self, pid: int, born: float) -> int:
        """A spawn that ended after other triggers overtook ``launching``: its group becomes
        the app's; returns the new run token."""
        self.pid, self.group, self.started_at = pid, True, born
        return self.new_run()

    def adopt(self, pid: int, group: bool, born: float, started: float) -> None:
        """Track a process the app did not get from our spawn (announced, or a survivor)."""
        self.new_run()
        self.group, self.started, self.started_at = group, started, born
        if self.state in LIVE:
            self.pid = pid

    def lose_process(self) -> None:
        """Its process ended while no state tracked it (stopped before its spawn ended)."""
        self.pid, self.group = None, False

    def forget_restarts(self) -> None:
        """A person launched it: the crash count and the crash-loop window start afresh."""
        self.restarts = Record()

    def count_restart(self, record: Record) -> None:
        self.restarts = record

    def replaced_run(self) -> None:
        """A new run replaces one that ended (a restart, by policy, lease or command)."""
        self.restart_count += 1

    def exited(self, code: int | None, at: float) -> None:
        """Its process (group) ended with ``code`` (negative: killed by that signal)."""
        killed = code is not None and code < 0
        self.last_exit = LastExit(code=None if killed else code,
                                  signal=_signal_name(-code) if killed and code else None, at=at)

    def want_relaunch(self, wanted: bool = True) -> None:
        """Launch again once the current process is gone (a restart, a lease's grace)."""
        self.relaunch = wanted

    def take_relaunch(self) -> bool:
        wanted, self.relaunch = self.relaunch, False
        return wanted

    # ------------------------------------------------------------ pending work

    def on_probe(self, cancel: Cancel | None) -> None:
        self.cancel_probe_fn = cancel

    def cancel_probe(self) -> None:
        if self.cancel_probe_fn is not None:
            self.cancel_probe_fn()
            self.cancel_probe_fn = None

    def on_restart(self, cancel: Cancel | None) -> None:
        self.cancel_restart_fn = cancel

    def cancel_restart(self) -> None:
        if self.cancel_restart_fn is not None:
            self.cancel_restart_fn()
            self.cancel_restart_fn = None

    # ------------------------------------------------------------ leases

    def hold_lease(self, lease_s: float | None) -> None:
        self.lease_s = lease_s

    def set_deadline(self, deadline: float | None) -> None:
        self.deadline = deadline

    def end_lease(self) -> None:
        self.lease_s = self.deadline = None

    # ------------------------------------------------------------ reads

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
                lease_s=self.lease_s,
                expires_in_s=None if self.deadline is None
                else max(0.0, self.deadline - self.monotonic()),
                restarts=self.restart_count,
                last_exit=self.last_exit,
            )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stamp(rule: Stamp, current: float | None, now: float) -> float | None:
    if rule is Stamp.now:
        return now
    if rule is Stamp.first:
        return current if current is not None else now
    if rule is Stamp.clear:
        return None
    return current
