"""Can global hotkeys work here? Asked before pynput is imported, because that import raises
without an X server, and bounded in time, because an X server that accepts connections but
never answers (stopped, or wedged) would otherwise hang the daemon's start for good."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from orchestratr.hotkeys.backend import CHECK_TIMEOUT_S


def unavailable_reason(timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
    """Why hotkeys cannot run in this session, or None when they can (X11 with RECORD)."""
    if not os.environ.get("DISPLAY"):
        if os.environ.get("WAYLAND_DISPLAY"):
            return "Wayland without XWayland: global key listening is not allowed"
        return "no display (DISPLAY is not set)"
    return _within(timeout_s, _probe_x_server)


def _within(timeout_s: float, probe: Callable[[], str | None]) -> str | None:
    """Run ``probe`` on a daemon thread and give up after ``timeout_s``. A probe stuck on a
    silent server keeps its thread and socket, but the caller (the daemon's main thread, which
    must still answer SIGTERM) goes on with hotkeys off."""
    answers: list[str | None] = []
    thread = threading.Thread(target=lambda: answers.append(probe()), daemon=True,
                              name="hotkeys-display-check")
    thread.start()
    thread.join(timeout_s)
    if not answers:
        return (f"X display {os.environ['DISPLAY']!r} did not answer within {timeout_s:g} s "
                "(is the X server stopped or hung?)")
    return answers[0]


# The X extensions the daemon uses: RECORD (pynput's key listener), XTEST (which pynput
# imports) and X-Resource (ewmh.py: whose window it is, when _NET_WM_PID is not set).
EXTENSIONS_USED = ("RECORD", "XTEST", "X-Resource")


def _load_only_the_extensions_used() -> None:
    """python-xlib loads a module for every extension the X server has (XInput, RANDR, ...)
    on each connection: 0.8 MiB for one, 1.5 MiB of a daemon with hotkeys on (measured with
    bench/hotkeys.py). Its list is the process's: this runs before the first connection."""
    import Xlib.ext

    listed = vars(Xlib.ext)  # the list that Display() goes through (not in the type stubs)
    listed["__extensions__"] = [(name, module) for name, module in listed["__extensions__"]
                                if name in EXTENSIONS_USED]


def _probe_x_server() -> str | None:
    try:
        _load_only_the_extensions_used()
        from Xlib.display import Display

        display = Display()
    except Exception as exc:  # noqa: BLE001 - python-xlib raises several unrelated types
        return f"cannot connect to X display {os.environ['DISPLAY']!r}: {exc}"
    try:
        if not display.has_extension("RECORD"):
            return "the X server lacks the RECORD extension"
    finally:
        display.close()
    try:
        import pynput.keyboard  # noqa: F401
    except ImportError as exc:
        return (str(exc).splitlines() or ["pynput failed to import"])[0]
    return None


def wayland_note() -> str | None:
    """Under XWayland only keys sent to X11 windows are seen: worth a warning."""
    if os.environ.get("WAYLAND_DISPLAY"):
        return "Wayland session: only keys typed into X11 (XWayland) windows are seen"
    return None
