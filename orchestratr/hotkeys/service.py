"""The hotkey service: engine + pynput listener + X11 grab + a worker, as the daemon sees them.

The key thread only feeds the engine and queues work; the worker launches (through the same
supervisor call as the API, with source ``hotkey``) and fires the chord window's timeout, so a
slow spawn never delays a key.
"""

from __future__ import annotations

import platform
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import structlog

from orchestratr.hotkeys import display
from orchestratr.hotkeys.engine import Engine, Kind, Outcome
from orchestratr.hotkeys.keys import Key, desktop_owner, parse_leader
from orchestratr.registry.model import AppSpec

log = structlog.get_logger("orchestratr.hotkeys")
WAKE = ""  # queued to make the worker re-read the chord window's deadline


@attrs.frozen
class HotkeyStatus:
    enabled: bool
    paused: bool
    backend: str
    leader: str
    suppressing: bool
    reason: str | None
    keys_seen: int  # key presses observed: 0 with hotkeys on means the listener hears nothing


class HotkeyService:
    """``launch(name)`` starts an app; ``chords()`` is the current chord table
    (chord -> app name); ``publish(type, **data)`` puts an event on the bus."""

    def __init__(
        self,
        leader_key: str,
        timeout_ms: int,
        launch: Callable[[str], object],
        chords: Callable[[], dict[str, str]],
        publish: Callable[..., object],
    ) -> None:
        self._engine = Engine(parse_leader(leader_key), timeout_ms / 1000)
        self._launch = launch
        self._chords = chords
        self._publish = publish
        self._lock = threading.Lock()  # the engine is driven from the key thread and the worker
        self._work: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._listener: Any = None
        self._grab: Any = None
        self._paused = False
        self._backend = "none"
        self._reason: str | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, enabled: bool = True) -> HotkeyStatus:
        """Start listening if this session allows it; otherwise log one warning saying why
        and what to do instead. Never raises for a missing display."""
        self._reason = "disabled by --no-hotkeys" if not enabled else display.unavailable_reason()
        if self._reason is None:
            from orchestratr.hotkeys.listener import KeyListener

            self._listener = KeyListener(self._on_press, self._on_release)
            self._listener.start()
            self._backend = "xorg"
            self._start_grab()
            self._worker = threading.Thread(target=self._work_loop, name="hotkeys", daemon=True)
            self._worker.start()
        status = self.status()
        if status.enabled:
            log.info("hotkeys_started", platform=platform.platform(), backend=status.backend,
                     leader=status.leader, suppressing=status.suppressing)
            self._warn_if_commonly_taken()
            if note := display.wayland_note():
                log.warning("hotkeys_limited", reason=note)
        else:
            log.warning("hotkeys_unavailable", reason=self._reason, fallback=display.FALLBACK)
        return status

    def stop(self) -> None:
        self._stop_grab()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._worker is not None:
            self._work.put(None)
            self._worker.join(timeout=2)
            self._worker = None

    def pause(self) -> HotkeyStatus:
        """Release every grab and ignore keys until ``resume``."""
        with self._lock:
            self._paused = True
            self._engine.reset()
        self._stop_grab()
        log.info("hotkeys_paused")
        return self.status()

    def resume(self) -> HotkeyStatus:
        with self._lock:
            self._paused = False
        if self._listener is not None and self._grab is None:
            self._start_grab()
        log.info("hotkeys_resumed")
        return self.status()

    def configure(self, leader_key: str, timeout_ms: int) -> None:
        """A reload changed the leader or the window: re-grab, so the grab holds the keyboard
        exactly as long as the engine listens."""
        leader = parse_leader(leader_key)
        with self._lock:
            old = self._engine
            self._engine = Engine(leader, timeout_ms / 1000)
            changed = (leader, self._engine.timeout_s) != (old.leader, old.timeout_s)
        if changed and self._listener is not None and not self._paused:
            self._stop_grab()
            self._start_grab()
            log.info("hotkeys_reconfigured", leader=str(leader), timeout_ms=timeout_ms)
            self._warn_if_commonly_taken()

    def status(self) -> HotkeyStatus:
        return HotkeyStatus(
            enabled=self._listener is not None,
            paused=self._paused,
            backend=self._backend,
            leader=str(self._engine.leader),
            suppressing=self._grab is not None,
            reason=self._reason,
            keys_seen=self.keys_seen,
        )

    def press_leader(self) -> None:
        """Act as if the leader was pressed (POST /trigger with no chord).

        Raises:
            RuntimeError: hotkeys are not running, or are paused.
        """
        if self._listener is None or self._paused:
            raise RuntimeError(self._reason or "hotkeys are paused")
        with self._lock:
            self._act(self._engine.arm())

    @property
    def keys_seen(self) -> int:
        return self._listener.keys_seen if self._listener is not None else 0

    # ------------------------------------------------------------ key thread

    def _on_press(self, key: Key) -> None:
        with self._lock:
            if not self._paused:
                self._act(self._engine.press(key))

    def _on_release(self, key: Key) -> None:
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
            self._emit("help", chords=self._chords())
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
            deadline = self._engine.deadline
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                app = self._work.get(timeout=wait)
            except queue.Empty:
                with self._lock:
                    self._act(self._engine.expire())
                continue
            if app is None:
                return
            if app == WAKE:
                continue
            try:
                self._launch(app)
            except Exception as exc:  # noqa: BLE001 - a failed launch must not end the worker
                log.warning("hotkey_launch_failed", app=app, error=str(exc))

    # ------------------------------------------------------------ grab

    def _start_grab(self) -> None:
        from orchestratr.hotkeys.grab import GrabUnavailable, LeaderGrab

        grab = LeaderGrab(self._engine.leader, self._engine.timeout_s)
        try:
            grab.start()
        except GrabUnavailable as exc:
            log.warning("hotkeys_not_suppressed", leader=str(grab.leader), reason=str(exc),
                        effect="the leader and chord keys also reach the focused app")
            return
        self._grab = grab

    def _stop_grab(self) -> None:
        if self._grab is not None:
            self._grab.stop()
            self._grab = None

    def _warn_if_commonly_taken(self) -> None:
        leader = self._engine.leader
        if owner := desktop_owner(leader):
            log.warning("hotkeys_leader_often_taken", leader=str(leader), usual_owner=owner,
                        hint="set leader_key in config.yml if it does not fire")


def chord_table(apps: Iterable[AppSpec]) -> dict[str, str]:
    """Chord key name -> app name, keyed as the engine names keys (``E`` and ``e`` are one)."""
    return {Key.of(app.chord).name: app.name for app in apps if app.chord}
