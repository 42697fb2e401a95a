"""The seam between the hotkey service and an OS's keyboard.

The service and the engine know keys only as ``registry.keys.Key``; a backend turns the OS's
key events into them (``start``) and keeps the leader and its chord from the focused app
(``grab``). X11 lives in ``hotkeys/x11/``; another platform is another subpackage and one line
in ``default_backend``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol

import attrs

from orchestratr.controls import BackendName
from orchestratr.registry.keys import Key, Leader

FALLBACK = "bind your desktop's own shortcut to `orchestratr trigger <chord>`"
# A healthy local server answers in milliseconds; the budget covers importing a key library on
# a cold, busy machine too.
CHECK_TIMEOUT_S = 3.0

KeyCallback = Callable[[Key], None]


class GrabUnavailable(Exception):
    """The leader combination cannot be grabbed (another client owns it, or no display)."""


class Grab(Protocol):
    """A running grab of one leader: it holds the keyboard for ``timeout_s`` after the leader,
    so neither the leader nor the chord reaches the focused app."""

    leader: Leader
    timeout_s: float
    failure: str | None  # why it died, if it did

    @property
    def alive(self) -> bool: ...

    def arm(self) -> bool:
        """Hold the keyboard now, as the leader's press does (the API's leader press);
        whether it is held, once it is."""

    def stop(self) -> None: ...


@attrs.frozen
class BackendStatus:
    keys_seen: int  # key presses observed since start
    limitation: str | None = None  # a running backend's caveat, worth one warning


class Backend(Protocol):
    name: BackendName
    needs: str  # what the session must offer, as ``doctor`` says it

    def unavailable_reason(self, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
        """Why hotkeys cannot run in this session, or None; bounded by ``timeout_s``."""

    def start(self, on_press: KeyCallback, on_release: KeyCallback) -> None:
        """Listen (once ``unavailable_reason`` said None); the callbacks run on its thread."""

    def stop(self) -> None: ...

    def grab(self, leader: Leader, timeout_s: float,
             on_failure: Callable[[Grab], None]) -> Grab:
        """A started grab of ``leader``; ``on_failure`` hears that it died (keyboard freed).

        Raises:
            GrabUnavailable: the leader cannot be grabbed.
        """

    def status(self) -> BackendStatus: ...


@attrs.define
class NoBackend:
    """A platform without a backend: hotkeys are off, for ``reason``."""

    reason: str
    name: BackendName = BackendName.none
    needs: str = "nothing: hotkeys are off"

    def unavailable_reason(self, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
        return self.reason

    def start(self, on_press: KeyCallback, on_release: KeyCallback) -> None:
        raise RuntimeError(self.reason)

    def stop(self) -> None:
        pass

    def grab(self, leader: Leader, timeout_s: float,
             on_failure: Callable[[Grab], None]) -> Grab:
        raise GrabUnavailable(self.reason)

    def status(self) -> BackendStatus:
        return BackendStatus(keys_seen=0)


def default_backend() -> Backend:
    """This platform's backend (imported only here, and only its light module)."""
    if sys.platform == "linux":
        from orchestratr.hotkeys.x11.backend import X11Backend

        return X11Backend()
    return NoBackend(f"hotkeys are implemented for X11 only, not {sys.platform}")
