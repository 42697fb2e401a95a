"""Keeps the leader and its chord out of the focused window on X11 ("LeaderGrab").

pynput only observes keys (XRecord); by the time its callback runs, the server has already
delivered them. What works (measured in ../shared/notes/hotkeys-x11.md, 0 leaks in 90 runs): a
*synchronous* passive grab of the leader on the root window, so the keyboard freezes at the
leader press; then an active keyboard grab for as long as ``GrabWindow`` says. One thread with
its own X connection owns every grab and ungrab: split across threads, the ungrab can overtake
the grab and leave the keyboard stuck.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from Xlib import XK, X, error
from Xlib.display import Display
from Xlib.protocol import rq

from orchestratr.fds import readable
from orchestratr.hotkeys.backend import GrabUnavailable
from orchestratr.hotkeys.x11 import keysyms
from orchestratr.hotkeys.x11.window import GrabWindow
from orchestratr.registry.keys import Key, Leader

log = structlog.get_logger("orchestratr.hotkeys")

MODIFIER_MASKS = {"ctrl": X.ControlMask, "shift": X.ShiftMask, "alt": X.Mod1Mask,
                  "super": X.Mod4Mask}
LOCK_MASKS = (0, X.LockMask, X.Mod2Mask, X.LockMask | X.Mod2Mask)  # CapsLock, NumLock
KEYSYM_NAMES = {"escape": "Escape", "enter": "Return", "tab": "Tab", "backspace": "BackSpace",
                "insert": "Insert", "delete": "Delete", "home": "Home", "end": "End",
                "pageup": "Prior", "pagedown": "Next", "space": "space"}
# Only without XKB: how long to wait for the press that would make a release autorepeat.
# 2 ms lost repeats under CPU load; paid on the real release of each key held in a window.
AUTOREPEAT_LOOKAHEAD_S = 0.03
STOP_JOIN_S = 2.0
ARM_WAIT_S = 1.0  # for the grab thread to take the keyboard on the API's leader press
STOP, ARM = b"x", b"a"  # what the wake socket carries to the grab thread


def keysym_of(key: Key) -> int:
    if key.name in KEYSYM_NAMES or (key.name.startswith("f") and key.name[1:].isdigit()):
        return XK.string_to_keysym(KEYSYM_NAMES.get(key.name, key.name.upper()))
    return XK.string_to_keysym(key.name) or ord(key.name)  # Latin-1 keysyms are code points


class LeaderGrab:
    """The grab thread. ``start`` raises GrabUnavailable when the leader cannot be grabbed;
    ``on_failure`` hears (on the grab thread) that the thread died, keyboard already freed."""

    def __init__(self, leader: Leader, timeout_s: float,
                 on_failure: Callable[[LeaderGrab], None] = lambda grab: None,
                 detectable_autorepeat: bool = True) -> None:
        self.leader = leader
        self.timeout_s = timeout_s
        self.grabbed = False  # the keyboard is ours right now (tests wait on it)
        self.failure: str | None = None  # why the thread died, if it did
        self.detectable_autorepeat = detectable_autorepeat  # False: fall back to look-ahead
        self._on_failure = on_failure
        self._display: Display | None = None
        self._thread: threading.Thread | None = None
        self._backlog: collections.deque[Any] = collections.deque()
        self._armed = threading.Event()  # set by the thread once an ``arm`` holds the keyboard
        self._arm_lock = threading.Lock()  # one ``arm`` at a time

    @property
    def alive(self) -> bool:
        """Running and holding its passive grabs: False from the moment it fails (its thread
        may still be finishing while ``on_failure`` runs)."""
        return self.failure is None and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        try:
            display = Display()
        except Exception as exc:  # python-xlib raises several unrelated types
            raise GrabUnavailable(f"cannot open an X connection for the grab: {exc}") from exc
        try:
            self._grab_leader(display)
            self.detectable_autorepeat = (self.detectable_autorepeat
                                          and _set_detectable_autorepeat(display))
        except BaseException:
            display.close()
            raise
        self._display = display
        self._wake_r, self._wake_w = socket.socketpair()  # stop() wakes the thread's select
        self._thread = threading.Thread(target=self._run, name="hotkey-grab", daemon=True)
        self._thread.start()

    def arm(self) -> bool:
        """Take the keyboard now, as a leader press does (the passive grab cannot fire for the
        API's leader press): otherwise the chord typed next would reach the focused app.
        Returns once the grab thread holds the keyboard (False: it could not, in time)."""
        with self._arm_lock:
            self._armed.clear()
            try:
                self._wake_w.send(ARM)
            except OSError:
                return False  # the thread is gone
            return self._armed.wait(ARM_WAIT_S) and self.grabbed

    def stop(self) -> None:
        """Ungrab everything and end the thread (again: a no-op). One caller at a time."""
        if self._thread is None:
            return
        try:
            self._wake_w.send(STOP)
        except OSError:
            pass  # the thread is gone and closed its end
        self._thread.join(timeout=STOP_JOIN_S)
        if not self._thread.is_alive():  # a stuck thread keeps its sockets: no EBADF in it
            self._wake_r.close()
            self._wake_w.close()

    # ------------------------------------------------------------ set-up

    def _grab_leader(self, display: Display) -> None:
        """Passive synchronous grabs of the leader under every CapsLock/NumLock state."""
        self._keycode = display.keysym_to_keycode(keysym_of(self.leader.key))
        if not self._keycode:
            raise GrabUnavailable(f"no key on this keyboard for {self.leader.key.name!r}")
        self._quiet = _quiet_keycodes(display)
        self._mask = 0
        for name in self.leader.modifiers:
            self._mask |= MODIFIER_MASKS[name]
        catch = error.CatchError(error.BadAccess)
        self._grab_keys(display, self._keycode, catch)
        display.sync()
        if catch.get_error():
            raise GrabUnavailable(f"{self.leader} is already grabbed by another X client")

    def _release_leader(self, display: Display) -> None:
        """Drop the passive grabs and wait until the server has: closing the connection alone
        frees them later, and a new grab of the same leader could meet BadAccess meanwhile."""
        self._ungrab_keys(display, self._keycode)
        self._ungrab(display)
        display.sync()

    def _grab_keys(self, display: Display, keycode: int, onerror: Any = None) -> None:
        """The leader's passive synchronous grab under every CapsLock/NumLock state."""
        for lock in LOCK_MASKS:
            display.screen().root.grab_key(keycode, self._mask | lock, False, X.GrabModeAsync,
                                           X.GrabModeSync, onerror=onerror)

    def _ungrab_keys(self, display: Display, keycode: int) -> None:
        for lock in LOCK_MASKS:
            display.screen().root.ungrab_key(keycode, self._mask | lock)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        display = self._display
        assert display is not None
        error: Exception | None = None
        try:
            self._loop(display)
        except Exception as exc:  # noqa: BLE001 - reported below, once the keyboard is free
            error = exc
            self.failure = f"the key grab failed: {type(exc).__name__}: {exc}"
        finally:
            self._close(display)
        if error is not None:
            log.error("hotkey_grab_failed", leader=str(self.leader), exc_info=error)
            self._on_failure(self)

    def _close(self, display: Display) -> None:
        """Free the keyboard before anything slow, such as logging a traceback: while the
        keyboard is frozen on a press, the server autorepeats that key behind the queued
        release, and the key is left down (its next press then reaches no one)."""
        self.grabbed = False
        for step in (self._release_leader, Display.close):
            with contextlib.suppress(Exception):  # the connection may be gone with the server
                step(display)
        self._wake_r.close()

    def _loop(self, display: Display) -> None:
        window: GrabWindow | None = None
        while True:
            while self._backlog or display.pending_events():
                event = self._backlog.popleft() if self._backlog else display.next_event()
                window = self._on_event(display, event, window)
            window = self._let_go_if_finished(display, window)  # the time ran out
            wait = None if window is None else max(0.0, window.next_wake() - time.monotonic())
            wake = self._wake_r.fileno()
            ready = readable([display.fileno(), wake], wait)
            if wake in ready:
                commands = self._wake_r.recv(64)
                if not commands or STOP in commands:
                    return
                window = window or self._grab(display, None)  # ARM
                self._armed.set()

    def _on_event(self, display: Display, event: Any,
                  window: GrabWindow | None) -> GrabWindow | None:
        if event.type == X.MappingNotify:
            self._remap(display, event)
        elif event.type not in (X.KeyPress, X.KeyRelease):
            pass
        elif window is None:
            if event.type == X.KeyPress and event.detail == self._keycode:
                return self._grab(display, event)  # the passive grab fired: keyboard frozen
            self._ungrab(display)  # a key while we hold nothing: make sure nothing is held
        else:
            if event.type == X.KeyPress:
                window.press(event.detail, event.detail not in self._quiet, time.monotonic())
            elif event.detail not in window.down or not self._autorepeat(display, event):
                window.release(event.detail, time.monotonic())
            window = self._let_go_if_finished(display, window)
            if window is not None:
                self._next_key(display)
        return window

    def _let_go_if_finished(self, display: Display,
                            window: GrabWindow | None) -> GrabWindow | None:
        if window is None or not window.finished(time.monotonic()):
            return window
        self._ungrab(display)
        return None

    def _grab(self, display: Display, event: Any | None) -> GrabWindow | None:
        """Turn the passive grab into an active, *synchronous* one: the server hands over one
        key at a time and holds the rest until ``_next_key``. So the ungrab always comes before
        any key typed after the chord, which then reaches the app however slow this thread is
        (asynchronously, keys typed while the ungrab was on its way were lost). ``event`` is
        the leader's press, or None for ``arm``."""
        root = display.screen().root
        when = X.CurrentTime if event is None else event.time
        status = root.grab_keyboard(False, X.GrabModeAsync, X.GrabModeSync, when)
        if status == X.GrabInvalidTime:  # a late event carries a stale time
            status = root.grab_keyboard(False, X.GrabModeAsync, X.GrabModeSync, X.CurrentTime)
        self.grabbed = status == X.GrabSuccess
        if not self.grabbed:
            log.debug("hotkey_grab_refused", status=status)
            self._ungrab(display)
            return None
        self._next_key(display)
        leader = None if event is None else event.detail
        return GrabWindow.open(leader, time.monotonic(), self.timeout_s)

    def _next_key(self, display: Display) -> None:
        display.allow_events(X.SyncKeyboard, X.CurrentTime)
        display.flush()

    def _ungrab(self, display: Display) -> None:
        display.ungrab_keyboard(X.CurrentTime)
        display.allow_events(X.AsyncKeyboard, X.CurrentTime)
        display.flush()
        self.grabbed = False

    def _autorepeat(self, display: Display, release: Any) -> bool:
        """Without XKB, X repeats a held key as release+press with one timestamp: look one
        event ahead. With XKB's detectable autorepeat no such release is ever sent."""
        if self.detectable_autorepeat:
            return False
        self._next_key(display)  # the keyboard is frozen after the release: let one more in
        if not display.pending_events():
            readable([display], AUTOREPEAT_LOOKAHEAD_S)
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
        self._quiet = _quiet_keycodes(display)
        keycode = display.keysym_to_keycode(keysym_of(self.leader.key))
        if keycode and keycode != self._keycode:
            self._ungrab_keys(display, self._keycode)
            self._grab_keys(display, keycode)
            self._keycode = keycode


def _quiet_keycodes(display: Display) -> frozenset[int]:
    """Keycodes that never end a chord window: modifiers and locks, judged by keysym exactly
    as the listener judges pynput's keys (any of a key's first four levels counts)."""
    info = display.display.info
    return frozenset(
        keycode for keycode in range(info.min_keycode, info.max_keycode + 1)
        if any(sym and not keysyms.ends_window(sym)
               for sym in (display.keycode_to_keysym(keycode, i) for i in range(4)))
    )


# ------------------------------------------------------------ XKB detectable autorepeat
# python-xlib has no XKB binding; these two requests are all this needs.

XKB_USE_CORE_KBD = 0x0100
XKB_PCF_DETECTABLE_AUTOREPEAT = 1


class _XkbUseExtension(rq.ReplyRequest):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(0), rq.RequestLength(),
                         rq.Card16("wanted_major"), rq.Card16("wanted_minor"))
    _reply = rq.Struct(rq.ReplyCode(), rq.Bool("supported"), rq.Card16("sequence_number"),
                       rq.ReplyLength(), rq.Card16("server_major"), rq.Card16("server_minor"),
                       rq.Pad(20))


