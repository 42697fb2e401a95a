"""A private Xvfb, a focused X window that records the keys it receives, and XTest typing."""

from __future__ import annotations

import functools
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import wait_for

# Autorepeat starts after 250 ms (Xvfb's default is 660), so held-key tests stay short.
AUTOREPEAT = ("-ardelay", "250", "-arinterval", "30")
AUTOREPEAT_DELAY_S = 0.25


def _read_display_number(fd: int, timeout: float = 10.0) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError("Xvfb did not report its display")
        chunk = os.read(fd, 64)
        if not chunk:
            raise RuntimeError("Xvfb exited before reporting its display")
        data += chunk
    return data.decode().strip()


def start_xvfb(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """An Xvfb of our own and its ``:N``: no fixed number to collide with, no sleep to guess
    (it writes the number it took to a pipe once it accepts connections)."""
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        # -noreset: by default the server resets when its last client leaves, and a test
        # connecting during that reset is refused ("connection reset by peer")
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "640x480x24", "-nolisten", "tcp",
         "-noreset", *args],
        pass_fds=(write_fd,), stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        return server, ":" + _read_display_number(read_fd)
    except Exception:
        server.kill()
        raise
    finally:
        os.close(read_fd)


@pytest.fixture(scope="session")
def xvfb() -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is missing: .ci/run installs it (apt-get install xvfb)")
    server, name = start_xvfb(*AUTOREPEAT)
    yield name
    server.terminate()
    server.wait(timeout=5)


class Keyboard:
    """Types with XTest, as hardware would (pynput sees these as real, not injected)."""

    def __init__(self, display_name: str) -> None:
        from Xlib import display

        self.display = display.Display(display_name)

    def keycode(self, name: str) -> int:
        from Xlib import XK

        return self.display.keysym_to_keycode(XK.string_to_keysym(name))

    def down(self, name: str) -> None:
        self._fake("KeyPress", name)

    def up(self, name: str) -> None:
        self._fake("KeyRelease", name)

    def tap(self, name: str, hold: float = 0.0) -> None:
        self.down(name)
        time.sleep(hold)
        self.up(name)

    def combo(self, *names: str, hold: float = 0.03) -> None:
        """Hold every key but the last, tap the last (held ``hold`` s), let go in reverse."""
        *held, last = names
        for name in held:
            self.down(name)
        self.tap(last, hold=hold)
        for name in reversed(held):
            self.up(name)

    def leader(self, hold: float = 0.03) -> None:
        """Ctrl+Space, as a person types it."""
        self.combo("Control_L", "space", hold=hold)

    def can_grab(self) -> bool:
        """Nobody holds the keyboard: our own grab succeeds (and is let go at once)."""
        from Xlib import X

        root = self.display.screen().root
        status = root.grab_keyboard(False, X.GrabModeAsync, X.GrabModeAsync, X.CurrentTime)
        self.display.ungrab_keyboard(X.CurrentTime)
        self.display.sync()
        return status == X.GrabSuccess

    def _fake(self, kind: str, name: str) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        xtest.fake_input(self.display, getattr(X, kind), self.keycode(name))
        self.display.sync()


@functools.cache
def keysym_names() -> dict[int, str]:
    from Xlib import XK

    XK.load_keysym_group("latin1")
    XK.load_keysym_group("miscellany")  # keypad, function and modifier keys
    return {value: name[3:] for name, value in vars(XK).items() if name.startswith("XK_")}


class Window:
    """A focused top-level window that records the key names it is sent, like a user's app."""

    def __init__(self, display_name: str) -> None:
        from Xlib import X, display

        self.display = display.Display(display_name)
        screen = self.display.screen()
        self.window = screen.root.create_window(
            0, 0, 200, 100, 0, screen.root_depth,
            event_mask=X.KeyPressMask | X.FocusChangeMask | X.StructureNotifyMask)
        self.window.map()
        self.display.sync()
        self.pressed: list[str] = []  # keysym names: "space", "e", "Control_L"
        self.display.set_input_focus(self.window, X.RevertToParent, X.CurrentTime)
        self.display.sync()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        from Xlib import X

        while not self._stop.is_set():
            if not self.display.pending_events():
                select.select([self.display], [], [], 0.05)
                continue
            event = self.display.next_event()
            if event.type == X.KeyPress:
                keysym = self.display.keycode_to_keysym(event.detail, 0)
                self.pressed.append(keysym_names().get(keysym, str(keysym)))

    def received(self, name: str, timeout: float = 2.0) -> bool:
        try:
            wait_for(lambda: name in self.pressed, timeout, what=f"{name} to reach the window")
        except pytest.fail.Exception:
            return False
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.window.destroy()
        self.display.close()


@pytest.fixture
def x_display(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """DISPLAY for daemons started by this test."""
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return xvfb


@pytest.fixture
def keyboard(x_display: str) -> Iterator[Keyboard]:
    kb = Keyboard(x_display)
    yield kb
    kb.display.close()


@pytest.fixture
def window(x_display: str) -> Iterator[Window]:
    win = Window(x_display)
    yield win
    win.close()
