"""A private desktop: Xvfb with a real EWMH window manager (openbox), a private D-Bus session
bus with a real notification server (dunst), and a way to read the window manager's view."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.hotkeys.conftest import (  # noqa: F401 - fixtures, for this folder
    Keyboard,
    start_xvfb,
    x_display,
    xvfb,
)

NEEDED = ("Xvfb", "openbox", "xterm", "dunst", "dbus-daemon", "dbus-monitor")


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Desktop:
    """The window manager's answers, read as a pager would."""

    def __init__(self, name: str) -> None:
        from Xlib import display

        self.name = name
        self.display = display.Display(name)
        self.root = self.display.screen().root

    def _cards(self, window: Any, atom: str) -> list[int]:
        from Xlib import X

        prop = window.get_full_property(self.display.intern_atom(atom), X.AnyPropertyType)
        return list(prop.value) if prop is not None else []

    def clients(self) -> list[int]:
        return self._cards(self.root, "_NET_CLIENT_LIST_STACKING")

    def active(self) -> int | None:
        found = self._cards(self.root, "_NET_ACTIVE_WINDOW")
        return found[0] or None if found else None

    def window(self, wid: int) -> Any:
        return self.display.create_resource_object("window", wid)

    def title(self, wid: int) -> str:
        name = self.window(wid).get_wm_name()
        return name.decode() if isinstance(name, bytes) else (name or "")

    def titled(self, title: str, timeout: float = 15.0) -> int:
        """The client window with this title, once it is mapped and managed."""
        def find() -> int | None:
            return next((w for w in self.clients() if self.title(w) == title), None)

        return wait_for(find, timeout, what=f"a window titled {title!r}")  # type: ignore[return-value]

    def hidden(self, wid: int) -> bool:
        hidden = self.display.intern_atom("_NET_WM_STATE_HIDDEN")
        return hidden in self._cards(self.window(wid), "_NET_WM_STATE")

    def minimise(self, wid: int) -> None:
        """ICCCM iconify: a WM_CHANGE_STATE client message with IconicState (3)."""
        from Xlib import X
        from Xlib.protocol import event

        message = event.ClientMessage(window=self.window(wid),
                                      client_type=self.display.intern_atom("WM_CHANGE_STATE"),
                                      data=(32, [3, 0, 0, 0, 0]))
        self.root.send_event(message,
                             event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask)
        self.display.sync()
        wait_for(lambda: self.hidden(wid), what="the window to be minimised")

    def activate(self, wid: int) -> None:
        """What a click on another window does: that one becomes active."""
        from Xlib import X
        from Xlib.protocol import event

        message = event.ClientMessage(window=self.window(wid),
                                      client_type=self.display.intern_atom("_NET_ACTIVE_WINDOW"),
                                      data=(32, [2, X.CurrentTime, 0, 0, 0]))
        self.root.send_event(message,
                             event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask)
        self.display.sync()
        wait_for(lambda: self.active() == wid, what=f"window {wid:#x} to be active")


@pytest.fixture(scope="session")
def desktop_display() -> Iterator[str]:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: .ci/run installs them")
    server, name = start_xvfb()
    wm = subprocess.Popen(["openbox", "--sm-disable"], env={**os.environ, "DISPLAY": name},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = Desktop(name)
        wait_for(lambda: probe._cards(probe.root, "_NET_SUPPORTING_WM_CHECK"), 10,
                 what="openbox to manage the display")
        probe.display.close()
        yield name
    finally:
        _stop(wm)
        _stop(server)


@pytest.fixture
def desktop(desktop_display: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desktop]:
    monkeypatch.setenv("DISPLAY", desktop_display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    seen = Desktop(desktop_display)
    yield seen
    seen.display.close()


@pytest.fixture
def desktop_keyboard(desktop: Desktop) -> Iterator[Keyboard]:
    keyboard = Keyboard(desktop.name)
    yield keyboard
    keyboard.display.close()


class SessionBus:
    """A private ``dbus-daemon --session`` with dunst serving notifications, observed with
    ``dbus-monitor``."""

    def __init__(self, tmp: Path, display: str) -> None:
        read_fd, write_fd = os.pipe()
        self.daemon = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", f"--print-address={write_fd}"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as reader:
            self.address = reader.readline().strip()
        env = {**os.environ, "DISPLAY": display, "DBUS_SESSION_BUS_ADDRESS": self.address}
        self.env = env
        self.monitor_log = tmp / "dbus-monitor.txt"
        with self.monitor_log.open("w") as out:
            self.monitor = subprocess.Popen(
                ["dbus-monitor", "--address", self.address,
                 "type='method_call',interface='org.freedesktop.Notifications',member='Notify'"],
                stdout=out, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.monitor_log.stat().st_size > 0, what="dbus-monitor to listen")
        self.dunst = subprocess.Popen(["dunst"], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        wait_for(self._served, 10, what="dunst to own org.freedesktop.Notifications")

    def _served(self) -> bool:
        names = subprocess.run(
            ["dbus-send", "--print-reply", f"--bus={self.address}", "--dest=org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames"],
            capture_output=True, text=True).stdout
        return "org.freedesktop.Notifications" in names

    def notifications(self) -> list[list[str]]:
        """Every Notify call seen so far, as its string and number arguments."""
        calls: list[list[str]] = []
        for line in self.monitor_log.read_text().splitlines():
            line = line.strip()
            if "member=Notify" in line:
                calls.append([])
            elif calls and line.startswith(("string ", "uint32 ", "int32 ")):
                calls[-1].append(line.split(" ", 1)[1].strip('"'))
        return calls

    def displayed(self) -> int:
        """What dunst says it shows now, or has shown (its history)."""
        def count(what: str) -> int:
            out = subprocess.run(["dunstctl", "count", what], env=self.env,
                                 capture_output=True, text=True).stdout
            return int(out.strip() or 0)

        return count("displayed") + count("history") + count("waiting")

    def close(self) -> None:
        for proc in (self.dunst, self.monitor, self.daemon):
            _stop(proc)


@pytest.fixture
def session_bus(desktop: Desktop, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionBus]:
    bus = SessionBus(tmp_path, desktop.name)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus.address)
    yield bus
    bus.close()
