"""The Supervisor: the commands every event source calls, and what follows each transition.

Hotkeys, the HTTP API, the CLI and the process tracker all come through the methods here, from
any thread. Per app, a trigger and the fields it changes happen under the app's lock; anything
slow (spawning, signalling a group's death, readiness probes) happens outside it, followed by
the trigger that records its outcome (``launch`` -> spawn -> ``spawned`` or ``spawn_failed``).

The policies have rooms of their own: the table in ``states``, the apps by name in ``roster``,
the restart policy in ``restarts``, the lease rules in ``leases``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import structlog

from orchestratr.errors import (
    BadRequestError,
    ConflictError,
    InvalidTransitionError,
    LaunchError,
    OrchestratrError,
    UnavailableError,
    UnknownAppError,
    clip,
)
from orchestratr.registry.model import AppSpec, Registry, ServiceSpec
from orchestratr.registry.validate import MAX_NAME
from orchestratr.supervisor import leases, restarts
from orchestratr.supervisor.app import App, AppSnapshot, Changes, HistoryEntry
from orchestratr.supervisor.bus import OWN_TYPES, PUBLISHED_TYPE, BusEvent, EventBus, weight_of
from orchestratr.supervisor.focus import SPAWNED, Focus, NoWindows, Windows
from orchestratr.supervisor.inbox import Inbox, Inboxes
from orchestratr.supervisor.launcher import (
    Launcher,
    NoRecord,
    ProcessExit,
    ProcessUsage,
    RunningRecord,
)
from orchestratr.supervisor.leases import Leases
from orchestratr.supervisor.machine import Transition, build_machine
from orchestratr.supervisor.roster import Roster
from orchestratr.supervisor.services import Services
from orchestratr.supervisor.states import (
    FACTS,
    IDLE,
    LIVE,
    MOVING,
    QUICK_EXIT_S,
    SERVING,
    AppState,
    Cause,
    Trigger,
    allowed,
    refusal,
)

log = structlog.get_logger("orchestratr.supervisor")

# Shutdown with stop_apps_on_exit: SIGKILL at min(stop_timeout_ms, this), and wait this long
# in all for the exits, so the whole daemon still stops in under 2 s.
SHUTDOWN_GRACE_S = 1.0
SHUTDOWN_WAIT_S = 1.5
# How long a launch waits for the daemon to finish adopting what an earlier daemon left
# running (it must not race the adoption and spawn a duplicate), before it is refused.
ADMIT_WAIT_S = 10.0
# Launches in flight at once while autostarting: each waits for the journal's fsync, so
# more of them share one (1,000 apps: 2.6 s with 4, 2.2 s with 16).
AUTOSTART_WORKERS = 16
# Who may be shown a window: a launch from autostart or a restart must not steal the focus.
PEOPLE = frozenset({Cause.hotkey, Cause.api, Cause.cli})


@attrs.frozen
class LaunchResult:
    app: AppSnapshot
    spawned: bool  # False: the app was already running (or launching) and nothing was spawned
    focus: Focus = SPAWNED  # what became of its window


@attrs.frozen
class Renewal:
    app: AppSnapshot
    expires_in_s: float


@attrs.frozen
class Delivery:
    """A message posted to an app's inbox."""

    id: int
    delivered: int  # the receiver's inbox readers connected when it was posted
    launched: bool  # the receiver was idle and was launched for it


