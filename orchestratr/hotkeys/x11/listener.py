"""The pynput adapter: OS key events in, orchestratr Keys out. Nothing else lives here.

pynput is imported only after ``display.unavailable_reason()`` said None: without an X server
its import raises, and it switches python-xlib into threaded mode, which must precede other
connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestratr.hotkeys.x11 import keysyms
from orchestratr.registry.keys import Key

SPECIAL = {"esc": "escape", "page_up": "pageup", "page_down": "pagedown"}
UNKNOWN = Key("unknown")  # pynput could not read the keycode; the grab still sees a key


def to_key(pynput_key: Any) -> Key | None:
    """A pynput Key or KeyCode as our Key; None only for lock keys.

    Modifiers and locks are told apart by keysym (pynput's ``vk`` on X11), as the grab does,
    so both agree which keys end a chord window. A key with no name of ours (KP_Begin, a media
    key) still ends it, as ``#<keysym>``: ignoring it here while the grab took it as the chord
    let the next key leak and launch.
    """
    if pynput_key is None:
        return UNKNOWN
    keysym = _keysym(pynput_key)
    if keysym is not None and not keysyms.ends_window(keysym):
        modifier = keysyms.modifier_name(keysym)
        return Key(modifier) if modifier else None
    name = getattr(pynput_key, "name", None)
    if name is not None:  # a pynput Key member: space, esc, f5, ...
        return Key.of(SPECIAL.get(name, name))
    char = getattr(pynput_key, "char", None)
    if char and char.isprintable():
        return Key.of(char)
    if keysym is None:
        return UNKNOWN
    if 32 < keysym < 127:  # with Ctrl held, char is a control character
        return Key.of(chr(keysym))
    return Key(f"#{keysym:x}")


def _keysym(pynput_key: Any) -> int | None:
    """The X keysym pynput reports: a KeyCode's ``vk``, or a Key member's ``value.vk``."""
    vk = getattr(getattr(pynput_key, "value", pynput_key), "vk", None)
    return vk if isinstance(vk, int) else None


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
