"""The Supervisor: owns every app's state machine and turns commands into transitions.

Hotkeys, the HTTP API, the CLI and the process tracker all come through the methods here, from
any thread. Per app, a trigger and the fields it changes happen under the app's lock; anything
slow (spawning, signalling a group's death, readiness probes) happens outside it, followed by
the trigger that records its outcome (``launch`` -> spawn -> ``spawned`` or ``spawn_failed``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import structlog
from transitions import EventData, MachineError

from orchestratr.errors import (
    ConflictError,
    InvalidTransitionError,
    LaunchError,
    OrchestratrError,
    UnknownAppError,
)
from orchestratr.registry.model import AppSpec, Registry, RestartPolicy
from orchestratr.supervisor.app import App, AppSnapshot, Changes, HistoryEntry
from orchestratr.supervisor.bus import EventBus
from orchestratr.supervisor.focus import SPAWNED, Focus, NoWindows, Windows
from orchestratr.supervisor.launcher import Launcher, ProcessExit
from orchestratr.supervisor.leases import DEFAULT_LEASE_S, LeaseClock
from orchestratr.supervisor.states import (
    ALIVE,
    LIVE,
    REFUSALS,
    RUNNING,
    AppState,
    Source,
    Trigger,
    allowed,
    build_machine,
)

log = structlog.get_logger("orchestratr.supervisor")

QUICK_EXIT_S = 1.0  # a non-zero exit this soon after spawning is a launch failure
STABLE_AFTER_S = 10.0  # an app up this long has its restart backoff reset
CRASH_WINDOW_S = 10.0  # systemd's StartLimitIntervalSec ...
CRASH_BURST = 5  # ... and StartLimitBurst
MAX_BACKOFF_S = 30.0
# Shutdown with stop_apps_on_exit: SIGKILL at min(stop_timeout_ms, this), and wait this long
# in all for the exits, so the whole daemon still stops in under 2 s.
SHUTDOWN_GRACE_S = 1.0
SHUTDOWN_WAIT_S = 1.5
# Who may be shown a window: a launch from autostart or a restart must not steal the focus.
PEOPLE = frozenset({Source.hotkey, Source.api, Source.cli})


@attrs.frozen
class LaunchResult:
    app: AppSnapshot
    spawned: bool  # False: the app was already running (or launching) and nothing was spawned
    focus: Focus = SPAWNED  # what became of its window


@attrs.frozen
class Renewal:
    app: AppSnapshot
    expires_in_secs: float


class Supervisor:
    def __init__(
        self,
        launcher: Launcher,
        bus: EventBus | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        windows: Windows | None = None,
    ) -> None:
        self._launcher = launcher
        self._windows = windows or NoWindows()
        self.bus = bus or EventBus()
        self._mono = monotonic
        self._wall = wall
        self._lock = threading.RLock()  # the apps dict and the registry; taken before app locks
        self._apps: dict[str, App] = {}
        self.changes = Changes()  # moves whenever anything an app list shows changes
        self._roster: tuple[App, ...] = ()  # _apps' values, replaced whole: read without locks
        self._registry = Registry()
        self._machine = build_machine([self._on_transition])
        self._leases = LeaseClock(self._expire_leases, monotonic)
        self._closing = False

    # ----------------------------------------------------------------- registry

    @property
    def registry(self) -> Registry:
        return self._registry

    def apply_registry(
        self,
        registry: Registry,
        source: Source = Source.reload,
        autostart: bool = True,
        announce: bool = True,
    ) -> list[str]:
        """Swap in a new registry atomically; return the names it added.

        Running apps are never touched: a changed spec is used at the next launch, and an app
        that is gone stays tracked until its process exits. Added ``autostart`` apps launch
        (unless ``autostart`` is False: the daemon first adopts what is still running).
        ``announce`` publishes a ``reloaded`` event; a registration announces itself instead.
        """
        with self._lock:
            added = [spec.name for spec in registry.apps if spec.name not in self._apps]
            for spec in registry.apps:
                self._upsert(spec)
            removed = [name for name in self._apps if registry.get(name) is None]
            for name in removed:
                self._retire(self._apps[name])
            self._registry = registry
        if announce:
            self.bus.publish("reloaded", source=source.value, apps=len(registry.apps),
                             added=added, removed=removed)
        log.info("registry_applied", source=source.value, apps=len(registry.apps),
                 added=added, removed=removed)
        if autostart:
            self.autostart(source, added)
        return added

    def autostart(self, source: Source, names: list[str] | None = None) -> None:
        """Launch the ``autostart`` apps (of ``names``, or all) that are not running."""
        for spec in self._registry.apps:
            if spec.autostart and (names is None or spec.name in names):
                self._try(self.launch, spec.name, source)

    def find_chord(self, chord: str) -> str:
        spec = self._registry.by_chord(chord)
        if spec is None:
            raise UnknownAppError(f"no app with chord {chord!r}")
        return spec.name

    # -------------------------------------------------------------------- reads

    def snapshot(self, name: str, with_history: bool = True) -> AppSnapshot:
        return self._app(name).snapshot(with_history)

    def snapshots(self) -> list[AppSnapshot]:
        return [app.snapshot() for app in self._roster]

    def running(self) -> list[AppSnapshot]:
        """Apps with a live process, as a daemon that exits leaves them behind."""
        return [s for s in self.snapshots() if s.pid is not None]

    # ----------------------------------------------------------------- commands

    def launch(self, name: str, source: Source) -> LaunchResult:
        """Start the app unless it already runs. Raises LaunchError if it cannot start."""
        app = self._app(name)
        if app.removed:
            raise UnknownAppError(f"app {name!r} was removed from the configuration")
        if source in PEOPLE and app.spec.window is not None and app.state not in ALIVE:
            focus = self._windows.bring_forward(app.spec, None)  # a window we did not start
            if focus.focused:
                return LaunchResult(app.snapshot(), spawned=False, focus=focus)
        with app.lock:
            self._cancel_restart(app)
            if source is not Source.restart:  # a person asking again resets the crash loop
                app.crashes = 0
                app.starts = ()
            run = self._begin_launch(app, source)
            if run is None:
                snapshot = app.snapshot()
        if run is None:  # already running: bring its window forward (outside the lock: X)
            focus = (self._windows.bring_forward(app.spec, snapshot.pid) if source in PEOPLE
                     else Focus(False, f"not raised for a launch by {source.value}"))
            log.debug("already_running", app=name, pid=snapshot.pid, source=source.value,
                      focused=focus.focused, reason=focus.reason)
            return LaunchResult(snapshot, spawned=False, focus=focus)
        return LaunchResult(self._spawn(app, run, app.spec, source), spawned=True)

    def stop(self, name: str, source: Source) -> AppSnapshot:
        """SIGTERM the app's group (SIGKILL after ``stop_timeout_ms``). Stopped apps stay so."""
        app = self._app(name)
        with app.lock:
            self._stop(app, source)
            return app.snapshot()

    def _stop(self, app: App, source: Source) -> None:
        """``stop`` with the app's lock held (taking no other lock: see ``restart``)."""
        self._cancel_restart(app)
        app.relaunch = False
        moved = self._fire(app, Trigger.stop, source)
        self._cancel_probe(app)
        if app.state is AppState.stopping and app.pid is not None:
            # also when already stopping: the app may have announced its exit and hung
            self._launcher.terminate(app.pid, app.group, self._grace_s(app.spec))
        elif moved and app.state is AppState.stopped:
            app.run += 1

    def restart(self, name: str, source: Source) -> AppSnapshot:
        """Stop the app if it runs, then launch it once its processes are gone."""
        app = self._app(name)
        with app.lock:  # never take the supervisor's lock under it: apply_registry nests them
            self._stop(app, source)
            if app.state in (AppState.stopping, AppState.launching):
                app.relaunch = True
                return app.snapshot()
        return self.launch(name, source).app

    def notify_launched(
        self, name: str, source: Source, pid: int | None = None, lease_secs: float | None = None
    ) -> AppSnapshot:
        """The app says it started; with a pid, track that process from now on; with
        ``lease_secs``, expect a heartbeat at least that often."""
        app = self._app(name)
        with app.lock:
            self._check(app, Trigger.notify_launched, source, pid=pid)
            if pid is not None and not self._owns(app, pid):
                self._refuse_second_process(app, pid)
                self._adopt(app, pid, group=False)
            self._fire(app, Trigger.notify_launched, source, pid=pid, lease_secs=lease_secs)
            if lease_secs is not None:
                self._hold_lease(app, lease_secs)
            return app.snapshot()

    def resume(
        self, name: str, pid: int, group: bool, ready: bool, started_at: float | None = None
    ) -> AppSnapshot:
        """Take over an app a previous daemon left running (``started_at``: when its process
        was created, as that daemon recorded it).

        Raises:
            ConflictError: the app already runs here. NoSuchProcessError: the process is gone.
        """
        app = self._app(name)
        with app.lock:
            if app.state not in (AppState.stopped, AppState.failed):
                raise ConflictError(f"app {name!r} is already {app.state.value} here")
            self._adopt(app, pid, group, started_at)
            self._fire(app, Trigger.notify_launched, Source.daemon, pid=pid, resumed=True)
            if ready:
                self._fire(app, Trigger.notify_ready, Source.daemon)
            return app.snapshot()

    def notify_ready(self, name: str, source: Source) -> AppSnapshot:
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.notify_ready, source)
            self._cancel_probe(app)
            return app.snapshot()

    def notify_stopped(self, name: str, source: Source) -> AppSnapshot:
        """The app says it is shutting down: wait for its process, or forget it if none."""
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.notify_stopped, source)
            self._cancel_probe(app)
            if app.state is AppState.stopped:
                app.run += 1
            return app.snapshot()

    def heartbeat(self, name: str, source: Source) -> Renewal:
        """Renew the app's lease, starting one (the default length) if it holds none. A
        heartbeat from an unresponsive app revives it; one from a stopped app means ready."""
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.heartbeat, source)
            secs = app.lease_secs or app.spec.lease_secs or DEFAULT_LEASE_S
            self._hold_lease(app, secs)
            return Renewal(app.snapshot(), secs)

    def drain(self, name: str, source: Source) -> AppSnapshot:
        """Start the grace period now, as if the app's lease had run out."""
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.drain, source)
            return app.snapshot()

    def revive(self, name: str, source: Source) -> AppSnapshot:
        """End the grace period: the app is ready again, and its lease starts afresh."""
        app = self._app(name)
        with app.lock:
            self._fire(app, Trigger.revive, source)
            return app.snapshot()

    def shutdown(self, stop_apps: bool) -> list[str]:
        """Cancel pending restarts and probes; with ``stop_apps``, stop every app, bounded.

        Each app gets SIGTERM, then SIGKILL at min(its ``stop_timeout_ms``, SHUTDOWN_GRACE_S);
        the exits are awaited for at most SHUTDOWN_WAIT_S, while the tracker still runs (it
        sends the SIGKILLs). Returns the names of the apps still running after that.
        """
        self._closing = True
        self._leases.stop()
        with self._lock:
            apps = list(self._apps.values())
        for app in apps:
            with app.lock:
                self._cancel_restart(app)
                self._cancel_probe(app)
        if stop_apps:
            deadline = self._mono() + SHUTDOWN_WAIT_S
            for app in apps:
                self._try(self.stop, app.name, Source.daemon)
            self._wait_stopped(apps, deadline)
        left = [app.name for app in apps if app.pid is not None]
        if stop_apps and left:
            log.warning("apps_left_running", apps=left, waited_s=SHUTDOWN_WAIT_S)
        return left

    def _wait_stopped(self, apps: list[App], deadline: float) -> None:
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

    def _grace_s(self, spec: AppSpec) -> float:
        """How long a stopped app may take before SIGKILL: its own stop timeout, capped
        while the daemon shuts down."""
        grace = spec.stop_timeout_ms / 1000
        return min(grace, SHUTDOWN_GRACE_S) if self._closing else grace

    # ------------------------------------------------------------ transitions

    def _fire(self, app: App, trigger: Trigger, source: Source, **detail: Any) -> bool:
        """Run one trigger under the app's lock. True if the state machine moved.

        Raises:
            InvalidTransitionError: the trigger is not allowed in the current state.
        """
        with app.lock:
            before = app.state
            app.last_entry = None
            try:
                accepted = self._machine.fire(app, trigger, source=source, **detail)
            except MachineError:
                accepted = False
            if not accepted:
                reason = REFUSALS.get((before, trigger), "")
                raise InvalidTransitionError(app.name, before.value, trigger.value, reason)
            return app.last_entry is not None

    def _check(self, app: App, trigger: Trigger, source: Source, **detail: Any) -> None:
        if not allowed(app.state, trigger, app, source=source, **detail):
            reason = REFUSALS.get((app.state, trigger), "")
            raise InvalidTransitionError(app.name, app.state.value, trigger.value, reason)

    def _on_transition(self, event: EventData) -> None:
        """The machine's one callback: update the app's fields, record, publish, log."""
        app: App = event.model
        entry = app.apply(event)
        app.last_entry = entry
        if entry is None:
            return
        self._follow_lease(app, entry)
        self.bus.publish("state", app=app.name, **entry.fields())
        previous = app.history[-2].at if len(app.history) > 1 else None
        log.log(
            _log_level(entry),
            "app_transition",
            app=app.name,
            src=entry.src.value,
            dst=entry.dst.value,
            trigger=entry.trigger.value,
            source=entry.source.value,
            pid=entry.detail.get("pid", app.pid),
            in_state_ms=round((entry.at - previous) * 1000, 3) if previous else None,
            **{k: v for k, v in entry.detail.items() if k != "pid"},
        )

    # ------------------------------------------------------------------- leases

    def _hold_lease(self, app: App, secs: float) -> None:
        """The app holds a lease of ``secs`` from now (lock held)."""
        app.lease_secs = secs
        if app.state in RUNNING:
            self._set_deadline(app, secs)

    def _follow_lease(self, app: App, entry: HistoryEntry) -> None:
        """Keep the lease in step with a transition (lock held).

        A lease runs while the app runs, from its manifest or from whoever started it; while
        unresponsive the deadline is the grace period's end; a stop ends the lease.
        """
        if entry.dst in RUNNING:
            if entry.src not in (*RUNNING, AppState.unresponsive):
                app.lease_secs = app.spec.lease_secs
            app.deadline = None
            if app.lease_secs is not None:
                self._set_deadline(app, app.lease_secs)
        elif entry.dst is AppState.unresponsive:
            self._set_deadline(app, app.spec.grace_secs)
        else:
            app.lease_secs = app.deadline = None

    def _set_deadline(self, app: App, secs: float) -> None:
        app.deadline = self._mono() + secs
        self._leases.schedule(app.deadline)

    def _expire_leases(self, now: float) -> float | None:
        """The lease clock's callback: expire what is due, return the next deadline."""
        upcoming = []
        for app in self._roster:
            with app.lock:
                if app.deadline is not None and app.deadline <= now:
                    self._expire(app)
                if app.deadline is not None:
                    upcoming.append(app.deadline)
        return min(upcoming, default=None)

    def _expire(self, app: App) -> None:
        """A lease or a grace period ran out (lock held)."""
        if app.state in RUNNING:
            lease = app.lease_secs
            self._try(self._fire, app, Trigger.lease_expired, Source.lease, lease_secs=lease,
                      grace_secs=app.spec.grace_secs)
            self.bus.publish("lease_expired", app=app.name, lease_secs=lease,
                             grace_secs=app.spec.grace_secs)
            log.warning("lease_expired", app=app.name, lease_secs=lease,
                        grace_secs=app.spec.grace_secs)
            return
        if app.state is not AppState.unresponsive:
            app.deadline = None
            return
        drained = app.history[-1].trigger is Trigger.drain if app.history else False
        error = ("drained and not revived within the grace period" if drained
                 else "heartbeat lease expired")
        restart = app.spec.restart is not RestartPolicy.never
        self._try(self._fire, app, Trigger.grace_expired, Source.lease, error=error,
                  restart=restart or None)
        if app.state is AppState.stopping:
            app.relaunch = True
            assert app.pid is not None
            self._launcher.terminate(app.pid, app.group, self._grace_s(app.spec))
        elif app.state is AppState.failed:
            app.run += 1  # its process is left alone, and its exit no longer concerns the app

    # ----------------------------------------------------------------- spawning

    def _begin_launch(self, app: App, source: Source) -> int | None:
        """Fire ``launch`` (lock held); the run token for the spawn, or None if none is due."""
        if not self._fire(app, Trigger.launch, source):
            return None
        app.run += 1
        app.spawning = True
        return app.run

    def _spawn(self, app: App, run: int, spec: AppSpec, source: Source) -> AppSnapshot:
        started, born = self._mono(), self._wall()
        try:
            pid = self._launcher.spawn(spec)
        except LaunchError as exc:
            return self._spawn_failed(app, run, spec, source, str(exc))
        spawn_ms = round((self._mono() - started) * 1000, 3)
        with app.lock:
            app.spawning = False
            app.started = self._mono()
            app.note_start(app.started)
            if app.run != run or app.state is not AppState.launching:
                return self._spawned_late(app, spec, pid, born)
            if spec.detached:  # fire and forget, but reaped: no zombie, no handle kept
                self._launcher.reap(pid)
                self._fire(app, Trigger.spawned, source, pid=pid, detached=True,
                           spawn_ms=spawn_ms)
                return app.snapshot()
            app.group, app.started_at = True, born
            self._fire(app, Trigger.spawned, source, pid=pid, spawn_ms=spawn_ms)
            self._launcher.track(pid, partial(self._on_exit, app, run))
            if spec.ready_cmd:
                app.cancel_probe = self._launcher.probe_ready(
                    spec,
                    partial(self._on_probe_ready, app, run),
                    partial(self._on_probe_timeout, app, run),
                )
            else:
                self._fire(app, Trigger.notify_ready, Source.readiness)
            return app.snapshot()

    def _spawn_failed(
        self, app: App, run: int, spec: AppSpec, source: Source, reason: str
    ) -> AppSnapshot:
        error = f"command {spec.command!r} ({spec.environment}): {reason}"
        with app.lock:
            app.spawning = False
            if app.run == run and app.state is AppState.launching:
                self._fire(app, Trigger.spawn_failed, source, error=error)
            elif app.run == run and app.state is AppState.stopping:
                self._fire(app, Trigger.exited, source, code=None)
        self.bus.publish("launch_failed", app=app.name, source=source.value, error=error)
        log.error("launch_failed", app=app.name, source=source.value, error=error)
        raise LaunchError(error)

    def _spawned_late(self, app: App, spec: AppSpec, pid: int, born: float) -> AppSnapshot:
        """The spawn finished after other triggers overtook ``launching`` (lock held).

        The app announced itself (launched, ready) or was asked to stop (stopping). The new
        group becomes the app's, also when the pid the app announced is one of its members;
        if the app announced an unrelated pid, the new group is surplus and terminated, and
        if a stop came first, it is terminated at once.
        """
        if app.pid is not None and not self._launcher.same_group(app.pid, pid):
            self._launcher.track(pid, lambda _exit: None)
            self._launcher.terminate(pid, True, self._grace_s(spec))
            return app.snapshot()
        app.run += 1
        app.pid, app.group, app.started_at = pid, True, born
        self._launcher.track(pid, partial(self._on_exit, app, app.run))
        if app.state not in LIVE:
            self._launcher.terminate(pid, True, self._grace_s(spec))
        return app.snapshot()

    # ----------------------------------------------------- callbacks from threads

    def _on_exit(self, app: App, run: int, exit: ProcessExit) -> None:
        """The tracker saw the app's process (group) end."""
        with app.lock:
            if app.run != run:
                return
            app.run += 1
            self._cancel_probe(app)
            if app.state not in (AppState.stopping, *ALIVE):  # stopped before its spawn ended
                app.pid, app.group = None, False
                return
            uptime = self._mono() - app.started
            stopping = app.state is AppState.stopping
            clean = exit.code in (0, None)
            error = None if clean or stopping else _exit_error(app.spec, exit, uptime < QUICK_EXIT_S)
            self._try(self._fire, app, Trigger.exited, Source.tracker, pid=app.pid,
                      code=exit.code, error=error, uptime_ms=round(uptime * 1000, 3))
            relaunch, app.relaunch = app.relaunch, False
            if relaunch:
                self._launch_later(app, 0.0)
            elif not stopping and not app.removed and _wants_restart(app.spec, clean):
                self._schedule_restart(app, uptime, error)
            removed = app.removed
        if removed:
            self._forget(app)

    def _on_probe_ready(self, app: App, run: int) -> None:
        with app.lock:
            if app.run == run and app.state is AppState.launched:
                self._fire(app, Trigger.notify_ready, Source.readiness)
                app.cancel_probe = None

    def _on_probe_timeout(self, app: App, run: int) -> None:
        with app.lock:
            if app.run == run and app.state is AppState.launched:
                app.cancel_probe = None
                log.warning("ready_timeout", app=app.name, ready_cmd=app.spec.ready_cmd,
                            ready_timeout_ms=app.spec.ready_timeout_ms)
                self.bus.publish("ready_timeout", app=app.name)

    # ----------------------------------------------------------------- restarts

    def _schedule_restart(self, app: App, uptime: float, error: str | None) -> None:
        now = self._mono()
        if uptime >= STABLE_AFTER_S:
            app.crashes = 0
        recent = sum(1 for t in app.starts if now - t < CRASH_WINDOW_S)
        if recent >= CRASH_BURST:
            why = f"crash loop: started {recent} times within {CRASH_WINDOW_S:g} s"
            self._fire(app, Trigger.crash_loop, Source.restart,
                       error=f"{why}; not restarting until launched again (last: {error or 'exited'})")
            return
        delay = min(app.spec.restart_delay_ms / 1000 * 2**app.crashes, MAX_BACKOFF_S)
        app.crashes += 1
        log.info("restart_scheduled", app=app.name, delay_ms=round(delay * 1000, 3),
                 attempt=app.crashes)
        self._launch_later(app, delay)

    def _launch_later(self, app: App, delay: float) -> None:
        timer = threading.Timer(delay, self._restart_due, (app, app.run))
        timer.daemon = True
        app.restart_timer = timer
        timer.start()

    def _restart_due(self, app: App, run: int) -> None:
        with app.lock:
            if app.run != run or app.restart_timer is None or self._closing:
                return
            app.restart_timer = None
            run = self._begin_launch(app, Source.restart)
            if run is None:
                return
        self._try(self._spawn, app, run, app.spec, Source.restart)

    def _cancel_restart(self, app: App) -> None:
        if app.restart_timer is not None:
            app.restart_timer.cancel()
            app.restart_timer = None

    def _cancel_probe(self, app: App) -> None:
        if app.cancel_probe is not None:
            app.cancel_probe()
            app.cancel_probe = None

    # ------------------------------------------------------------------ helpers

    def _app(self, name: str) -> App:
        with self._lock:
            app = self._apps.get(name)
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

    def _adopt(self, app: App, pid: int, group: bool, started_at: float | None = None) -> None:
        """Track a process we did not spawn (lock held).

        Raises:
            NoSuchProcessError: it is gone. UnadoptablePidError: it is the daemon's own.
        """
        born = self._launcher.adopt(pid, partial(self._on_exit, app, app.run + 1), group)
        app.run += 1
        app.group, app.started = group, self._mono()
        app.started_at = born if started_at is None else min(born, started_at)
        if app.state in LIVE:
            app.pid = pid

    def _refuse_second_process(self, app: App, pid: int) -> None:
        """An announced pid must not take tracking away from a live process (lock held).

        Raises:
            ConflictError: the app already runs as another process (its group is not
                ``pid``'s), or ``pid`` is another app's process.
        """
        if app.state in LIVE and app.pid is not None:
            what = "process group" if app.group else "process"
            raise ConflictError(
                f"app {app.name!r} already runs as {what} {app.pid}, which pid {pid} is not "
                "part of; stop it first, or announce a pid of that group")
        for other in self._roster:  # no other app's lock under this one: a racy read is enough
            if other is not app and self._owns(other, pid):
                raise ConflictError(f"pid {pid} is a process of app {other.name!r}")

    def _upsert(self, spec: AppSpec) -> None:
        app = self._apps.get(spec.name)
        if app is None:
            app = App(spec, self._wall, changes=self.changes, monotonic=self._mono)
            self._machine.add_model(app)
            self._apps[spec.name] = app
            self._roster_changed()
            return
        with app.lock:
            app.spec, app.removed = spec, False

    def _retire(self, app: App) -> None:
        """An app left the registry: forget it now, or once its process has exited."""
        with app.lock:
            app.removed = True
            self._cancel_restart(app)
            idle = app.state in (AppState.stopped, AppState.failed)
        if idle:
            self._forget(app)

    def _forget(self, app: App) -> None:
        with self._lock:
            if app.removed and self._apps.get(app.name) is app:
                del self._apps[app.name]
                self._roster_changed()
                self._machine.remove_model(app)
                log.info("app_forgotten", app=app.name)

    def _roster_changed(self) -> None:
        """After ``_apps`` changed (lock held). The roster is replaced before the change count
        moves, so a reader that read the count first never pairs it with an older roster."""
        self._roster = tuple(self._apps.values())
        self.changes.bump()

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
    if entry.dst in (AppState.failed, AppState.unresponsive):
        return logging.WARNING
    return logging.INFO


def _wants_restart(spec: AppSpec, clean: bool) -> bool:
    return spec.restart is RestartPolicy.always or (
        spec.restart is RestartPolicy.on_failure and not clean
    )


def _exit_error(spec: AppSpec, exit: ProcessExit, quick: bool) -> str:
    """Name the command, the environment and the reason, as the Go orchestratr did."""
    when = f" within {QUICK_EXIT_S:g} s of launch" if quick else ""
    tail = f": {exit.output_tail}" if exit.output_tail else ""
    return f"command {spec.command!r} ({spec.environment}) {exit.description}{when}{tail}"
