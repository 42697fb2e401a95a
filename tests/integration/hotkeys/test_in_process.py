"""The grab and the hotkey service inside the test process, on the private Xvfb: what a daemon
subprocess cannot show from outside (a grab thread killed under it, lifecycle races, the
autorepeat fallback without XKB) with the same real keys and the same focused window."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestratr.hotkeys.service import MAX_GRAB_RESTARTS, HotkeyService
from orchestratr.hotkeys.x11.backend import X11Backend
from orchestratr.registry.keys import parse_leader
from orchestratr.supervisor.bus import EventBus
from tests.conftest import run_concurrently, wait_for
from tests.integration.hotkeys.conftest import AUTOREPEAT_DELAY_S, Keyboard, Window


@pytest.fixture
def launched() -> list[str]:
    return []


@pytest.fixture
def service(x_display: str, keyboard: Keyboard, window: Window,
            launched: list[str]) -> Iterator[HotkeyService]:
    """A started service whose listener has heard its first key (pynput's start-up race)."""
    service = HotkeyService("ctrl+space", 500, launch=launched.append,
                            chords=lambda: {"e": "editor", "f": "files"},
                            publish=EventBus().publish, backend=X11Backend())
    assert service.start().suppressing
    wait_for(lambda: keyboard.tap("Shift_L") or service.keys_seen > 0,
             what="the listener to hear a key")
    yield service
    listener = service._backend._listener._listener  # noqa: SLF001 - pynput's own thread
    service.stop()
    keyboard.tap("Shift_L")  # pynput's stop returns only after one more key (its bug)
    listener.join(timeout=2)
    assert not listener.is_alive()


def chord_is_suppressed(keyboard: Keyboard, window: Window, launched: list[str]) -> bool:
    """Leader + e launches the editor and neither key reaches the window."""
    window.pressed.clear()
    launched.clear()
    keyboard.leader()
    keyboard.tap("e")
    wait_for(lambda: launched == ["editor"], what="the editor to be launched")
    keyboard.tap("x")
    assert window.received("x")
    return "space" not in window.pressed and "e" not in window.pressed


def cut_grab_connection(service: HotkeyService) -> None:
    """Shut the grab's X socket under it, as a server dropping the client would: its thread
    fails on its next read. (XKillClient needs a resource of the client's; the grab has none.)"""
    grab = service._grab  # noqa: SLF001 - the one object whose connection the test must name
    grab._display.display.socket.shutdown(socket.SHUT_RDWR)  # noqa: SLF001
    wait_for(lambda: not grab.alive, what="the grab thread to die")


@pytest.mark.parametrize("detectable", [True, False], ids=["xkb", "lookahead"])
def test_held_keys_never_repeat_into_the_app(
    x_display: str, keyboard: Keyboard, window: Window, detectable: bool
) -> None:
    from orchestratr.hotkeys.x11.grab import LeaderGrab

    grab = LeaderGrab(parse_leader("ctrl+space"), 0.5, detectable_autorepeat=detectable)
    grab.start()
    try:
        assert grab.detectable_autorepeat is detectable
        keyboard.leader(hold=AUTOREPEAT_DELAY_S + 0.15)  # the leader repeats inside the window
        keyboard.tap("e", hold=0.6)  # the chord repeats, held past the window's end
        # without XKB, a key typed within the look-ahead would be taken
        wait_for(lambda: not grab.grabbed, what="the grab to let the keyboard go")
        keyboard.tap("x")
        assert window.received("x")
        assert "space" not in window.pressed and "e" not in window.pressed
    finally:
        grab.stop()
    assert not grab.alive and keyboard.can_grab()


def test_a_grab_loop_that_raises_mid_window_frees_the_keyboard(
    x_display: str, keyboard: Keyboard, window: Window
) -> None:
    """The active grab is synchronous, so a loop dying without its ``finally`` would leave
    the keyboard frozen for every app: a fault injected into our own loop proves it does not
    (the connection stays up, unlike in the killed-connection test)."""
    from Xlib import X

    from orchestratr.hotkeys.x11.grab import LeaderGrab

    class FailingOnTheChord(LeaderGrab):
        def _on_event(self, display: Any, event: Any, window: Any) -> Any:
            if window is not None and event.type == X.KeyPress:
                raise RuntimeError("a bug in the grab loop")
            return super()._on_event(display, event, window)

    failed: list[LeaderGrab] = []
    grab = FailingOnTheChord(parse_leader("ctrl+space"), 0.5, on_failure=failed.append)
    grab.start()
    keyboard.leader()
    keyboard.tap("e")  # the loop raises on it, with the keyboard grabbed and frozen on it
    wait_for(lambda: failed == [grab], what="on_failure (called after the keyboard is freed)")
    assert not grab.alive
    keyboard.tap("x")
    assert window.received("x")
    keyboard.tap("e")  # the server must not think e is still down (it then drops this press)
    assert window.received("e")
    assert grab.failure == "the key grab failed: RuntimeError: a bug in the grab loop"
    grab.stop()
    assert keyboard.can_grab()


def test_a_killed_grab_is_reported_restarted_and_given_up_clearly(
    service: HotkeyService, keyboard: Keyboard, window: Window, launched: list[str]
) -> None:
    with capture_logs() as logs:
        keyboard.leader()  # mid-window: the grab holds the keyboard when it dies
        cut_grab_connection(service)
        keyboard.tap("x")  # the keyboard is free (and x ends the engine's window, unbound)
        assert window.received("x")
        wait_for(lambda: service.status().suppressing, what="the grab to be restarted")
    restarts = [e for e in logs if e["event"] == "hotkey_grab_restarting"]
    assert len(restarts) == 1 and restarts[0]["log_level"] == "warning"
    assert "the key grab failed" in restarts[0]["reason"]
    assert chord_is_suppressed(keyboard, window, launched)

    with capture_logs() as logs:
        for _ in range(MAX_GRAB_RESTARTS):
            wait_for(lambda: service.status().suppressing, what="a restarted grab")
            cut_grab_connection(service)
        wait_for(lambda: any(e["event"] == "hotkeys_not_suppressed" for e in logs),
                 what="the service to give up, with a warning")
    status = service.status()
    assert (status.enabled, status.suppressing) == (True, False)
    assert status.reason is not None and "the key grab failed" in status.reason
    assert not chord_is_suppressed(keyboard, window, launched)  # launches, keys reach the app

    assert service.resume().suppressing  # resume tries again
    assert chord_is_suppressed(keyboard, window, launched)


def test_concurrent_pause_resume_and_reload_leave_one_working_grab(
    service: HotkeyService, keyboard: Keyboard, window: Window, launched: list[str]
) -> None:
    errors: list[BaseException] = []

    def churn(i: int) -> None:
        try:
            for j in range(8):
                if i == 0:
                    service.pause()
                    service.resume()
                else:
                    service.configure("ctrl+space", 600 + 10 * i + j)
        except BaseException as exc:  # noqa: BLE001 - collected: a thread's error is the bug
            errors.append(exc)

    with capture_logs() as logs:
        run_concurrently(churn, 3)
    assert errors == []
    assert not [e for e in logs if e["event"] in ("hotkeys_not_suppressed", "hotkey_grab_failed")]
    assert service.status().suppressing
    assert [t.name for t in threading.enumerate()].count("hotkey-grab") == 1
    assert chord_is_suppressed(keyboard, window, launched)


def test_a_chord_typed_as_soon_as_start_returns_is_handled(
    x_display: str, keyboard: Keyboard, window: Window
) -> None:
    """``enabled`` means a key typed now is handled: start() used to return before XRecord
    recorded, and the first leader+chord was lost (issue 13; 28 of 30 in the notes)."""
    for attempt in range(5):
        launched: list[str] = []
        service = HotkeyService("ctrl+space", 500, launch=launched.append,
                                chords=lambda: {"e": "editor"}, publish=EventBus().publish,
                                backend=X11Backend())
        try:
            assert service.start().enabled
            keyboard.leader()
            keyboard.tap("e")
            wait_for(lambda: launched == ["editor"], timeout=3,  # noqa: B023 - this attempt's
                     what=f"the first chord of start {attempt} to launch")
        finally:
            listener = service._backend._listener._listener  # noqa: SLF001 - pynput's thread
            service.stop()
            keyboard.tap("Shift_L")  # pynput's stop returns only after one more key (its bug)
            listener.join(timeout=2)
