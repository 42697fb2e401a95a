"""The chord table on screen: ``?`` after the leader (or ``chord_hint_ms`` after it with no
chord yet, like which-key) shows every chord, its app and the app's state in a small
always-on-top window (WM_CLASS ``orchestratr``, title ``orchestratr chords``), closed by any
key, a click or the timeout.

It follows the event bus (the hotkey service publishes ``hotkey`` with action ``help``) and
draws with python-xlib on a connection of its own, on its own thread. The keys it closes on
are typed into it after the grab has let go: the engine hears every key through XRecord, so
the window never takes a chord from it. Keys the grab still holds (the chord that follows a
hint) reach only the engine: the window closes on the engine's next word instead.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from orchestratr.fds import readable
from orchestratr.supervisor.bus import EventBus, Subscription
from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.desktop")

WM_CLASS = "orchestratr"
TITLE = "orchestratr chords"
SHOWN_S = 8.0  # closed by then if no key or click came
ENGINE_POLL_S = 0.05  # while shown: how often the engine's news is looked at
LINE_PX, PAD_PX, CHAR_PX = 16, 10, 7  # the core "fixed" font's cell, roughly

Row = tuple[str, str, str]  # chord, app, state


class ChordWindow:
    """``rows()`` is the table to show: (chord, app, state), sorted as it should read."""

    def __init__(self, bus: EventBus, rows: Callable[[], list[Row]],
                 shown_s: float = SHOWN_S) -> None:
        self._bus = bus
        self._rows = rows
        self._shown_s = shown_s
        self._subscription: Subscription | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._subscription = self._bus.subscribe(accept=lambda e: e.type == "hotkey")
        self._thread = supervised("chord-window", self._follow)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._thread is not None:
            self._thread.join(timeout=self._shown_s + 1)

    def _follow(self) -> None:
        assert self._subscription is not None
        for event in self._subscription:
            if event.data.get("action") != "help":
                continue
            try:
                self.show(self._rows())
            except Exception as exc:  # noqa: BLE001 - a drawing error must not end the thread
                log.warning("chord_window_failed", error=repr(exc))

    def show(self, rows: list[Row]) -> None:
        """Show the table until a key, a click or ``shown_s``; returns once it is closed."""
        if not os.environ.get("DISPLAY"):
            return
        from Xlib import X, Xatom
        from Xlib.display import Display

        lines = [f"{chord or '-':>8}  {app:<24} {state}" for chord, app, state in rows]
        lines = lines or ["no chords: give apps a chord: in config.yml"]
        display = Display()
        try:
            screen = display.screen()
            width = PAD_PX * 2 + CHAR_PX * max(len(line) for line in lines)
            height = PAD_PX * 2 + LINE_PX * len(lines)
            x = max(0, (screen.width_in_pixels - width) // 2)
            y = max(0, (screen.height_in_pixels - height) // 3)
            window = screen.root.create_window(
                x, y, width, height, 1, screen.root_depth, background_pixel=screen.white_pixel,
                event_mask=X.ExposureMask | X.KeyPressMask | X.ButtonPressMask)
            window.set_wm_class(WM_CLASS, WM_CLASS)
            window.set_wm_name(TITLE)
            window.change_property(display.intern_atom("_NET_WM_NAME"),
                                   display.intern_atom("UTF8_STRING"), 8, TITLE.encode())
            window.change_property(display.intern_atom("_NET_WM_STATE"), Xatom.ATOM, 32,
                                   [display.intern_atom("_NET_WM_STATE_ABOVE")])
            window.change_property(display.intern_atom("_NET_WM_WINDOW_TYPE"), Xatom.ATOM, 32,
                                   [display.intern_atom("_NET_WM_WINDOW_TYPE_DIALOG")])
            font = display.open_font("fixed")
            gc = window.create_gc(foreground=screen.black_pixel,
                                  background=screen.white_pixel, font=font)
            window.map()
            display.flush()
            self._run(display, window, gc, lines)
            window.destroy()
            display.flush()
        finally:
            display.close()

    def _run(self, display: Any, window: Any, gc: Any, lines: list[str]) -> None:
        from Xlib import X

        deadline = time.monotonic() + self._shown_s
        while True:
            while display.pending_events():
                event = display.next_event()
                if event.type == X.Expose:
                    for i, line in enumerate(lines):
                        window.draw_text(gc, PAD_PX, PAD_PX + LINE_PX * (i + 1) - 4,
                                         line.encode("latin-1", "replace"))
                    display.flush()
                elif event.type in (X.KeyPress, X.ButtonPress):
                    return
            if self._engine_moved_on():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable([display], min(left, ENGINE_POLL_S))

    def _engine_moved_on(self) -> bool:
        """A chord, a cancel or a new leader since the table showed (keys it never saw)."""
        news = self._subscription.waiting(64) if self._subscription is not None else []
        return any(event.data.get("action") != "help" for event in news)
