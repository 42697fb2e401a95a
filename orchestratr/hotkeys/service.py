"""The hotkey service: engine + a backend's listener and grab + a worker, as the daemon sees
them. It knows no OS: the backend (``hotkeys/backend.py``) does.

The key thread only feeds the engine and queues work; the worker launches (through the same
supervisor call as the API, with source ``hotkey``) and fires the chord window's timeout, so a
slow spawn never delays a key.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from orchestratr import host
from orchestratr.controls import BackendName, HotkeyStatus
from orchestratr.hotkeys.backend import FALLBACK, Backend, Grab
from orchestratr.hotkeys.engine import Engine, Kind, Outcome
from orchestratr.registry.keys import Key, desktop_owner, parse_leader
from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.hotkeys")
WAKE = ""  # queued to make the worker re-read the chord window's deadline
REGRAB = "\0regrab"  # queued by a dying grab thread: the worker brings the grab back
MAX_GRAB_RESTARTS = 3  # crashes survived before running without suppression (until resume)
NOT_SUPPRESSED = "the leader and chord keys also reach the focused app"


class HotkeyService:
    """``launch(name)`` starts an app; ``chords()`` is the current chord table
    (``registry.keys.chord_key`` -> app name); ``publish(type, **data)`` puts an event on the
    bus; ``backend`` hears and grabs the keys."""

    def __init__(
        self,
        leader_key: str,
        timeout_ms: int,
        launch: Callable[[str], object],
        chords: Callable[[], Mapping[str, str]],
        publish: Callable[..., object],
        backend: Backend,
        clock: Callable[[], float] = time.monotonic,
        hint_ms: int = 0,
    ) -> None:
        self._clock = clock
        self._engine = Engine(parse_leader(leader_key), timeout_ms / 1000, clock, hint_ms / 1000)
        self._launch = launch
        self._chords = chords
        self._publish = publish
        self._lock = threading.Lock()  # the engine: key thread, worker and API all drive it
        self._grab_lock = threading.Lock()  # the grab's lifecycle: see _sync_grab
        self._work: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._backend = backend
        self._listening = False
        self._grab: Grab | None = None
        self._running = False
        self._paused = False
        self._reason: str | None = None
        self._grab_problem: str | None = None  # why the last grab could not start
        self._grab_restarts = 0

    # ------------------------------------------------------------ lifecycle

    def start(self, enabled: bool = True) -> HotkeyStatus:
        """Start listening if this session allows it; otherwise log one warning saying why
        and what to do instead. Never raises for a missing (or silent) display."""
        self._reason = ("disabled by --no-hotkeys" if not enabled
                        else self._backend.unavailable_reason())
        if self._reason is None:
            try:
                self._backend.start(self.press, self.release)
            except Exception as exc:  # noqa: BLE001 - the server went away, or never records
                self._reason = f"the key listener did not start: {exc}"
        if self._reason is None:
            self._listening = True
            self._running = True
            self._sync_grab()
            self._worker = supervised("hotkeys", self._work_loop)
        status = self.status()
        if status.enabled:
            log.info("hotkeys_started", platform=host.platform_name(), backend=status.backend,
                     leader=status.leader, suppressing=status.suppressing)
            self._warn_if_commonly_taken()
            if note := self._backend.status().limitation:
                log.warning("hotkeys_limited", reason=note)
        else:
            log.warning("hotkeys_unavailable", reason=self._reason, fallback=FALLBACK)
            if enabled:
                self._publish("hotkey", action="unavailable", reason=self._reason)
        return status

    def stop(self) -> None:
        self._running = False
        self._sync_grab()
        if self._listening:
            self._backend.stop()
            self._listening = False
        if self._worker is not None:
            self._work.put(None)
            self._worker.join(timeout=2)
            self._worker = None

    def pause(self) -> HotkeyStatus:
        """Release every grab and ignore keys until ``resume``."""
        with self._lock:
            self._paused = True
            self._engine.reset()
        self._sync_grab()
        log.info("hotkeys_paused")
        return self.status()

    def resume(self) -> HotkeyStatus:
        """Listen again and restore the grab (a grab given up after crashes is tried anew)."""
        with self._lock:
            self._paused = False
        with self._grab_lock:
            self._grab_restarts = 0
        self._sync_grab()
        log.info("hotkeys_resumed")
        return self.status()

    def configure(self, leader_key: str, timeout_ms: int, hint_ms: int = 0) -> None:
        """A reload changed the leader or the window: re-grab, so the grab holds the keyboard
        exactly as long as the engine listens. Never raises for X trouble."""
        leader = parse_leader(leader_key)
        with self._lock:
            old = self._engine
            self._engine = Engine(leader, timeout_ms / 1000, self._clock, hint_ms / 1000)
            changed = (leader, self._engine.timeout_s) != (old.leader, old.timeout_s)
        if changed:
            self._sync_grab()
            log.info("hotkeys_reconfigured", leader=str(leader), timeout_ms=timeout_ms)
            self._warn_if_commonly_taken()

    def status(self) -> HotkeyStatus:
        grab = self._grab
        suppressing = grab is not None and grab.alive
        reason = self._reason
        if reason is None and self._running and not self._paused and not suppressing:
            reason = self._suppression_problem(grab)
        return HotkeyStatus(
            enabled=self._listening,
            paused=self._paused,
            backend=self._backend.name if self._listening else BackendName.none,
            leader=str(self._engine.leader),
            suppressing=suppressing,
            reason=reason,
            keys_seen=self.keys_seen,
        )

    def press_leader(self) -> None:
        """Act as if the leader was pressed (POST /trigger with no chord).

        Raises:
            RuntimeError: hotkeys are not running, or are paused.
        """
        if not self._listening or self._paused:
            raise RuntimeError(self._reason or "hotkeys are paused")
        grab = self._grab
        if grab is not None and grab.alive:
            grab.arm()  # the keyboard is held before the chord can come, as after the leader
        with self._lock:
            self._act(self._engine.arm())

    @property
    def keys_seen(self) -> int:
        return self._backend.status().keys_seen

    # ------------------------------------------------------------ key thread

    def press(self, key: Key) -> None:
        """A key went down (the listener's callback; public so tests need no X server)."""
        with self._lock:
            if not self._paused:
                self._act(self._engine.press(key))

    def release(self, key: Key) -> None:
        with self._lock:
            self._engine.release(key)

    def _act(self, outcome: Outcome | None) -> None:
        """Log and publish an outcome; a chord goes to the worker (lock held: no waiting)."""
        if outcome is None:
            return
        key = outcome.key.name if outcome.key else None
        if outcome.kind is Kind.chord:
            app = self._chords().get(outcome.key.name) if outcome.key else None
            self._emit("chord" if app else "unbound", key=key, app=app)
            if app:
                self._work.put(app)
        elif outcome.kind is Kind.help:
            self._emit("help", chords=self._chords(), **({"reason": outcome.reason}
                                                         if outcome.reason else {}))
        elif outcome.kind is Kind.cancelled:
            self._emit("cancelled", key=key, reason=outcome.reason)
        else:
            self._emit("armed", leader=str(self._engine.leader))
            self._work.put(WAKE)  # the worker now has a deadline to keep

    def _emit(self, action: str, **data: Any) -> None:
        level = log.info if action in ("chord", "help") else log.debug
        level("hotkey", action=action, **data)
        self._publish("hotkey", action=action, **data)

    # ------------------------------------------------------------ worker

    def _work_loop(self) -> None:
        while True:
            due = self._engine.wake_at
            wait = None if due is None else max(0.0, due - self._clock())
            try:
                app = self._work.get(timeout=wait)
            except queue.Empty:
                with self._lock:
                    self._act(self._engine.tick())
                continue
            if app is None:
                return
            if app == REGRAB:
                self._sync_grab()
            elif app != WAKE:
                self._launch_quietly(app)

    def _launch_quietly(self, app: str) -> None:
        try:
            self._launch(app)
        except Exception as exc:  # noqa: BLE001 - a failed launch must not end the worker
            log.warning("hotkey_launch_failed", app=app, error=str(exc))

    # ------------------------------------------------------------ grab

    def _sync_grab(self) -> None:
        """Make the grab what is wanted now: one, holding the engine's leader and window, while
        running and not paused; none otherwise. Start, stop and crash recovery all come through
        here under one lock: unsynchronised, a pause racing a reload stopped one grab twice
        (EBADF) and started two (our own passive grab then read as another client's)."""
        with self._grab_lock:
            grab, engine = self._grab, self._engine
            wanted = self._running and not self._paused
            if grab is not None and not (wanted and grab.alive and _holds(grab, engine)):
                grab.stop()
                self._grab = None
                if grab.failure is not None:
                    self._grab_died(grab)
            if wanted and self._grab is None and self._grab_restarts <= MAX_GRAB_RESTARTS:
                self._grab = self._start_grab(engine)

    def _start_grab(self, engine: Engine) -> Grab | None:
        """A running grab, or None (with a warning) when keys cannot be suppressed."""
        try:
            grab = self._backend.grab(engine.leader, engine.timeout_s,
                                      on_failure=lambda _: self._work.put(REGRAB))
        except Exception as exc:  # noqa: BLE001 - GrabUnavailable, or the server went away
            self._grab_problem = str(exc)
            log.warning("hotkeys_not_suppressed", leader=str(engine.leader), reason=str(exc),
                        effect=NOT_SUPPRESSED)
            # after a grab died (not at the start, just checked): is the display gone?
            if (self._grab_restarts and self._listening
                    and (gone := self._backend.unavailable_reason()) is not None):
                self._went_away(gone)
            return None
        self._grab_problem = None
        return grab

    def _went_away(self, reason: str) -> None:
        """The display went away after the start (its grab died, and no new one connects):
        hotkeys are off, and said so as at the start (log, event, notification)."""
        self._running = self._listening = False
        self._reason = reason
        with contextlib.suppress(Exception):  # the listener's connection went with the server
            self._backend.stop()
        log.warning("hotkeys_unavailable", reason=reason, fallback=FALLBACK)
        self._publish("hotkey", action="unavailable", reason=reason)

    def _grab_died(self, grab: Grab) -> None:
        """The grab thread crashed (the keyboard is already free): say so, and restart it
        unless it keeps crashing."""
        self._grab_restarts += 1
        self._grab_problem = grab.failure
        if self._grab_restarts > MAX_GRAB_RESTARTS:
            log.warning("hotkeys_not_suppressed", leader=str(grab.leader),
                        reason=f"{self._grab_problem} ({self._grab_restarts} times); "
                               "POST /hotkeys/resume tries again", effect=NOT_SUPPRESSED)
        else:
            log.warning("hotkey_grab_restarting", leader=str(grab.leader),
                        reason=self._grab_problem, attempt=self._grab_restarts)

    def _suppression_problem(self, grab: Grab | None) -> str:
        problem = (grab.failure if grab is not None else None) or self._grab_problem
        return f"{problem or 'no key grab'}; {NOT_SUPPRESSED}"

    def _warn_if_commonly_taken(self) -> None:
        """Only when the grab failed: a leader we hold is not taken by anyone else."""
        leader = self._engine.leader
        if self.status().suppressing:
            return
        if owner := desktop_owner(leader):
            log.warning("hotkeys_leader_often_taken", leader=str(leader), usual_owner=owner,
                        hint="set leader_key in config.yml if it does not fire")


def _holds(grab: Grab, engine: Engine) -> bool:
    """The grab keeps the keyboard for this engine's leader and window."""
    return (grab.leader, grab.timeout_s) == (engine.leader, engine.timeout_s)

