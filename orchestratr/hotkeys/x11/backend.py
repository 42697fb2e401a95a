"""The X11 ``Backend``: the display check, the pynput listener and the LeaderGrab, wired."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestratr.controls import BackendName
from orchestratr.hotkeys.backend import CHECK_TIMEOUT_S, BackendStatus, Grab, KeyCallback
from orchestratr.hotkeys.x11 import display
from orchestratr.registry.keys import Leader


class X11Backend:
    name = BackendName.xorg
    needs = "X11 with the RECORD extension"

    def __init__(self) -> None:
        self._listener: Any = None  # a KeyListener, imported once the display check passed

    def unavailable_reason(self, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
        return display.unavailable_reason(timeout_s)

    def start(self, on_press: KeyCallback, on_release: KeyCallback) -> None:
        from orchestratr.hotkeys.x11.listener import KeyListener

        self._listener = KeyListener(on_press, on_release)
        self._listener.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def grab(self, leader: Leader, timeout_s: float,
             on_failure: Callable[[Grab], None]) -> Grab:
        from orchestratr.hotkeys.x11.grab import LeaderGrab

        grab = LeaderGrab(leader, timeout_s, on_failure=on_failure)
        grab.start()
        return grab

    def status(self) -> BackendStatus:
        listener = self._listener
        return BackendStatus(keys_seen=listener.keys_seen if listener is not None else 0,
                             limitation=display.wayland_note())