class _XkbPerClientFlags(rq.ReplyRequest):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(21), rq.RequestLength(),
                         rq.Card16("device_spec"), rq.Pad(2), rq.Card32("change"),
                         rq.Card32("value"), rq.Card32("ctrls_to_change"),
                         rq.Card32("auto_ctrls"), rq.Card32("auto_ctrls_values"))
    _reply = rq.Struct(rq.ReplyCode(), rq.Card8("device_id"), rq.Card16("sequence_number"),
                       rq.ReplyLength(), rq.Card32("supported"), rq.Card32("value"),
                       rq.Card32("auto_ctrls"), rq.Card32("auto_ctrls_values"), rq.Pad(8))


def _set_detectable_autorepeat(display: Display) -> bool:
    """Ask the server not to send this connection the release half of autorepeat, so a
    release is always real and needs no timing guess. False when XKB is missing."""
    extension = display.query_extension("XKEYBOARD")
    if extension is None or not extension.present:
        return False
    opcode = extension.major_opcode
    try:
        if not _XkbUseExtension(display=display.display, opcode=opcode, wanted_major=1,
                                wanted_minor=0).supported:
            return False
        flags = _XkbPerClientFlags(
            display=display.display, opcode=opcode, device_spec=XKB_USE_CORE_KBD,
            change=XKB_PCF_DETECTABLE_AUTOREPEAT, value=XKB_PCF_DETECTABLE_AUTOREPEAT,
            ctrls_to_change=0, auto_ctrls=0, auto_ctrls_values=0)
    except error.XError:
        return False
    return bool(flags.value & XKB_PCF_DETECTABLE_AUTOREPEAT)
