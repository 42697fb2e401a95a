"""THE state table: every app state, every trigger, and which trigger moves which state where.

Adding a state is an edit here (its rows, its group memberships, its ``FACTS``), plus the
command and endpoint that drive it. Rows for the same trigger are tried in order and the first
whose ``when`` holds wins; ``dest=None`` is an internal transition, used where a repeated
notification is already true ("ready while ready"): it is accepted and changes nothing.

Standard library only: the CLI and any client read state names and groups from here without
loading the state machine library (``supervisor.machine`` builds the machine from this table).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class AppState(enum.Enum):
    stopped = "stopped"  # no process known (initial)
    launching = "launching"  # spawn requested, process not yet confirmed
    launched = "launched"  # a process is running; not yet ready
    ready = "ready"  # the app said so, its ready_cmd passed, or it has no readiness check
    stopping = "stopping"  # stop requested; waiting for the process group to exit
    failed = "failed"  # launch failed, crashed, crash loop, or lease expired; carries an error
    unresponsive = "unresponsive"  # its heartbeat lease ran out (or it was drained): in grace


class Trigger(enum.Enum):
    launch = "launch"
    spawned = "spawned"
    spawn_failed = "spawn_failed"
    notify_launched = "notify_launched"
    notify_ready = "notify_ready"
    notify_stopped = "notify_stopped"
    exited = "exited"
    stop = "stop"
    crash_loop = "crash_loop"
    heartbeat = "heartbeat"
    lease_expired = "lease_expired"
    drain = "drain"
    revive = "revive"
    grace_expired = "grace_expired"


class Cause(enum.Enum):
    """Who caused a transition (its ``source`` in the history, the log and the event stream)."""

    hotkey = "hotkey"
    api = "api"
    cli = "cli"
    tracker = "tracker"
    readiness = "readiness"
    lease = "lease"
    reload = "reload"
    restart = "restart"
    daemon = "daemon"


S = AppState
# The groups every other module names states by; none of them spells a group by hand.
IDLE = (S.stopped, S.failed)  # no process runs (a failed app may still hold one: see FACTS)
RUNNING = (S.launched, S.ready)  # a process runs and answers
LIVE = (*RUNNING, S.unresponsive)  # a process runs
ALIVE = (S.launching, *LIVE)  # a process runs or is being spawned
UP = (*LIVE, S.stopping)  # a process runs, maybe on its way out: what has an uptime
MOVING = (S.launching, S.stopping)  # a process is on its way in or out: a restart waits
ANNOUNCED = (*RUNNING, S.stopping)  # the Go orchestratr's ``launched: true``
SERVING = LIVE  # the app's services are found (GET /services): withdrawn once it stops or fails


# A non-zero exit this soon after the spawn is a failed launch ("command not found"), not the
# crash of an app that ran: its error says so, and ``orchestratr launch`` waits this long
# before it calls a launch good.
QUICK_EXIT_S = 1.0


class Stamp(enum.Enum):
    """What entering a state does to one of the app's timestamps."""

    keep = "keep"
    now = "now"  # set to the transition's time
    first = "first"  # set to the transition's time unless already set (a revival keeps it)
    clear = "clear"


class Error(enum.Enum):
    """What entering a state does to the app's error."""

    keep = "keep"
    clear = "clear"
    set = "set"  # the trigger's ``error``


class Process(enum.Enum):
    """What entering a state does to the app's tracked process."""

    keep = "keep"
    take = "take"  # the trigger's ``pid``, when it names one
    drop = "drop"  # none is known any more
    # dropped, unless the trigger says the process lives on (``held``): a live process is
    # never forgotten, so ``launch`` spawns nothing and ``stop`` ends it
    hold = "hold"


@dataclass(frozen=True)
class Facts:
    """What being in a state means for the app's live fields; ``App.apply`` reads them."""

    process: Process = Process.keep
    error: Error = Error.keep
    launched_at: Stamp = Stamp.keep
    ready_at: Stamp = Stamp.keep
    trouble: bool = False  # entering it is logged as a warning (log_level: warning shows it)


FACTS: Mapping[AppState, Facts] = {
    S.stopped: Facts(Process.drop, Error.clear, Stamp.clear, Stamp.clear),
    S.launching: Facts(),
    S.launched: Facts(Process.take, Error.clear, Stamp.now, Stamp.clear),
    S.ready: Facts(Process.take, Error.clear, Stamp.first, Stamp.first),
    S.stopping: Facts(),
    S.failed: Facts(Process.hold, Error.set, Stamp.clear, Stamp.clear, trouble=True),
    S.unresponsive: Facts(trouble=True),
}


class Attempt(Protocol):
    """What a row's ``when`` reads of a trigger being tried: the app and the trigger's
    arguments (transitions' EventData has both, and so does a ``Probe``)."""

    @property
    def model(self) -> Any: ...

    @property
    def kwargs(self) -> Mapping[str, Any]: ...


