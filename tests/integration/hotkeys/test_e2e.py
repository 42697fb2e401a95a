"""Hotkeys end to end: a real daemon on a private Xvfb, real key events (XTest), a real
focused window that must not see the leader or the chord, and real app processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import DaemonProcess, alive, wait_for, write_config
from tests.integration.api.conftest import HttpApi, port_of
from tests.integration.hotkeys.conftest import Keyboard, Window

CONFIG = """\
chord_timeout_ms: 500
apps:
  - name: editor
    chord: e
    command: sleep 60
  - name: files
    chord: f
    command: sleep 60
"""


class Hotkeyed:
    def __init__(self, api: HttpApi, daemon: DaemonProcess) -> None:
        self.api = api
        self.daemon = daemon

    def state(self, name: str) -> str:
        return self.api.app(name)["state"]

    def launched(self, name: str) -> bool:
        return self.state(name) != "stopped"


@pytest.fixture
def hotkeyed(
    x_display: str, config_dir, start_daemon: Callable[..., DaemonProcess], keyboard: Keyboard,
    window: Window,
) -> Iterator[Hotkeyed]:
    """A daemon listening on the Xvfb, past pynput's start-up race (wait() returns before
    XRecord is enabled): tap Shift until the daemon reports a key."""
    write_config(config_dir, CONFIG)
    daemon = start_daemon()
    api = HttpApi(port_of(config_dir))
    status = api.get("/hotkeys").body
    assert (status["enabled"], status["suppressing"], status["backend"]) == (True, True, "xorg")

    def heard() -> bool:
        keyboard.tap("Shift_L")
        time.sleep(0.005)
        return api.get("/hotkeys").body["keys_seen"] > 0

    wait_for(heard, what="the daemon to hear a key")
    yield Hotkeyed(api, daemon)


def test_leader_then_chord_launches_and_neither_key_reaches_the_window(
    hotkeyed: Hotkeyed, keyboard: Keyboard, window: Window
) -> None:
    keyboard.leader()
    time.sleep(0.05)
    keyboard.tap("e", hold=0.03)
    pid = wait_for(lambda: hotkeyed.api.app("editor")["pid"], what="editor to be spawned")
    assert alive(pid)  # type: ignore[arg-type]
    assert hotkeyed.api.app("editor")["history"][0]["source"] == "hotkey"
    time.sleep(0.05)
    keyboard.tap("x")
    assert window.received("x")  # the keyboard is free again
    assert "space" not in window.pressed and "e" not in window.pressed
    assert not hotkeyed.launched("files")


def test_the_chord_again_spawns_no_duplicate(
    hotkeyed: Hotkeyed, keyboard: Keyboard, window: Window
) -> None:
    def chords() -> int:
        return sum(e["event"] == "hotkey" and e.get("action") == "chord"
                   for e in hotkeyed.daemon.events())

    for presses in (1, 2):
        keyboard.leader()
        keyboard.tap("e")
        wait_for(lambda: chords() == presses, what=f"chord {presses} to be recognised")
        wait_for(lambda: hotkeyed.api.app("editor")["pid"], what="editor to run")
    time.sleep(0.1)  # the worker's second launch is a no-op that records nothing to wait on
    history = hotkeyed.api.app("editor")["history"]
    assert [h["to"] for h in history].count("launching") == 1


def test_after_the_timeout_the_chord_is_just_a_key(
    hotkeyed: Hotkeyed, keyboard: Keyboard, window: Window
) -> None:
    keyboard.leader()
    time.sleep(0.7)  # the window is 500 ms
    keyboard.tap("e")
    assert window.received("e")
    time.sleep(0.2)
    assert not hotkeyed.launched("editor")
    assert keyboard.can_grab()


def test_an_unbound_chord_launches_nothing_and_does_not_leak(
    hotkeyed: Hotkeyed, keyboard: Keyboard, window: Window
) -> None:
    keyboard.leader()
    keyboard.tap("q", hold=0.03)
    time.sleep(0.05)
    keyboard.tap("x")
    assert window.received("x")
    assert "q" not in window.pressed and "space" not in window.pressed
    assert {a["state"] for a in hotkeyed.api.get("/apps").body} == {"stopped"}


def test_pause_stops_launches_and_releases_the_keys_resume_restores(
    hotkeyed: Hotkeyed, keyboard: Keyboard, window: Window
) -> None:
    paused = hotkeyed.api.post("/hotkeys/pause").body
    assert (paused["paused"], paused["suppressing"]) == (True, False)
    keyboard.leader()
    keyboard.tap("e")
    assert window.received("e") and "space" in window.pressed  # nothing is grabbed
    time.sleep(0.2)
    assert not hotkeyed.launched("editor")

    resumed = hotkeyed.api.post("/hotkeys/resume").body
    assert (resumed["paused"], resumed["suppressing"]) == (False, True)
    keyboard.leader()
    keyboard.tap("f")
    wait_for(lambda: hotkeyed.launched("files"), what="files to launch after resume")


def test_trigger_without_a_chord_arms_the_leader(
    hotkeyed: Hotkeyed, keyboard: Keyboard, window: Window
) -> None:
    assert hotkeyed.api.post("/trigger").status == 200
    keyboard.tap("f")
    wait_for(lambda: hotkeyed.launched("files"), what="files to launch")


def test_shutdown_leaves_the_keyboard_free(
    hotkeyed: Hotkeyed, keyboard: Keyboard, window: Window
) -> None:
    keyboard.leader()  # leave it mid-window: the grab is held right now
    assert hotkeyed.daemon.stop() == 0
    assert keyboard.can_grab()
    keyboard.tap("x")
    assert window.received("x")
