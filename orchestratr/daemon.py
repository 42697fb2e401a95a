"""The composition root: build every part, start them in order, stop them in reverse.

    lock -> config -> logging -> tracker, output -> record -> supervisor (+ adopted
    survivors) -> API -> autostart -> watcher -> hotkeys

Survivors of an earlier daemon are adopted before anything can launch (API, autostart,
hotkeys), with one scan of the process table for all of them.

Nothing here decides anything about apps; it wires the parts and turns signals into a clean
shutdown.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import structlog

from orchestratr import __version__, host, threads
from orchestratr.api.routes import Api
from orchestratr.api.server import ApiServer
from orchestratr.applog import AppLogs
from orchestratr.desktop.notifications import Notifier
from orchestratr.errors import (
    ConfigError,
    DaemonRunningError,
    NoSuchProcessError,
    OrchestratrError,
)
from orchestratr.fds import readable
from orchestratr.hotkeys.backend import default_backend
from orchestratr.hotkeys.service import HotkeyService
from orchestratr.hotkeys.x11.chord_table import ChordWindow
from orchestratr.hotkeys.x11.ewmh import X11Windows
from orchestratr.lockfile import DaemonLock
from orchestratr.logs import configure_logging, set_level
from orchestratr.paths import CONFIG_DIR_ENV, Paths
from orchestratr.processes import output, proctable, survivors
from orchestratr.processes.journal import Journal
from orchestratr.processes.spawn import ProcessLauncher
from orchestratr.processes.tracker import ProcessTracker
from orchestratr.registry.load import ensure_config, load_registry, load_without_config
from orchestratr.registry.model import Registry
from orchestratr.registry.runtime import RuntimeApps
from orchestratr.registry.watch import ConfigWatcher
from orchestratr.supervisor.app import AppSnapshot
from orchestratr.supervisor.bus import EventBus
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.states import AppState, Cause

log = structlog.get_logger("orchestratr.daemon")


@attrs.frozen
class DaemonOptions:
    config_dir: str | None = None
    port: int | None = None  # overrides api_port (used by the HTTP API)
    hotkeys: bool = True  # False: --no-hotkeys
    log_file: Path | None = None


@attrs.frozen
class _Parts:
    """What ``_build`` made that only starting and stopping need."""

    registry: Registry
    startup_errors: ConfigError | None
    registry_problems: list[str]
    stop_logging: Callable[[], None]
    tracker: ProcessTracker
    output: output.OutputPump | None  # None where apps write their files themselves
    watcher: ConfigWatcher


class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.paths = Paths.resolve(options.config_dir)
        self._stop = threading.Event()
        # The main thread sleeps on this pipe, not on an Event: a signal the kernel hands to
        # another thread never interrupts a lock wait, so SIGTERM could go unheard for good;
        # set_wakeup_fd writes to the pipe whichever thread the signal lands on.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._status = 0  # the exit status once stopped: non-zero when a part failed for good
        self._reload_lock = threading.Lock()
        self.supervisor: Supervisor | None = None
        self.api: ApiServer | None = None
        self.hotkeys: HotkeyService | None = None
        self.started = threading.Event()  # set once every part is up
        self._runtime = RuntimeApps(self.paths.registered_file)
        self._files = Registry()  # the config files' last good registry, before registrations
        self._journal = Journal(self.paths.running_file, self.paths.running_journal)
        self._lock = DaemonLock(self.paths.config_dir, self.paths.lock_file)
        self._desktop: tuple[Notifier, ChordWindow] | tuple[()] = ()
        self._rejected: list[str] = []  # why the config files are rejected now (the last load)
        self._launcher: ProcessLauncher | None = None

    def run(self) -> int:
        """Run in the foreground until SIGTERM or SIGINT; return the exit status (2: the
        log file cannot be written)."""
        log_file = self.options.log_file or self.paths.daemon_log
        problem = _unwritable(log_file)
        if problem:
            print(f"orchestratr: cannot write the log file {log_file}: {problem}",
                  file=sys.stderr)
            return 2
        try:
            ensure_config(self.paths)
            self._lock.acquire()
        except (OSError, DaemonRunningError) as exc:
            print(f"orchestratr: {exc}", file=sys.stderr)
            return 1
        try:
            return self._run_locked()
        finally:
            self._lock.release()

    def request_stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def _wait_for_stop(self) -> None:
        """Sleep until ``request_stop`` (a signal's handler runs as the main thread wakes)."""
        while not self._stop.is_set():
            readable([self._wake_r])
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass

    def _fatal(self, message: str) -> None:
        """A part failed for good (see ``threads``): stop with status 1 and say why."""
        print(f"orchestratr: {message}", file=sys.stderr, flush=True)
        log.critical("daemon_failing", reason=message)
        self._status = 1
        self.request_stop()

    def reload(self, cause: Cause = Cause.reload) -> Registry:
        """Load the config again and apply it; on error keep the current registry.

        Raises:
            ConfigError: the new config is invalid (every problem is logged too).
        """
        assert self.supervisor is not None
        with self._reload_lock:
            started = time.monotonic()
            try:
                self._files = load_registry(self.paths, previous=self._files)
            except ConfigError as exc:
                self._rejected = list(exc.errors)
                _log_problems(exc.warnings, exc.errors)
                self.supervisor.bus.publish("reload_failed", source=cause.value,
                                            errors=exc.errors)
                log.error("reload_failed", source=cause.value, errors=len(exc.errors))
                raise
            self._rejected = []
            registry = self._runtime.merge(self._files)
            _log_problems(list(registry.warnings), list(registry.skipped))
            self._apply(registry, cause)
            if registry.skipped:
                self.supervisor.bus.publish("config_skipped", source=cause.value,
                                            errors=list(registry.skipped))
            log.info("reloaded", source=cause.value, apps=len(registry.apps),
                     duration_ms=round((time.monotonic() - started) * 1000, 3))
            return registry

    def config_errors(self) -> list[str]:
        """What is rejected in the config files now: config.yml's errors (the last good
        registry stays active) and the drop-ins left out for theirs."""
        skipped = list(self.supervisor.registry.skipped) if self.supervisor else []
        return self._rejected + skipped

    def register(self, fields: Any) -> tuple[AppSnapshot, list[str]]:
        """Add an app through the API; return it and the warnings about its fields.

        Raises:
            ConfigError: invalid fields. ConflictError: its name or chord is taken.
        """
        assert self.supervisor is not None
        with self._reload_lock:
            spec, warnings = self._runtime.add(fields, self.supervisor.registry)
            self._apply(self._runtime.merge(self._files), Cause.api, announce=False)
        self.supervisor.bus.publish("registered", app=spec.name, source=Cause.api.value)
        log.info("app_registered", app=spec.name, chord=spec.chord, warnings=warnings)
        self.supervisor.autostart(Cause.api, [spec.name])
        return self.supervisor.snapshot(spec.name, with_history=False), warnings

    def unregister(self, name: str, keep_running: bool = False) -> AppSnapshot:
        """Remove an app registered through the API, stopping it first unless ``keep_running``
        (it is then tracked until it exits, like an app deleted from the config).

        Raises:
            UnknownAppError: no such app. ConflictError: the app belongs to a config file.
        """
        assert self.supervisor is not None
        with self._reload_lock:
            spec = self._runtime.remove(name, self.supervisor.registry)
            active = self.supervisor.registry.get(name)
            if active is None or active.declared_in != spec.declared_in:  # shadowed: the
                # registration never ran here (a file's app of its name, if any, is not ours)
                snapshot = AppSnapshot(spec, AppState.stopped, None, False, None, None, None,
                                       None, True)
            else:
                if not keep_running:
                    self.supervisor.stop(name, Cause.api)  # valid in every state
                snapshot = self.supervisor.snapshot(name, with_history=False)
            self._apply(self._runtime.merge(self._files), Cause.api, announce=False)
        self.supervisor.bus.publish("unregistered", app=name, source=Cause.api.value,
                                    kept_running=keep_running)
        log.info("app_unregistered", app=name, kept_running=keep_running)
        return snapshot

    def _apply(self, registry: Registry, cause: Cause, announce: bool = True) -> None:
        """Swap in ``registry``; adopt the survivors whose app it brings back before any
        ``autostart`` app it adds is launched (a registration launches its own)."""
        assert self.supervisor is not None
        set_level(registry.settings.log_level)
        added = self.supervisor.apply_registry(registry, cause, autostart=False,
                                               announce=announce)
        self._adopt_survivors()
        if announce:
            self.supervisor.autostart(cause, added)
        if self.hotkeys is not None:
            self.hotkeys.configure(registry.settings.leader_key,
                                   registry.settings.chord_timeout_ms,
                                   registry.settings.chord_hint_ms)

    def _run_locked(self) -> int:
        threads.reset()
        threads.on_fatal(self._fatal)
        parts = self._build()
        restore = _catch_signals(self.request_stop, parts.watcher.poke,
                                 parts.tracker.children_changed, self._wake_w)
        try:
            self._start(parts)
            self._wait_for_stop()
            log.info("daemon_stopping")
        except OSError as exc:
            log.error("daemon_start_failed", error=str(exc))
            return 1
        finally:
            restore()
            self._shutdown(parts)
        return self._status

    def _build(self) -> _Parts:
        """Every part, built but not started; logging is configured first, so the rest can
        log from the start."""
        self._files, startup_errors = _initial_registry(self.paths)
        self._rejected = list(startup_errors.errors) if startup_errors else []
        registry_problems = self._runtime.load()
        registry = self._runtime.merge(self._files)
        stop_logging = configure_logging(
            registry.settings.log_level, self.options.log_file or self.paths.daemon_log
        )
        _raise_fd_limit()
        subreaper = proctable.become_subreaper()
        tracker = ProcessTracker(subreaper=subreaper, config_dir=self._marker[CONFIG_DIR_ENV])
        logs = AppLogs(self.paths.app_log)
        pump = output.OutputPump(logs.written) if output.HAVE_PIPES else None
        self._launcher = launcher = ProcessLauncher(
            self.paths.app_log, tracker, extra_env=self._marker, output=pump)
        # ids from the wall clock in µs keep growing across restarts (see EventBus)
        bus = EventBus(first_id=time.time_ns() // 1000)
        self.supervisor = supervisor = Supervisor(launcher, bus, record=self._journal,
                                                  windows=X11Windows(tracker.owns))
        port = self.options.port if self.options.port is not None else registry.settings.api_port
        settings = registry.settings
        self.hotkeys = hotkeys = HotkeyService(
            settings.leader_key, settings.chord_timeout_ms, hint_ms=settings.chord_hint_ms,
            launch=lambda name: supervisor.launch(name, Cause.hotkey),
            chords=lambda: supervisor.registry.chords,
            publish=supervisor.bus.publish,
            backend=default_backend(),
        )
        self.api = ApiServer(Api(supervisor, self, hotkeys, openapi=_openapi_document, logs=logs),
                             port, self.paths.port_file)
        watcher = ConfigWatcher(self.paths, self._reload_quietly, self._config_dir_recreated)
        self._desktop = (
            Notifier(bus, enabled=lambda: supervisor.registry.settings.notifications),
            ChordWindow(bus, rows=lambda: sorted(
                (s.spec.chord or "", s.name, s.state.value) for s in supervisor.snapshots())))
        return _Parts(registry, startup_errors, registry_problems, stop_logging, tracker,
                      pump, watcher)

    def _start(self, parts: _Parts) -> None:
        """Start in dependency order: exits are watched before anything is adopted or
        launched, and the port file exists before any app starts (apps find the API by it)."""
        assert self.supervisor is not None
        assert self.api is not None
        assert self.hotkeys is not None
        registry = parts.registry
        parts.tracker.start()
        if parts.output is not None:
            parts.output.start()
        if parts.startup_errors:
            _log_problems(parts.startup_errors.warnings, parts.startup_errors.errors)
            log.error("config_invalid_at_startup", errors=len(parts.startup_errors.errors),
                      hint="starting with the default settings and the apps of apps.d/ "
                           "and registered.json only; fix config.yml and it reloads "
                           "by itself")
        _log_problems(list(registry.warnings), list(registry.skipped) + parts.registry_problems)
        for follower in self._desktop:
            follower.start()  # before anything can fail
        bus = self.supervisor.bus
        if parts.startup_errors:
            bus.publish("reload_failed", source=Cause.daemon.value,
                        errors=parts.startup_errors.errors)
        if registry.skipped:
            bus.publish("config_skipped", source=Cause.daemon.value,
                        errors=list(registry.skipped))
        self.supervisor.hold_launches()
        self.supervisor.apply_registry(registry, Cause.daemon, autostart=False)
        self._journal.open()
        self._adopt_survivors(scan_all=True)
        self.supervisor.admit_launches()
        self.api.start()
        self.supervisor.autostart(Cause.daemon)
        parts.watcher.start()
        self.hotkeys.start(enabled=self.options.hotkeys)
        gc.collect()  # drop start-up garbage (YAML trees, generated converter code)
        gc.freeze()  # and keep what stays from being rescanned for the daemon's lifetime
        _return_free_memory()
        self.started.set()
        log.info("daemon_started", pid=os.getpid(), version=__version__,
                 config_dir=str(self.paths.config_dir), apps=len(registry.apps),
                 port=self.api.port, platform=host.platform_name(),
                 python=host.python_version())

    def _shutdown(self, parts: _Parts) -> None:
        """Stop in reverse order; the tracker last but one, so that the exits of the apps
        stopped on the way out are still seen."""
        assert self.supervisor is not None
        assert self.api is not None
        assert self.hotkeys is not None
        self.hotkeys.stop()
        parts.watcher.stop()
        for follower in self._desktop:
            follower.stop()
        self.api.stop()
        self.supervisor.shutdown(stop_apps=self.supervisor.registry.settings.stop_apps_on_exit)
        left = self._journal.close()
        if parts.output is not None:
            self._hand_over_output(parts.output)
        parts.tracker.stop()
        if self._launcher is not None:
            self._launcher.close()
        log.info("daemon_stopped", apps_left_running=left)
        parts.stop_logging()

    def _adopt_survivors(self, scan_all: bool = False) -> None:
        """Adopt the apps a previous daemon left running, so none is launched twice.

        ``scan_all`` (start-up): also look for marked processes with no record (forked in the
        instant before their record reached the disk). A survivor whose app is not in the
        registry (config.yml broken at start-up, or the app removed meanwhile) waits, still
        recorded, until a reload brings its app back.
        """
        assert self.supervisor is not None
        tracked = {(s.name, s.pid) for s in self.supervisor.running()}
        recorded = [s for s in self._journal.live if (s.name, s.pid) not in tracked]
        if not recorded and not scan_all:
            return
        plan = survivors.plan(recorded, self.paths.config_dir)
        for gone in plan.gone:
            log.info("survivor_gone", app=gone.name, pid=gone.pid)
            self._journal.ended(gone.name, gone.pid)
        waiting = []
        for found in plan.found:
            if (found.name, found.pid) in tracked:
                continue
            if self.supervisor.registry.get(found.name) is None:
                waiting.append(found.name)
                self._journal.started(found.name, found.pid, found.group, found.create_time,
                                      found.ready)
            else:
                self._adopt_survivor(found)
        if waiting:
            log.warning("survivors_waiting", apps=waiting,
                        hint="still running, but not in the configuration: adopted once "
                             "they are back in it")

    def _adopt_survivor(self, found: survivors.Found) -> None:
        assert self.supervisor is not None
        try:
            self.supervisor.adopt(found.name, found.pid, found.group, found.ready,
                                  found.create_time, found.members, found.lease_s)
        except OrchestratrError as exc:
            log.warning("resume_failed", app=found.name, pid=found.pid, error=str(exc))
            if isinstance(exc, NoSuchProcessError):
                self._journal.ended(found.name, found.pid)
            return
        assert self._launcher is not None
        if not self._launcher.reattach_output(found.name, found.members):
            log.info("survivor_output_not_found", app=found.name, pid=found.pid,
                     hint="its output goes where it went before; it is not in its log file")

    def _hand_over_output(self, pump: output.OutputPump) -> None:
        """Apps left running keep writing: a drain process copies their pipes until they end
        or the next daemon takes them over."""
        pipes = pump.stop()
        try:
            drain = output.hand_over(pipes, self.paths.port_file, self._marker)
        except OSError as exc:
            log.warning("output_hand_over_failed", error=str(exc), pipes=len(pipes),
                        hint="apps left running wait once they have written 64 KiB, until "
                             "the next daemon starts")
            drain = None
        if drain is not None:
            log.info("output_handed_over", pid=drain, pipes=len(pipes))
        pump.close()

    @property
    def _marker(self) -> dict[str, str]:
        """Set in the environment of every process the daemon starts for this config dir."""
        return {CONFIG_DIR_ENV: str(self.paths.config_dir)}

    def _config_dir_recreated(self) -> None:
        """The config dir was deleted and made again: lock the new one (or stop, if another
        daemon has it), and put the pid, port and running-app record back into it."""
        if not self._lock.relock():
            self._fatal(f"the config dir {self.paths.config_dir} was re-created and another "
                        "daemon now holds it")
            return
        self._lock.write_pid()
        if self.api is not None:
            self.api.write_port_file()
        self._journal.reopen()
        log.warning("config_dir_recreated", config_dir=str(self.paths.config_dir))

    def _reload_quietly(self) -> None:
        """The watcher's callback: errors are already logged, and the old registry stays."""
        try:
            self.reload(Cause.reload)
        except ConfigError:
            pass


def _initial_registry(paths: Paths) -> tuple[Registry, ConfigError | None]:
    """The registry to start with. An invalid config.yml still starts the daemon, with the
    default settings and the valid drop-ins, and the watcher picks up the fix (the Go
    orchestratr stayed empty until restarted)."""
    try:
        return load_registry(paths), None
    except ConfigError as exc:
        return load_without_config(paths), exc


def _unwritable(path: Path) -> str | None:
    """Why the daemon cannot append to its log file ``path``, or None if it can."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard one: each running app holds a few
    descriptors (its pidfd, ...), and 1,024 (a common soft limit) is reached at ~1,000 apps.
    supervisord raises its own (``minfds``), systemd sets one per unit."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("fd_limit_unchanged", soft=soft, hard=hard, error=str(exc))
            return
    log.info("fd_limit", soft_was=soft, soft=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
             hard=hard)


def _openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, built on the first ``GET /openapi.json``: the module that
    builds it is 100 KiB of a daemon's memory that most daemons never use."""
    from orchestratr.api.openapi import document

    return document()


def _return_free_memory() -> None:
    """Give the heap pages that start-up garbage left free back to the system (glibc keeps
    them otherwise): about 0.5 MiB of an idle daemon's resident memory."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _log_problems(warnings: list[str], errors: list[str]) -> None:
    for message in warnings:
        log.warning("config_warning", problem=message)
    for message in errors:
        log.error("config_error", problem=message)


def _catch_signals(
    stop: Callable[[], None], reload: Callable[[], None], children: Callable[[], None],
    wakeup_fd: int,
) -> Callable[[], None]:
    """SIGTERM and SIGINT call ``stop``, SIGHUP ``reload`` (as supervisord and most daemons
    do), SIGCHLD ``children``; SIGUSR1 prints every thread's stack to stderr. Returns a
    function restoring the previous handlers."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        log.info("signal_received", signal="SIGHUP", action="reload")
        reload()

    def on_child(_signum: int, _frame: FrameType | None) -> None:
        children()

    def on_stacks(_signum: int, _frame: FrameType | None) -> None:
        # with the GIL held: faulthandler's own signal handler walks the threads without it,
        # and crashed the daemon (SIGSEGV) when a connection's thread ended at that instant
        faulthandler.dump_traceback(all_threads=True)

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, on_child)
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_stacks)  # a hung daemon's stacks
    previous_fd = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)

    def restore() -> None:
        signal.set_wakeup_fd(previous_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