def _detached(attempt: Attempt) -> bool:
    return bool(attempt.kwargs.get("detached"))


def _has_process(attempt: Attempt) -> bool:
    """A process is known, or one is being spawned (it will exist and must be stopped)."""
    model = attempt.model
    return getattr(model, "pid", None) is not None or bool(getattr(model, "spawning", False))


def _restarts(attempt: Attempt) -> bool:
    """A known process and a restart policy: the app is stopped and launched again."""
    return _has_process(attempt) and bool(attempt.kwargs.get("restart", False))


def _clean_exit(attempt: Attempt) -> bool:
    """Status 0, or unknown (a process we did not spawn, whose status we cannot read)."""
    return attempt.kwargs.get("code") in (0, None)


@dataclass(frozen=True)
class Row:
    trigger: Trigger
    source: Sequence[AppState]
    dest: AppState | None
    when: Callable[[Attempt], bool] | None = None


TABLE: tuple[Row, ...] = (
    Row(Trigger.launch, (S.failed,), None, when=_has_process),  # failed, but its process lives
    Row(Trigger.launch, IDLE, S.launching),
    Row(Trigger.launch, ALIVE, None),  # already running: the supervisor reports the pid
    Row(Trigger.spawned, (S.launching,), S.stopped, when=_detached),
    Row(Trigger.spawned, (S.launching,), S.launched),
    Row(Trigger.spawn_failed, (S.launching,), S.failed),
    Row(Trigger.notify_launched, (*IDLE, S.launching), S.launched),
    Row(Trigger.notify_launched, LIVE, None),
    Row(Trigger.notify_ready, (*IDLE, S.launching, S.launched, S.unresponsive), S.ready),
    Row(Trigger.notify_ready, (S.ready,), None),
    Row(Trigger.notify_stopped, (*ALIVE, S.failed), S.stopping, when=_has_process),
    Row(Trigger.notify_stopped, (*ALIVE, S.failed), S.stopped),
    Row(Trigger.notify_stopped, (S.stopped, S.stopping), None),
    Row(Trigger.exited, (S.stopping,), S.stopped),
    Row(Trigger.exited, ALIVE, S.stopped, when=_clean_exit),
    Row(Trigger.exited, ALIVE, S.failed),
    Row(Trigger.exited, (S.failed,), S.failed, when=_has_process),  # the held process ended
    Row(Trigger.stop, (S.launching,), S.stopping),
    Row(Trigger.stop, (*LIVE, S.failed), S.stopping, when=_has_process),
    Row(Trigger.stop, (*LIVE, S.failed), S.stopped),
    Row(Trigger.stop, (S.stopped, S.stopping), None),
    Row(Trigger.crash_loop, IDLE, S.failed),
    # Heartbeat leases. A heartbeat is alive-and-well: like ``ready`` it may come first.
    Row(Trigger.heartbeat, (*IDLE, S.launching, S.unresponsive), S.ready),
    Row(Trigger.heartbeat, RUNNING, None),
    Row(Trigger.lease_expired, RUNNING, S.unresponsive),
    Row(Trigger.drain, RUNNING, S.unresponsive),
    Row(Trigger.drain, (S.unresponsive,), None),
    Row(Trigger.revive, (S.unresponsive,), S.ready),
    Row(Trigger.revive, (S.ready,), None),
    Row(Trigger.grace_expired, (S.unresponsive,), S.stopping, when=_restarts),
    Row(Trigger.grace_expired, (S.unresponsive,), S.failed),
)

# Why a refused trigger was refused, where "cannot X while Y" alone would not say enough.
REFUSALS: Mapping[tuple[AppState, Trigger], str] = {
    (S.stopping, Trigger.launch): "it is stopping; launch it again once it has stopped",
    (S.stopped, Trigger.exited): "no process is tracked",
    (S.failed, Trigger.exited): "no process is tracked",
    (S.stopping, Trigger.heartbeat): "it is being stopped",
    (S.launched, Trigger.revive): "it is not unresponsive",
}


@dataclass(frozen=True)
class Probe:
    """A trigger not yet fired, for asking the table whether it would be allowed."""

    model: Any
    kwargs: Mapping[str, Any]


def allowed(state: AppState, trigger: Trigger, model: Any, **kwargs: Any) -> bool:
    """Whether some row lets ``trigger`` (with ``kwargs``) happen to ``model`` in ``state``."""
    probe = Probe(model, kwargs)
    return any(row.trigger is trigger and state in row.source
               and (row.when is None or row.when(probe)) for row in TABLE)


def refusal(state: AppState, trigger: Trigger) -> str:
    """Why ``trigger`` is refused in ``state``, where the table alone would not say ("")."""
    return REFUSALS.get((state, trigger), "")
