"""The pynput adapter: OS key events in, orchestratr Keys out. Nothing else lives here.

pynput is imported only after ``display.unavailable_reason()`` said None: without an X server
its import raises, and it switches python-xlib into threaded mode, which must precede other
connections.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from orchestratr.hotkeys.x11 import keysyms
from orchestratr.registry.keys import Key

RECORDING_TIMEOUT_S = 3.0  # a healthy server starts recording within milliseconds
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
        self.keys_seen = 0
        self._on_press = on_press
        self._on_release = on_release
        self._listener = _recording_listener()(on_press=self._press, on_release=self._release)
        self._listener.daemon = True

    def start(self) -> None:
        """Return once a key typed now is heard. pynput's ``wait()`` returns before XRecord
        is enabled (keys typed straight after it were lost 28 times in 30), so this waits for
        the server's StartOfData reply, which it sends once the context records.

        Raises:
            RuntimeError: the server did not start recording in time.
        """
        self._listener.start()
        if not self._listener.recording.wait(RECORDING_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"the X server did not start recording keys within "
                               f"{RECORDING_TIMEOUT_S:g} s")

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


def _recording_listener() -> type[Any]:
    """pynput's Listener, telling when the server has started recording (``recording``).
    Built on first use: importing pynput needs the display check first."""
    from pynput import keyboard
    from Xlib import X
    from Xlib.ext import record

    class RecordingListener(keyboard.Listener):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.recording = threading.Event()
            self._shifts_down: set[int] = set()  # keycodes of Shift keys now held

        def _handler(self, events: Any) -> None:
            if events.category == record.StartOfData:
                self.recording.set()
            super()._handler(events)  # type: ignore[misc]  # the X11 listener's, not stubbed

        def _handle_message(self, display: Any, event: Any, injected: bool) -> None:
            """Give a key the Shift it was typed with. While the leader's grab holds the
            keyboard, XRecord reported a key pressed right after Shift without Shift in its
            state (Shift+/ read as "/", not "?": the help chord, or a chord such as "!",
            was missed); this listener saw the Shift go down, so it says so."""
            keysym = display.keycode_to_keysym(event.detail, 0)
            if keysyms.modifier_name(keysym) == "shift":
                held = self._shifts_down
                (held.add if event.type == X.KeyPress else held.discard)(event.detail)
            elif event.type == X.KeyPress and self._shifts_down:
                event._data["state"] |= X.ShiftMask
            super()._handle_message(display, event, injected)  # type: ignore[misc]

    return RecordingListener
