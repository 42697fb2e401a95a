"""Run-or-raise on X11: find an app's top-level window and activate it through EWMH.

A window is the app's when its ``_NET_WM_PID`` is one of the app's processes (its whole tree:
a launcher shell that forks the GUI and exits is the common case), or, when that property is
missing or names a process we do not know (Flatpak reports a sandbox pid), when the X server's
own answer (X-Resource ``QueryClientIds``) is; or, for an app with ``window:``, when its
WM_CLASS or title matches. Of several, the most recently active is raised (the top of
``_NET_CLIENT_LIST_STACKING``). Activation is the ``_NET_ACTIVE_WINDOW`` client message with
source indication 2 (a pager: window managers honour it) and a current server timestamp, after
switching to the window's desktop; the WM de-iconifies, raises and focuses it.

Never raises: no display, no window manager, no window yet are answers (``Focus`` with a
reason). python-xlib is imported at the first raise, not with the daemon.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from orchestratr.fds import readable
from orchestratr.registry.model import AppSpec, WindowMatch
from orchestratr.supervisor.focus import Focus

log = structlog.get_logger("orchestratr.desktop")

SOURCE_PAGER = 2  # EWMH source indication: a pager or taskbar, obeyed without focus guards
ALL_DESKTOPS = 0xFFFFFFFF
CONFIRM_S = 0.5  # how long to wait for the window manager to make the window active
CLIENT_PID = 1 << 1  # X-Resource LocalClientPIDMask
Mine = Callable[[int], bool]  # whether a pid is one of the app's processes


class X11Windows:
    """The supervisor's ``Windows`` port on X11. ``owns(pid, candidate)`` tells whether
    ``candidate`` is a process of the app led by ``pid`` (``processes.tracker.in_app``)."""

    def __init__(self, owns: Callable[[int, int], bool],
                 display_name: str | None = None) -> None:
        self._owns = owns
        self._display_name = display_name
        self._lock = threading.Lock()  # one raise at a time: two would fight over the focus

    def bring_forward(self, spec: AppSpec, pid: int | None) -> Focus:
        if not (self._display_name or os.environ.get("DISPLAY")):
            if os.environ.get("WAYLAND_DISPLAY"):
                return Focus(False, "Wayland without XWayland: windows cannot be raised")
            return Focus(False, "no display (DISPLAY is not set)")
        if pid is None and spec.window is None:
            return Focus(False, "no process to find a window of")
        mine = None if pid is None else functools.cache(functools.partial(self._owns, pid))
        with self._lock:
            try:
                return self._bring_forward(spec.window, mine)
            except Exception as exc:  # noqa: BLE001 - python-xlib raises many unrelated types
                log.debug("raise_failed", app=spec.name, error=repr(exc))
                return Focus(False, f"X error while raising: {exc}")

    def _bring_forward(self, match: WindowMatch | None, mine: Mine | None) -> Focus:
        from Xlib.display import Display

        try:
            display = Display(self._display_name)
        except Exception as exc:  # noqa: BLE001 - python-xlib raises several unrelated types
            return Focus(False, f"cannot connect to the X display: {exc}")
        try:
            return _Desktop(display).activate_app(match, mine)
        finally:
            display.close()


class _Desktop:
    """One connection's view of the EWMH desktop."""

    def __init__(self, display: Any) -> None:
        self.display = display
        self.root = display.screen().root
        self._atoms: dict[str, int] = {}

    def atom(self, name: str) -> int:
        if name not in self._atoms:
            self._atoms[name] = self.display.intern_atom(name)
        return self._atoms[name]

    def cardinals(self, window: Any, name: str) -> list[int]:
        from Xlib import X

        prop = window.get_full_property(self.atom(name), X.AnyPropertyType)
        return list(prop.value) if prop is not None else []

    def activate_app(self, match: WindowMatch | None, mine: Mine | None) -> Focus:
        supported = set(self.cardinals(self.root, "_NET_SUPPORTED"))
        if self.atom("_NET_ACTIVE_WINDOW") not in supported:
            return Focus(False, "no EWMH window manager (_NET_ACTIVE_WINDOW unsupported)")
        stacking = (self.cardinals(self.root, "_NET_CLIENT_LIST_STACKING")
                    or self.cardinals(self.root, "_NET_CLIENT_LIST"))
        window = self.find(stacking, match, mine)
        if window is None:
            if mine is not None:
                return Focus(False, "no window of its processes yet")
            return Focus(False, "no window matches its window: class/title")
        self.watch(window)
        self.activate(window)
        if self.wait_active(window):
            return Focus(True)
        return Focus(False, f"the window manager did not activate window {window.id:#x}")

    def find(self, stacking: list[int], match: WindowMatch | None, mine: Mine | None) -> Any:
        """The topmost client window of the app's processes (``mine``) or matching ``match``
        (stacking is bottom to top, so the last found is the most recently active)."""
        windows = [self.display.create_resource_object("window", wid) for wid in stacking]
        if mine is not None:
            owned = [w for w in windows if _is(mine, _first(self.cardinals(w, "_NET_WM_PID")))]
            if not owned:
                owned = [w for w in windows if _is(mine, self.client_pid(w))]
            if owned:
                return owned[-1]
        if match is not None:
            matching = [w for w in windows if self.matches(w, match)]
            if matching:
                return matching[-1]
        return None

    def client_pid(self, window: Any) -> int | None:
        """The pid of the process that owns ``window``'s X connection, as the server knows it
        (X-Resource 1.2); None without the extension or for a remote client."""
        if not self.display.has_extension("X-Resource"):
            return None
        reply = self.display.res_query_client_ids([{"client": window.id, "mask": CLIENT_PID}])
        for client_id in reply.ids:
            if client_id.spec.mask == CLIENT_PID and client_id.value:
                return int(client_id.value[0])
        return None

    def matches(self, window: Any, match: WindowMatch) -> bool:
        if match.class_ is not None:
            names = window.get_wm_class() or ()
            if not any(re.search(match.class_, n, re.IGNORECASE) for n in names):
                return False
        return match.title is None or bool(re.search(match.title, self.title(window),
                                                     re.IGNORECASE))

    def title(self, window: Any) -> str:
        prop = window.get_full_property(self.atom("_NET_WM_NAME"), self.atom("UTF8_STRING"))
        if prop is not None and prop.value:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        name = window.get_wm_name()
        return name.decode("latin-1") if isinstance(name, bytes) else (name or "")

    def activate(self, window: Any) -> None:
        """Switch to its desktop if needed, then ask the WM to activate it (de-iconify, raise,
        focus) with a current timestamp."""
        stamp = self.server_time()
        desktop = _first(self.cardinals(window, "_NET_WM_DESKTOP"))
        current = _first(self.cardinals(self.root, "_NET_CURRENT_DESKTOP"))
        if desktop not in (None, ALL_DESKTOPS, current):
            self.send(self.root, "_NET_CURRENT_DESKTOP", [desktop, stamp])
        active = _first(self.cardinals(self.root, "_NET_ACTIVE_WINDOW")) or 0
        self.send(window, "_NET_ACTIVE_WINDOW", [SOURCE_PAGER, stamp, active])
        self.display.flush()

    def send(self, window: Any, message: str, data: list[int]) -> None:
        from Xlib import X
        from Xlib.protocol import event

        padded = (data + [0] * 5)[:5]
        ev = event.ClientMessage(window=window, client_type=self.atom(message),
                                 data=(32, padded))
        self.root.send_event(ev, event_mask=X.SubstructureRedirectMask
                             | X.SubstructureNotifyMask)

    def server_time(self) -> int:
        """The server's current time: a zero-length append to a property of the root window
        makes the server send us a PropertyNotify stamped now."""
        from Xlib import X

        self.root.change_attributes(event_mask=X.PropertyChangeMask)
        atom = self.atom("_ORCHESTRATR_TIME")
        self.root.change_property(atom, self.atom("STRING"), 8, b"", mode=X.PropModeAppend)
        found = self._next(lambda ev: ev.type == X.PropertyNotify and ev.atom == atom, CONFIRM_S)
        return int(found.time) if found is not None else X.CurrentTime

    def watch(self, window: Any) -> None:
        """Hear ``window``'s focus and state changes: selected before the activation is sent,
        so its FocusIn cannot come before we listen."""
        from Xlib import X

        window.change_attributes(event_mask=X.PropertyChangeMask | X.FocusChangeMask)

    def wait_active(self, window: Any) -> bool:
        """Whether the WM made ``window`` the active, visible window within CONFIRM_S.

        The window's own FocusIn is proof by itself. The root's ``_NET_ACTIVE_WINDOW`` says
        only that it changed, so it is read again, and by then someone may have activated
        another window: the bench's pager did within 3 ms, and the hotkey worker then waited
        out CONFIRM_S, holding up the next chord by ~450 ms."""
        from Xlib import X

        watched = {self.atom("_NET_ACTIVE_WINDOW"), self.atom("_NET_WM_STATE")}

        def shown() -> bool:
            hidden = self.atom("_NET_WM_STATE_HIDDEN") in self.cardinals(window, "_NET_WM_STATE")
            return _first(self.cardinals(self.root, "_NET_ACTIVE_WINDOW")) == window.id \
                and not hidden

        def proof(ev: Any) -> bool:
            if ev.type == X.FocusIn:  # not a grab's start or end, nor the pointer's window
                return ev.window.id == window.id \
                    and ev.mode in (X.NotifyNormal, X.NotifyWhileGrabbed) \
                    and ev.detail not in (X.NotifyPointer, X.NotifyPointerRoot, X.NotifyDetailNone)
            return ev.type == X.PropertyNotify and ev.atom in watched and shown()

        return shown() or self._next(proof, CONFIRM_S) is not None

    def _next(self, wanted: Callable[[Any], bool], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        self.display.flush()
        while True:
            while self.display.pending_events():
                ev = self.display.next_event()
                if wanted(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable([self.display], left)


def _first(values: Iterable[int]) -> int | None:
    return next(iter(values), None)


def _is(mine: Mine, pid: int | None) -> bool:
    return pid is not None and mine(pid)
