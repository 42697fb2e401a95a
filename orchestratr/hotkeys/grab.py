"""Keeps the leader and its chord out of the focused window on X11 ("LeaderGrab").

pynput only observes keys (XRecord); by the time its callback runs, the server has already
delivered them. What works (measured in ../shared/notes/hotkeys-x11.md, 0 leaks in 90 runs): a
*synchronous* passive grab of the leader on the root window, so the keyboard freezes at the
leader press; then an active keyboard grab until the chord key's release or the window's end.
One thread with its own X connection owns every grab and ungrab: split across threads, the
ungrab can overtake the grab and leave the keyboard stuck.
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
from typing import Any

import structlog
from Xlib import XK, X, error
from Xlib.display import Display

from orchestratr.hotkeys.keys import Key, Leader

log = structlog.get_logger("orchestratr.hotkeys")

MODIFIER_MASKS = {"ctrl": X.ControlMask, "shift": X.ShiftMask, "alt": X.Mod1Mask,
                  "super": X.Mod4Mask}
LOCK_MASKS = (0, X.LockMask, X.Mod2Mask, X.LockMask | X.Mod2Mask)  # CapsLock, NumLock
KEYSYM_NAMES = {"escape": "Escape", "enter": "Return", "tab": "Tab", "backspace": "BackSpace",
                "insert": "Insert", "delete": "Delete", "home": "Home", "end": "End",
                "pageup": "Prior", "pagedown": "Next", "space": "space"}
AUTOREPEAT_LOOKAHEAD_S = 0.002
IDLE_WAKE_S = 0.5


class GrabUnavailable(Exception):
    """The leader combination cannot be grabbed (another client owns it)."""


def keysym_of(key: Key) -> int:
    if key.name in KEYSYM_NAMES or (key.name.startswith("f") and key.name[1:].isdigit()):
        return XK.string_to_keysym(KEYSYM_NAMES.get(key.name, key.name.upper()))
    return XK.string_to_keysym(key.name) or ord(key.name)  # Latin-1 keysyms are code points


class LeaderGrab:
    """The grab thread. ``start`` raises GrabUnavailable when the leader is taken."""

    def __init__(self, leader: Leader, timeout_s: float) -> None:
        self.leader = leader
        self.timeout_s = timeout_s
        self.grabbed = False  # the keyboard is ours right now (read by tests and status)
        self._display: Display | None = None
        self._thread: threading.Thread | None = None
        self._backlog: collections.deque[Any] = collections.deque()

    def start(self) -> None:
        self._display = display = Display()
        root = display.screen().root
        self._keycode = display.keysym_to_keycode(keysym_of(self.leader.key))
        if not self._keycode:
            display.close()
            raise GrabUnavailable(f"no key on this keyboard for {self.leader.key.name!r}")
        self._modifier_keycodes = {kc for codes in display.get_modifier_mapping()
                                   for kc in codes if kc}
        mask = 0
        for name in self.leader.modifiers:
            mask |= MODIFIER_MASKS[name]
        catch = error.CatchError(error.BadAccess)
        for lock in LOCK_MASKS:
            root.grab_key(self._keycode, mask | lock, False, X.GrabModeAsync, X.GrabModeSync,
                          onerror=catch)
        display.sync()
        if catch.get_error():
            display.close()
            raise GrabUnavailable(f"{self.leader} is already grabbed by another X client")
        self._mask = mask
        self._stop_r, self._stop_w = os.pipe()  # stop() writes to wake the thread's select
        self._thread = threading.Thread(target=self._run, name="hotkey-grab", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ungrab everything and end the thread (the passive grabs go with the connection)."""
        if self._thread is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=2)
        self._thread = None
        os.close(self._stop_r)
        os.close(self._stop_w)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        display = self._display
        assert display is not None
        try:
            self._loop(display)
        except Exception:
            log.exception("hotkey_grab_failed", leader=str(self.leader))
        finally:
            try:
                self._ungrab(display)
                display.close()
            except Exception:  # noqa: BLE001 - the connection may be gone with the server
                pass

    def _loop(self, display: Display) -> None:
        deadline = 0.0
        chord: int | None = None
        while True:
            while self._backlog or display.pending_events():
                event = self._backlog.popleft() if self._backlog else display.next_event()
                deadline, chord = self._on_event(display, event, deadline, chord)
            wait = max(0.0, deadline - time.monotonic()) if self.grabbed else IDLE_WAKE_S
            ready, _, _ = select.select([display, self._stop_r], [], [], wait)
            if self._stop_r in ready:
                return
            if self.grabbed and time.monotonic() >= deadline:
                self._ungrab(display)  # the window ran out with no chord
                chord = None

    def _on_event(self, display: Display, event: Any, deadline: float,
                  chord: int | None) -> tuple[float, int | None]:
        if event.type == X.MappingNotify:
            self._remap(display, event)
        elif event.type not in (X.KeyPress, X.KeyRelease):
            pass
        elif not self.grabbed:
            if event.type == X.KeyPress and event.detail == self._keycode:
                return self._grab(display, event), None
            self._ungrab(display)  # a key while we hold nothing: make sure nothing is held
        elif event.type == X.KeyPress and chord is None and \
                event.detail not in self._modifier_keycodes:
            return deadline, event.detail
        elif event.type == X.KeyRelease and event.detail == chord and \
                not self._autorepeat(display, event):
            self._ungrab(display)  # on the release: ungrabbing on the press orphans it
            return deadline, None
        return deadline, chord

    def _grab(self, display: Display, event: Any) -> float:
        root = display.screen().root
        status = root.grab_keyboard(False, X.GrabModeAsync, X.GrabModeAsync, event.time)
        if status == X.GrabInvalidTime:  # a late event carries a stale time
            status = root.grab_keyboard(False, X.GrabModeAsync, X.GrabModeAsync, X.CurrentTime)
        display.allow_events(X.AsyncKeyboard, X.CurrentTime)
        display.flush()
        self.grabbed = status == X.GrabSuccess
        if not self.grabbed:
            log.debug("hotkey_grab_refused", status=status)
        return time.monotonic() + self.timeout_s

    def _ungrab(self, display: Display) -> None:
        display.ungrab_keyboard(X.CurrentTime)
        display.allow_events(X.AsyncKeyboard, X.CurrentTime)
        display.flush()
        self.grabbed = False

    def _autorepeat(self, display: Display, release: Any) -> bool:
        """X repeats a held key as release+press with one timestamp: look one event ahead."""
        if not display.pending_events():
            select.select([display], [], [], AUTOREPEAT_LOOKAHEAD_S)
        if not display.pending_events():
            return False
        following = display.next_event()
        if (following.type == X.KeyPress and following.detail == release.detail
                and following.time == release.time):
            return True  # the repeated press is dropped with it
        self._backlog.append(following)
        return False

    def _remap(self, display: Display, event: Any) -> None:
        """The keyboard mapping changed: the leader's keycode may have moved."""
        display.refresh_keyboard_mapping(event)
        keycode = display.keysym_to_keycode(keysym_of(self.leader.key))
        if keycode and keycode != self._keycode:
            root = display.screen().root
            for lock in LOCK_MASKS:
                root.ungrab_key(self._keycode, self._mask | lock)
                root.grab_key(keycode, self._mask | lock, False, X.GrabModeAsync,
                              X.GrabModeSync)
            self._keycode = keycode
