"""The pynput adapter: OS key events in, orchestratr Keys out. Nothing else lives here.

pynput is imported only after ``display.available()`` said yes: without an X server its import
raises, and it switches python-xlib into threaded mode, which must precede other connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestratr.hotkeys.keys import Key

SPECIAL = {"cmd": "super", "esc": "escape", "page_up": "pageup", "page_down": "pagedown",
           "alt_gr": "alt"}
IGNORED = frozenset({"caps_lock", "num_lock", "scroll_lock"})  # locks end no chord window


def to_key(pynput_key: Any) -> Key | None:
    """A pynput Key or KeyCode as our Key; None for keys that mean nothing to us."""
    name = getattr(pynput_key, "name", None)
    if name is not None:  # a pynput Key member: ctrl_l, space, esc, f5, ...
        if name in IGNORED:
            return None
        base = name.removesuffix("_l").removesuffix("_r")
        return Key.of(SPECIAL.get(name, SPECIAL.get(base, base)))
    char = getattr(pynput_key, "char", None)
    if char and char.isprintable():
        return Key.of(char)
    vk = getattr(pynput_key, "vk", None)  # with Ctrl held, char is a control character
    if vk is not None and 32 < vk < 127:
        return Key.of(chr(vk))
    return None


class KeyListener:
    """One pynput Listener calling ``on_press``/``on_release`` with our Keys."""

    def __init__(self, on_press: Callable[[Key], None], on_release: Callable[[Key], None]):
        from pynput import keyboard

        self.keys_seen = 0  # tests wait for the first one: pynput's wait() returns too early
        self._on_press = on_press
        self._on_release = on_release
        self._listener = keyboard.Listener(on_press=self._press, on_release=self._release)
        self._listener.daemon = True

    def start(self) -> None:
        self._listener.start()
        self._listener.wait()

    def stop(self) -> None:
        """pynput's join blocks until one more key arrives (its bug); the thread is a daemon."""
        self._listener.stop()
        self._listener.join(timeout=0.5)

    def _press(self, pynput_key: Any, injected: bool = False) -> None:
        self.keys_seen += 1
        key = to_key(pynput_key)
        if key is not None:
            self._on_press(key)

    def _release(self, pynput_key: Any, injected: bool = False) -> None:
        key = to_key(pynput_key)
        if key is not None:
            self._on_release(key)
