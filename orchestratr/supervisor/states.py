"""THE state table: every app state, every trigger, and which trigger moves which state where.

Adding a state or trigger is one edit here. Rows for the same trigger are tried in order and the
first whose ``when`` holds wins; ``dest=None`` is an internal transition, used where a repeated
notification is already true ("ready while ready"): it is accepted and changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
from transitions import EventData, Machine


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


class Source(enum.Enum):
    """Who caused a transition."""

    hotkey = "hotkey"
    api = "api"
    cli = "cli"
    tracker = "tracker"
    readiness = "readiness"
    lease = "lease"
    reload = "reload"
    restart = "restart"
    daemon = "daemon"


class Event(Protocol):
    """What a row's ``when`` reads of a transition: transitions' EventData, or a ``Probe``."""

    @property
    def model(self) -> Any: ...

    @property
    def kwargs(self) -> Mapping[str, Any]: ...


def _detached(event: Event) -> bool:
    return bool(event.kwargs.get("detached"))


def _has_process(event: Event) -> bool:
    """A process is known, or one is being spawned (it will exist and must be stopped)."""
    model = event.model
    return getattr(model, "pid", None) is not None or bool(getattr(model, "spawning", False))


def _restarts(event: Event) -> bool:
    """A known process and a restart policy: the app is stopped and launched again."""
    return _has_process(event) and event.kwargs.get("restart", False)


def _clean_exit(event: Event) -> bool:
    """Status 0, or unknown (a process we did not spawn, whose status we cannot read)."""
    return event.kwargs.get("code") in (0, None)


S = AppState
RUNNING = (S.launched, S.ready)  # a process runs and answers
LIVE = (*RUNNING, S.unresponsive)  # a process runs
ALIVE = (S.launching, *LIVE)  # a process runs or is being spawned


@attrs.frozen
class Row:
    trigger: Trigger
    source: Sequence[AppState]
    dest: AppState | None
    when: Callable[[Event], bool] | None = None


TABLE: tuple[Row, ...] = (
    Row(Trigger.launch, (S.stopped, S.failed), S.launching),
    Row(Trigger.launch, ALIVE, None),  # already running: the supervisor reports the pid
    Row(Trigger.spawned, (S.launching,), S.stopped, when=_detached),
    Row(Trigger.spawned, (S.launching,), S.launched),
    Row(Trigger.spawn_failed, (S.launching,), S.failed),
    Row(Trigger.notify_launched, (S.stopped, S.failed, S.launching), S.launched),
    Row(Trigger.notify_launched, LIVE, None),
    Row(Trigger.notify_ready, (S.stopped, S.failed, S.launching, S.launched, S.unresponsive),
        S.ready),
    Row(Trigger.notify_ready, (S.ready,), None),
    Row(Trigger.notify_stopped, ALIVE, S.stopping, when=_has_process),
    Row(Trigger.notify_stopped, (*ALIVE, S.failed), S.stopped),
    Row(Trigger.notify_stopped, (S.stopped, S.stopping), None),
    Row(Trigger.exited, (S.stopping,), S.stopped),
    Row(Trigger.exited, ALIVE, S.stopped, when=_clean_exit),
    Row(Trigger.exited, ALIVE, S.failed),
    Row(Trigger.stop, (S.launching,), S.stopping),
    Row(Trigger.stop, LIVE, S.stopping, when=_has_process),
    Row(Trigger.stop, (*LIVE, S.failed), S.stopped),
    Row(Trigger.stop, (S.stopped, S.stopping), None),
    Row(Trigger.crash_loop, (S.stopped, S.failed), S.failed),
    # Heartbeat leases. A heartbeat is alive-and-well: like ``ready`` it may come first.
    Row(Trigger.heartbeat, (S.stopped, S.failed, S.launching, S.unresponsive), S.ready),
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
REFUSALS: dict[tuple[AppState, Trigger], str] = {
    (S.stopping, Trigger.launch): "it is stopping; launch it again once it has stopped",
    (S.stopped, Trigger.exited): "no process is tracked",
    (S.failed, Trigger.exited): "no process is tracked",
    (S.stopping, Trigger.heartbeat): "it is being stopped",
    (S.launched, Trigger.revive): "it is not unresponsive",
}


@attrs.frozen
class Probe:
    """A transition not yet fired, for asking the table whether it would be allowed."""

    model: Any
    kwargs: Mapping[str, Any]


def allowed(state: AppState, trigger: Trigger, model: Any, **kwargs: Any) -> bool:
    """Whether some row lets ``trigger`` (with ``kwargs``) happen to ``model`` in ``state``."""
    probe = Probe(model, kwargs)
    return any(row.trigger is trigger and state in row.source
               and (row.when is None or row.when(probe)) for row in TABLE)


class AppMachine(Machine):
    """A transitions machine that binds no methods to its models.

    transitions binds a trigger and a ``may_`` check per trigger, and an ``is_`` check per
    state, to every model: 37 functions, about 11 KiB per app, 1.1 MiB of a daemon with 100
    apps. Apps are driven by trigger name through ``fire`` instead, and ``allowed`` answers
    "may it?" from the table.
    """

    def _checked_assignment(self, model: Any, name: str, func: Callable[..., Any]) -> None:
        """transitions' one hook for binding a function to a model: bind nothing."""

    def fire(self, model: Any, trigger: Trigger, **kwargs: Any) -> bool:
        """Run ``trigger`` on ``model``. False, or MachineError, when no row allows it."""
        return bool(self.events[trigger.value].trigger(model, **kwargs))


def build_machine(after: Sequence[Callable[[EventData], None]]) -> AppMachine:
    """One machine for all apps (``add_model`` per app); ``after`` runs on every transition."""
    return AppMachine(
        model=None,
        states=AppState,
        initial=AppState.stopped,
        transitions=[
            {
                "trigger": row.trigger.value,
                "source": list(row.source),
                "dest": row.dest,
                "conditions": [row.when] if row.when else [],
            }
            for row in TABLE
        ],
        send_event=True,
        auto_transitions=False,
        after_state_change=list(after),
    )
