"""Can global hotkeys work here? Asked before pynput is imported, because that import raises
without an X server and hangs-free failure matters more than a traceback."""

from __future__ import annotations

import os
import sys

FALLBACK = "bind your desktop's own shortcut to `orchestratr trigger <chord>`"


def unavailable_reason() -> str | None:
    """Why hotkeys cannot run in this session, or None when they can (X11 with RECORD)."""
    if sys.platform != "linux":
        return f"hotkeys are implemented for X11 only, not {sys.platform}"
    if not os.environ.get("DISPLAY"):
        if os.environ.get("WAYLAND_DISPLAY"):
            return "Wayland without XWayland: global key listening is not allowed"
        return "no display (DISPLAY is not set)"
    try:
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
