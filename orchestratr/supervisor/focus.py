"""What the supervisor asks of the desktop, as a small interface: bring an app's window
forward (run-or-raise). ``orchestratr.desktop`` implements it with EWMH over python-xlib; the
supervisor knows no X, and a daemon without a display is handed ``NoWindows``.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from orchestratr.registry.model import AppSpec


@attrs.frozen
class Focus:
    """What a launch did to the app's window."""

    focused: bool
    reason: str | None = None  # why nothing was raised (None when ``focused``)


SPAWNED = Focus(False, "launched: a new process, its window is not up yet")


class Windows(Protocol):
    def bring_forward(self, spec: AppSpec, pid: int | None) -> Focus:
        """Activate the app's window: the most recently active top-level window of ``pid``'s
        process tree, or one matching ``spec.window``. Never raises: a missing display, window
        manager or window is a ``Focus`` with a reason."""


class NoWindows:
    def __init__(self, reason: str = "no desktop: this daemon raises no windows") -> None:
        self.reason = reason

    def bring_forward(self, spec: AppSpec, pid: int | None) -> Focus:
        return Focus(False, self.reason)