class Supervisor:
    """``launcher`` reaches the OS; ``record`` keeps the durable record of what runs;
    ``monotonic`` and ``wall`` are the clocks; ``schedule`` runs a function after a delay
    (restarts), returning a function that cancels it."""

    def __init__(
        self,
        launcher: Launcher,
        bus: EventBus | None = None,
        *,
        record: RunningRecord | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        schedule: restarts.Schedule = restarts.thread_timer,
        windows: Windows | None = None,
    ) -> None:
        self._launcher = launcher
        self._record = record or NoRecord()
        self._admitting = threading.Event()
        self._admitting.set()
        self._windows = windows or NoWindows()
        self.bus = bus or EventBus()
        self._mono = monotonic
        self._wall = wall
        self._schedule = schedule
        self.changes = Changes()  # moves whenever anything an app list shows changes
        self._machine = build_machine(self._on_transition)
        self._roster = Roster(self._new_app, self._machine.remove_model, self.changes)
        self._leases = Leases(lambda: self._roster.apps, self._on_lease_due, monotonic)
        self.inboxes = Inboxes()
        self.services = Services(lambda: self.bus, lambda: ((a.name, a.spec.services)
                                                            for a in self._roster.apps))
        self._closing = False

    # ------------------------------------------------------------- admission

    def hold_launches(self) -> None:
        """Launches wait (bounded) until ``admit_launches``: the daemon adopts survivors."""
        self._admitting.clear()

    def admit_launches(self) -> None:
        self._admitting.set()

    def _admitted(self) -> None:
        if not self._admitting.wait(ADMIT_WAIT_S):
            raise UnavailableError(
                f"the daemon is still taking over the apps an earlier daemon left running "
                f"(waited {ADMIT_WAIT_S:g} s); try again shortly")

    # ----------------------------------------------------------------- registry

    @property
    def registry(self) -> Registry:
        return self._roster.registry

    def apply_registry(
        self,
        registry: Registry,
        cause: Cause = Cause.reload,
        autostart: bool = True,
        announce: bool = True,
    ) -> list[str]:
        """Swap in a new registry atomically; return the names it added.

        Running apps are never touched: a changed spec is used at the next launch, and an app
        that is gone stays tracked until its process exits. Added ``autostart`` apps launch
        (unless ``autostart`` is False: the daemon first adopts what is still running).
        ``announce`` publishes a ``reloaded`` event; a registration announces itself instead.
        """
        change = self._roster.apply(registry)
        self._follow_offers()
        if announce:
            self.bus.publish("reloaded", source=cause.value, apps=len(registry.apps),
                             added=change.added, removed=change.removed)
        log.info("registry_applied", source=cause.value, apps=len(registry.apps),
                 added=change.added, removed=change.removed)
        if autostart:
            self.autostart(cause, change.added)
        return change.added

    def autostart(self, cause: Cause, names: list[str] | None = None) -> None:
        """Launch the ``autostart`` apps (of ``names``, or all) that are not running, a few at
        a time: one app's fork, exec and record overlap the next one's (a login with 1,000
        apps is not 1,000 launches in a row). Returns once every launch has returned."""
        todo = [spec.name for spec in self.registry.apps
                if spec.autostart and (names is None or spec.name in names)]
        due = iter(todo)
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    name = next(due, None)
                if name is None:
                    return
                try:
                    self._try(self.launch, name, cause)
                except Exception:  # a bug in one launch must not end the others' worker
                    log.exception("autostart_failed", app=name)

        workers = [threading.Thread(target=work, name="autostart", daemon=True)
                   for _ in range(min(AUTOSTART_WORKERS, len(todo)) - 1)]
        for worker in workers:
            worker.start()
        work()
        for worker in workers:
            worker.join()

    def find_chord(self, chord: str) -> str:
        spec = self.registry.by_chord(chord)
        if spec is None:
            raise UnknownAppError(f"no app with chord {chord!r}")
        return spec.name

    # -------------------------------------------------------------------- reads

    def snapshot(self, name: str, with_history: bool = True) -> AppSnapshot:
        return self._app(name).snapshot(with_history)

    def snapshots(self) -> list[AppSnapshot]:
        return [app.snapshot() for app in self._roster.apps]

    def processes(self, name: str) -> list[ProcessUsage]:
        """The app's live processes with their CPU and memory (none while it has no process)."""
        snap = self._app(name).snapshot()
        if snap.pid is None:
            return []
        return self._launcher.usage(snap.pid, snap.group)

    def running(self) -> list[AppSnapshot]:
        """Apps with a live process, as a daemon that exits leaves them behind."""
        return [s for s in self.snapshots() if s.pid is not None]

    # ----------------------------------------------------------------- commands

    def launch(self, name: str, cause: Cause) -> LaunchResult:
        """Start the app unless it already runs. Raises LaunchError if it cannot start."""
        app = self._app(name)
        if app.removed:
            raise UnknownAppError(f"app {name!r} was removed from the configuration")
        self._admitted()
        if (cause in PEOPLE and app.spec.window is not None and app.state in IDLE
                and app.pid is None):
            focus = self._windows.bring_forward(app.spec, None)  # a window we did not start
            if focus.focused:
                return LaunchResult(app.snapshot(), spawned=False, focus=focus)
        with app.lock:
            app.cancel_restart()
            if cause is not Cause.restart:  # a person asking again resets the crash loop
                app.forget_restarts()
            run = self._begin_launch(app, cause)
            if run is None:
                snapshot = app.snapshot()
        if run is None:  # already running: bring its window forward (outside the lock: X)
            focus = (self._windows.bring_forward(app.spec, snapshot.pid) if cause in PEOPLE
                     else Focus(False, f"not raised for a launch by {cause.value}"))
            log.debug("already_running", app=name, pid=snapshot.pid, source=cause.value,
                      focused=focus.focused, reason=focus.reason)
            return LaunchResult(snapshot, spawned=False, focus=focus)
        return LaunchResult(self._spawn(app, run, app.spec, cause), spawned=True)

    def stop(self, name: str, cause: Cause) -> AppSnapshot:
        """SIGTERM the app's group (SIGKILL after ``stop_timeout_ms``). Stopped apps stay so."""
        app = self._app(name)
        with app.lock:
            self._stop(app, cause)
            return app.snapshot()

    def _stop(self, app: App, cause: Cause) -> None:
        """``stop`` with the app's lock held (taking no other lock: see ``restart``)."""
        app.cancel_restart()
        app.want_relaunch(False)
        moved = self._fire(app, Trigger.stop, cause)
        app.cancel_probe()
        if app.state is AppState.stopping and app.pid is not None:
            # also when already stopping: the app may have announced its exit and hung
            self._terminate(app.pid, app.group, app.spec)
        elif moved and app.state is AppState.stopped:
            app.new_run()

    def restart(self, name: str, cause: Cause) -> AppSnapshot:
        """Stop the app if it runs, then launch it once its processes are gone."""
        app = self._app(name)
        with app.lock:  # never take the roster's lock under it: apply_registry nests them
            self._stop(app, cause)
            if app.state in MOVING:
                app.want_relaunch()
                return app.snapshot()
        return self.launch(name, cause).app

    def notify_launched(
        self, name: str, cause: Cause, pid: int | None = None, lease_s: float | None = None,
        services: Sequence[ServiceSpec] | None = None,
    ) -> AppSnapshot:
        """The app says it started; with a pid, track that process from now on; with
        ``lease_s``, expect a heartbeat at least that often; with ``services``, that is
        what it offers (as ``declare_services``). The answer comes once the record of a
        newly tracked process or lease is on disk, synced outside the app's lock."""
        app = self._app(name)
        with app.lock:
            self._check(app, Trigger.notify_launched, cause, pid=pid)
            if services is not None:
                self.services.check(app.name, services)
            adopted = pid is not None and not self._owns(app, pid)
            if pid is not None and adopted:
                self._launcher.check_adoptable(pid)  # a pid never adoptable: 400, whatever runs
                self._refuse_second_process(app, pid)
                self._track_adopted(app, pid, group=False)
            if services is not None:
                self.services.declare(app.name, services, live=app.state in SERVING)
            self._fire(app, Trigger.notify_launched, cause, pid=pid, lease_secs=lease_s)
            # only a process tracked now: re-announcing one rewrote its record, as not ready
            if pid is not None and adopted and app.pid == pid and app.started_at is not None:
                self._record.started(name, pid, app.group, app.started_at, wait=False)
            if lease_s is not None:
                self._leases.hold(app, lease_s)
                if app.pid is not None:
                    self._record.leased(name, app.pid, lease_s, wait=False)
            snapshot = app.snapshot()
        self._record.durable()
        return snapshot

    def adopt(
        self, name: str, pid: int, group: bool, ready: bool, started_at: float | None = None,
        members: tuple[int, ...] = (), lease_s: float | None = None,
    ) -> AppSnapshot:
        """Take over an app a previous daemon left running (``started_at``: when its process
        was created, as that daemon recorded it; ``members``: its processes, as found;
        ``lease_s``: a lease the app announced there, which runs afresh from now).

        Raises:
            ConflictError: the app already runs here. NoSuchProcessError: the process is gone.
        """
        app = self._app(name)
        with app.lock:
            if app.state not in IDLE or app.pid is not None:
                raise ConflictError(f"app {name!r} is already {app.state.value} here")
            self._track_adopted(app, pid, group, started_at, members)
            self._fire(app, Trigger.notify_launched, Cause.daemon, pid=pid, resumed=True)
            if ready:
                self._fire(app, Trigger.notify_ready, Cause.daemon)
            assert app.started_at is not None
            self._record.started(name, pid, group, app.started_at, ready, wait=False)
            if lease_s is not None:
                self._leases.hold(app, lease_s)
                self._record.leased(name, pid, lease_s, wait=False)
            return app.snapshot()

    def notify_ready(self, name: str, cause: Cause) -> AppSnapshot:
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.notify_ready, cause)
            app.cancel_probe()
            return app.snapshot()

    def notify_stopped(self, name: str, cause: Cause) -> AppSnapshot:
        """The app says it is shutting down: wait for its process, or forget it if none."""
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.notify_stopped, cause)
            app.cancel_probe()
            if app.state is AppState.stopped:
                app.new_run()
            return app.snapshot()

    def heartbeat(self, name: str, cause: Cause) -> Renewal:
        """Renew the app's lease. A heartbeat from an unresponsive app revives it; one from a
        stopped app means ready.

        Raises:
            ConflictError: the app never asked for a lease. Starting one here would make a
                single heartbeat (typed by hand, say) fail a healthy app once it ran out.
        """
        app = self._app(name)
        with app.lock:
            lease_s = app.lease_s or app.spec.lease_secs
            if lease_s is None:
                raise ConflictError(
                    f"app {name!r} holds no heartbeat lease, so there is nothing to renew; "
                    "declare one with lease_secs in its manifest or registration (e.g. "
                    "lease_secs: 30), or send lease_secs when it announces its launch")
            self._fire(app, Trigger.heartbeat, cause)
            self._leases.hold(app, lease_s)
            return Renewal(app.snapshot(), lease_s)

    def drain(self, name: str, cause: Cause) -> AppSnapshot:
        """Start the grace period now, as if the app's lease had run out."""
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.drain, cause)
            return app.snapshot()

    def revive(self, name: str, cause: Cause) -> AppSnapshot:
        """End the grace period: the app is ready again, and its lease starts afresh."""
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.revive, cause)
            return app.snapshot()

    # ---------------------------------------------- apps talking to each other

    def publish(self, source: str, type_: str, data: Mapping[str, Any]) -> BusEvent:
        """An app's own event, on the bus beside the lifecycle events. An app speaks for
        itself: ``source`` must be registered (the event carries its name as registered).

        Raises:
            BadRequestError: ``type_`` is malformed or one of orchestratr's own.
            UnknownAppError: no app is called ``source``.
        """
        if not PUBLISHED_TYPE.fullmatch(type_):
            raise BadRequestError(f"type: {type_[:64]!r} must match {PUBLISHED_TYPE.pattern}")
        if type_ in OWN_TYPES:
            raise BadRequestError(f"type: {type_!r} is one of orchestratr's own event types "
                                  f"({', '.join(sorted(OWN_TYPES))}); pick another")
        app = self._known(source, "source")
        return self.bus.publish(type_, weight_of(data), source=app.name, data=dict(data))

    def send(self, receiver: str, sender: str | None, data: Any, launch: bool,
             cause: Cause) -> Delivery:
        """Post a message to ``receiver``'s inbox; with ``launch``, an idle receiver is
        launched for it (as D-Bus activation does) and reads it once it connects.

        Raises:
            UnknownAppError: the receiver, or the sender, is not registered.
            LaunchError: the receiver could not be launched (the message is kept).
        """
        try:
            app = self._app(receiver)
            origin = None if sender is None else self._known(sender, "from").name
        except UnknownAppError as exc:  # both names go to the log, as for a message sent
            log.warning("message_refused", sender=sender and clip(sender, MAX_NAME),
                        receiver=clip(receiver, MAX_NAME), error=str(exc))
            raise
        inbox = self.inboxes.of(app.name)
        delivered = inbox.readers
        message = inbox.post(origin, data)
        launched = False
        if launch and app.state in IDLE:
            try:
                launched = self.launch(app.name, cause).spawned
            except LaunchError as exc:
                raise LaunchError(f"{exc}; the message is kept in its inbox (id "
                                  f"{message.id})") from None
        log.info("message_sent", sender=origin, receiver=app.name, id=message.id,
                 delivered=delivered, launched=launched)
        return Delivery(message.id, delivered, launched)

    def declare_services(self, name: str, services: Sequence[ServiceSpec]) -> AppSnapshot:
        """Replace what the app offers (its manifest's list too, until the app is gone); live
        at once if it runs.

        Raises:
            BadRequestError: an invalid service. ConflictError: a name another app offers.
        """
        app = self._app(name)
        with app.lock:
            self.services.check(app.name, services)
            self.services.declare(app.name, services, live=app.state in SERVING)
            return app.snapshot()

    def inbox(self, name: str) -> Inbox:
        """The app's inbox. Raises UnknownAppError if there is no such app."""
        return self.inboxes.of(self._app(name).name)

    def _follow_offers(self) -> None:
        """After a registry change: each app offers what its spec says now, and the inboxes
        and declarations of apps that are gone are dropped."""
        apps = self._roster.apps
        for app in apps:
            with app.lock:
                self.services.follow(app.name, app.state in SERVING, app.spec.services)
        self.services.keep(app.name for app in apps)
        self.inboxes.keep(app.name for app in apps)

    def _known(self, name: str, field: str) -> App:
        """The app a body names as ``field``; UnknownAppError if it is not registered."""
        app = self._roster.get(name)
        if app is None:
            raise UnknownAppError(f"{field}: no app {name[:64]!r} is registered")
        return app

    def shutdown(self, stop_apps: bool) -> list[str]:
        """Cancel pending restarts and probes; with ``stop_apps``, stop every app, bounded.

        Each app gets SIGTERM, then SIGKILL at min(its ``stop_timeout_ms``, SHUTDOWN_GRACE_S);
        the exits are awaited for at most SHUTDOWN_WAIT_S, while the tracker still runs (it
        sends the SIGKILLs). Returns the names of the apps still running after that.
        """
        self._closing = True
        self._leases.stop()
        apps = self._roster.apps
        for app in apps:
            with app.lock:
                app.cancel_restart()
                app.cancel_probe()
        if stop_apps:
            deadline = self._mono() + SHUTDOWN_WAIT_S
            for app in apps:
                self._try(self.stop, app.name, Cause.daemon)
            self._wait_stopped(apps, deadline)
        left = [app.name for app in apps if app.pid is not None]
        if stop_apps and left:
            log.warning("apps_left_running", apps=left, waited_s=SHUTDOWN_WAIT_S)
        return left

    def _wait_stopped(self, apps: tuple[App, ...], deadline: float) -> None:
        """Block on the event bus until no app of ``apps`` has a process, or ``deadline``."""
        subscription = self.bus.subscribe(accept=lambda event: event.type == "state")
        try:
            while any(a.pid is not None or a.spawning for a in apps):
                wait = deadline - self._mono()
                if wait <= 0:
                    return
                subscription.get(timeout=min(wait, 0.05))
        finally:
            subscription.close()

    def _terminate(self, pid: int, group: bool, spec: AppSpec) -> None:
        """SIGTERM, then SIGKILL after the app's stop timeout, capped while the daemon shuts
        down."""
        stop_grace_s = spec.stop_timeout_ms / 1000
        if self._closing:
            stop_grace_s = min(stop_grace_s, SHUTDOWN_GRACE_S)
        self._launcher.terminate(pid, group, stop_grace_s)

    # ------------------------------------------------------------ transitions

    def _fire(self, app: App, trigger: Trigger, cause: Cause, **detail: Any) -> bool:
        """Run one trigger under the app's lock. True if the state machine moved.

        Raises:
            InvalidTransitionError: the trigger is not allowed in the current state.
        """
        with app.lock:
            before = app.state
            app.moved()
            if not self._machine.fire(app, trigger, cause=cause, **detail):
                raise InvalidTransitionError(app.name, before.value, trigger.value,
                                             refusal(before, trigger))
            return app.last_entry is not None

    def _check(self, app: App, trigger: Trigger, cause: Cause, **detail: Any) -> None:
        if not allowed(app.state, trigger, app, cause=cause, **detail):
            raise InvalidTransitionError(app.name, app.state.value, trigger.value,
                                         refusal(app.state, trigger))

    def _on_transition(self, transition: Transition) -> None:
        """The machine's one callback: update the app's fields, record, publish, log."""
        app: App = transition.model
        if transition.dst is None:
            return
        held = app.pid
        entry = app.apply(transition.src, transition.trigger, transition.kwargs)
        # the record first (an append, not waited for): whoever sees the app without its
        # process, as a daemon shutting down does, may close the record the next instant
        if held is not None and app.pid != held:
            self._record.ended(app.name, held)
        elif entry.dst is AppState.ready and app.pid is not None:
            self._record.ready(app.name, app.pid)
        self._leases.follow(app, entry)
        self.bus.publish("state", app=app.name, **entry.fields())
        self.services.follow(app.name, app.state in SERVING, app.spec.services)
        previous = app.history[-2].at if len(app.history) > 1 else None
        log.log(
            _log_level(entry),
            "app_transition",
            app=app.name,
            src=entry.src.value,
            dst=entry.dst.value,
            trigger=entry.trigger.value,
            source=entry.cause.value,
            pid=entry.detail.get("pid", app.pid),
            in_state_ms=round((entry.at - previous) * 1000, 3) if previous else None,
            **{k: v for k, v in entry.detail.items() if k != "pid"},
        )

    def _on_lease_due(self, app: App) -> None:
        """A lease or a grace period ran out (lock held): fire what ``leases.expiry`` says."""
        due = leases.expiry(app)
        if due is None:
            app.set_deadline(None)
            return
        self._try(self._fire, app, due.trigger, Cause.lease, **due.detail)
        if due.trigger is Trigger.lease_expired:
            self.bus.publish("lease_expired", app=app.name, **due.detail)
            log.warning("lease_expired", app=app.name, **due.detail)
        elif app.state is AppState.stopping:
            app.want_relaunch()
            assert app.pid is not None
            self._terminate(app.pid, app.group, app.spec)
        # failed: its process stays tracked (``held``), so a launch spawns nothing, a stop
        # ends it, and its exit is still seen

    # ----------------------------------------------------------------- spawning

    def _begin_launch(self, app: App, cause: Cause) -> int | None:
        """Fire ``launch`` (lock held); the run token for the spawn, or None if none is due."""
        if not self._fire(app, Trigger.launch, cause):
            return None
        return app.begin_spawn()

    def _spawn(self, app: App, run: int, spec: AppSpec, cause: Cause) -> AppSnapshot:
        started, born = self._mono(), self._wall()
        try:
            pid = self._launcher.spawn(spec)
        except LaunchError as exc:
            return self._spawn_failed(app, run, spec, cause, str(exc))
        if spec.detached:
            return self._spawned(app, run, spec, cause, pid, born, started)
        # On disk before the launch returns (see RunningRecord); the sync runs while the
        # transitions are recorded and published.
        self._record.started(spec.name, pid, True, born, wait=False)
        snapshot = self._spawned(app, run, spec, cause, pid, born, started)
        self._record.durable()
        return snapshot

    def _spawned(self, app: App, run: int, spec: AppSpec, cause: Cause, pid: int, born: float,
                 started: float) -> AppSnapshot:
        """The spawn made ``pid``: the app is launched (and ready, without a ready_cmd)."""
        spawn_ms = round((self._mono() - started) * 1000, 3)
        with app.lock:
            app.spawn_ended(self._mono())
            if app.run != run or app.state is not AppState.launching:
                return self._spawned_late(app, spec, pid, born)
            if spec.detached:  # fire and forget, but reaped: no zombie, no handle kept
                self._launcher.reap(pid)
                self._fire(app, Trigger.spawned, cause, pid=pid, detached=True,
                           spawn_ms=spawn_ms)
                return app.snapshot()
            app.own_group(born)
            self._fire(app, Trigger.spawned, cause, pid=pid, spawn_ms=spawn_ms)
            self._launcher.track(pid, partial(self._on_exit, app, run))
            if spec.ready_cmd:
                app.on_probe(self._launcher.probe_ready(
                    spec,
                    partial(self._on_probe_ready, app, run),
                    partial(self._on_probe_timeout, app, run),
                ))
            else:
                self._fire(app, Trigger.notify_ready, Cause.readiness)
            return app.snapshot()

    def _spawn_failed(
        self, app: App, run: int, spec: AppSpec, cause: Cause, reason: str
    ) -> AppSnapshot:
        error = f"command {spec.command!r} ({spec.environment}): {reason}"
        with app.lock:
            app.spawn_ended(None)
            if app.run == run and app.state is AppState.launching:
                self._fire(app, Trigger.spawn_failed, cause, error=error)
            elif app.run == run and app.state is AppState.stopping:
                self._fire(app, Trigger.exited, cause, code=None)
        self.bus.publish("launch_failed", app=app.name, source=cause.value, error=error)
        log.error("launch_failed", app=app.name, source=cause.value, error=error)
        raise LaunchError(error)

    def _spawned_late(self, app: App, spec: AppSpec, pid: int, born: float) -> AppSnapshot:
        """The spawn finished after other triggers overtook ``launching`` (lock held).

        The app announced itself (launched, ready) or was asked to stop (stopping). The new
        group becomes the app's, also when the pid the app announced is one of its members;
        if the app announced an unrelated pid, the new group is surplus and terminated, and
        if a stop came first, it is terminated at once.
        """
        if app.pid is not None and not self._launcher.same_group(app.pid, pid):
            self._launcher.track(pid, lambda _exit: self._record.ended(spec.name, pid))
            self._terminate(pid, True, spec)
            return app.snapshot()
        if app.pid is not None and app.pid != pid:
            self._record.ended(app.name, app.pid)
        run = app.take_group(pid, born)
        self._launcher.track(pid, partial(self._on_exit, app, run))
        if app.state not in LIVE:
            self._terminate(pid, True, spec)
        return app.snapshot()

    # ----------------------------------------------------- callbacks from threads

    def _on_exit(self, app: App, run: int, exit: ProcessExit) -> None:
        """The tracker saw the app's processes end."""
        with app.lock:
            if app.run != run:
                return
            app.new_run()
            app.cancel_probe()
            app.exited(exit.code, self._wall())
            if app.state is AppState.failed and app.pid is not None:
                # failed (its lease ran out, its process held), and now the process ended too
                self._try(self._fire, app, Trigger.exited, Cause.tracker, pid=app.pid,
                          code=exit.code, error=app.error)
            elif app.state in IDLE:  # stopped before its spawn ended
                if app.pid is not None:
                    self._record.ended(app.name, app.pid)
                app.lose_process()
                return
            else:
                self._exited(app, exit)
            removed = app.removed
        if removed:
            self._roster.forget(app)

    def _exited(self, app: App, exit: ProcessExit) -> None:
        """A running (or stopping) app's processes ended (lock held): record it, then restart
        or fail it as its policy says."""
        uptime_s = self._mono() - app.started
        stopping = app.state is AppState.stopping
        clean = exit.code in (0, None)
        error = (None if clean or stopping
                 else _exit_error(app.spec, exit, uptime_s < QUICK_EXIT_S))
        decision = None if stopping or app.relaunch or app.removed else restarts.after_exit(
            app.spec, app.restarts, clean=clean, uptime_s=uptime_s, now=self._mono(),
            last_error=error)
        # said with the exit: who tells people about failures knows what follows
        soon: dict[str, object] = (
            {"restart_in_ms": round(decision.delay_s * 1000, 3),
             "restart_attempt": decision.attempt}
            if isinstance(decision, restarts.Restart)
            else {"crash_loop": True} if isinstance(decision, restarts.CrashLoop) else {})
        self._try(self._fire, app, Trigger.exited, Cause.tracker, pid=app.pid,
                  code=exit.code, error=error, uptime_ms=round(uptime_s * 1000, 3), **soon)
        if app.take_relaunch():
            self._launch_later(app, 0.0)
        elif decision is not None:
            self._follow_policy(app, decision)

    def _on_probe_ready(self, app: App, run: int) -> None:
        with app.lock:
            if app.run == run and app.state is AppState.launched:
                self._fire(app, Trigger.notify_ready, Cause.readiness)
                app.on_probe(None)

    def _on_probe_timeout(self, app: App, run: int) -> None:
        with app.lock:
            if app.run == run and app.state is AppState.launched:
                app.on_probe(None)
                log.warning("ready_timeout", app=app.name, ready_cmd=app.spec.ready_cmd,
                            ready_timeout_ms=app.spec.ready_timeout_ms)
                self.bus.publish("ready_timeout", app=app.name)

    # ----------------------------------------------------------------- restarts

    def _follow_policy(self, app: App, decision: restarts.Restart | restarts.CrashLoop) -> None:
        """After the app's own exit (lock held): restart it later, or fail a crash loop."""
        if isinstance(decision, restarts.CrashLoop):
            self._fire(app, Trigger.crash_loop, Cause.restart, error=decision.error)
        elif isinstance(decision, restarts.Restart):  # the exit's line says when (restart_in_ms)
            app.count_restart(decision.record)
            self._launch_later(app, decision.delay_s)

    def _launch_later(self, app: App, delay_s: float) -> None:
        app.on_restart(self._schedule(delay_s, partial(self._restart_due, app, app.run)))

    def _restart_due(self, app: App, run: int) -> None:
        with app.lock:
            if app.run != run or app.cancel_restart_fn is None or self._closing:
                return
            app.on_restart(None)
            spawn_run = self._begin_launch(app, Cause.restart)
            if spawn_run is None:
                return
            app.replaced_run()
        self._try(self._spawn, app, spawn_run, app.spec, Cause.restart)

    # ------------------------------------------------------------------ helpers

    def _new_app(self, spec: AppSpec) -> App:
        app = App(spec, self._wall, changes=self.changes, monotonic=self._mono)
        self._machine.add_model(app)
        return app

    def _app(self, name: str) -> App:
        app = self._roster.get(name)
        if app is None:
            raise UnknownAppError(f"app {name!r} not found")
        return app

    def _owns(self, app: App, pid: int) -> bool:
        """Whether ``pid`` is the app's tracked process or a member of its group (each field
        read once: callers may not hold the app's lock)."""
        tracked, group = app.pid, app.group
        if tracked is None:
            return False
        return pid == tracked or (group and self._launcher.same_group(pid, tracked))

    def _track_adopted(
        self, app: App, pid: int, group: bool, started_at: float | None = None,
        members: tuple[int, ...] = (),
    ) -> None:
        """Track a process we did not spawn (lock held).

        Raises:
            NoSuchProcessError: it is gone. UnadoptablePidError: it is the daemon's own.
        """
        # the time recorded at its spawn, exact, rather than one derived from the boot time
        born = self._launcher.adopt(pid, partial(self._on_exit, app, app.run + 1), group,
                                    members, app.name, born=started_at)
        app.adopt(pid, group, born, self._mono())

    def _refuse_second_process(self, app: App, pid: int) -> None:
        """An announced pid must not take tracking away from a live process (lock held).

        Raises:
            ConflictError: the app already runs as another process (its group is not
                ``pid``'s), or ``pid`` is another app's process.
        """
        if app.state in (*LIVE, AppState.failed) and app.pid is not None:
            what = "process group" if app.group else "process"
            raise ConflictError(
                f"app {app.name!r} already runs as {what} {app.pid}, which pid {pid} is not "
                "part of; stop it first, or announce a pid of that group")
        for other in self._roster.apps:  # no other app's lock under this one: a racy read
            if other is not app and self._owns(other, pid):
                raise ConflictError(f"pid {pid} is a process of app {other.name!r}")

    def _try(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a command on a background path where nobody can take an exception: log it."""
        try:
            return fn(*args, **kwargs)
        except OrchestratrError as exc:
            log.warning("command_refused", command=getattr(fn, "__name__", str(fn)),
                        error=str(exc), code=exc.code)
        return None


def _log_level(entry: HistoryEntry) -> int:
    """Failures are warnings (a crash loop an error), so ``log_level: warning`` shows them."""
    if entry.trigger is Trigger.crash_loop:
        return logging.ERROR
    if FACTS[entry.dst].trouble:
        return logging.WARNING
    return logging.INFO


def _exit_error(spec: AppSpec, exit: ProcessExit, quick: bool) -> str:
    """Name the command, the environment and the reason, as the Go orchestratr did."""
    when = f" within {QUICK_EXIT_S:g} s of launch" if quick else ""
    tail = f": {exit.output_tail}" if exit.output_tail else ""
    return f"command {spec.command!r} ({spec.environment}) {exit.description}{when}{tail}"
