"""Desktop notifications through a real notification server (dunst) on a private session bus,
observed with dbus-monitor and dunstctl."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestratr.desktop.notifications import Notice, Notifier
from orchestratr.supervisor.bus import EventBus
from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.api.conftest import HttpApi, port_of
from tests.integration.desktop.conftest import Desktop, SessionBus

CRASHING = """\
apps:
  - name: typo
    command: no-such-command-here
  - name: crashy
    command: exit 3
    restart: always
    restart_delay_ms: 1
"""


def test_a_failed_launch_and_a_crash_loop_notify_once_each(
    session_bus: SessionBus, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    write_config(config_dir, CRASHING)
    daemon = start_daemon("--no-hotkeys")
    api = HttpApi(port_of(config_dir))
    api.post("/apps/typo/launch", {})
    wait_for(lambda: any("typo failed" in call for call in session_bus.notifications()),
             what="a notification for the failed launch")
    call = next(c for c in session_bus.notifications() if "typo failed" in c)
    assert call[0] == "orchestratr" and "no-such-command-here" in call[4]
    api.post("/apps/crashy/launch", {})
    daemon.wait_event("app_transition", timeout=20, app="crashy", trigger="crash_loop")
    wait_for(lambda: any("crashy keeps crashing" in c for c in session_bus.notifications()),
             what="the crash loop's notification")
    # one Notify each: a restart is no incident, the loop's end is (6 calls for crashy before)
    crashy = [c for c in session_bus.notifications() if any("crashy" in s for s in c)]
    assert [c[3] for c in crashy] == ["crashy keeps crashing"]
    assert [c[3] for c in session_bus.notifications() if "typo" in c[3]] == ["typo failed"]
    wait_for(lambda: session_bus.displayed() >= 2, what="dunst to show them")
    assert session_bus.displayed() <= 2  # one bubble for typo, one for crashy's whole loop


def test_a_launch_that_cannot_spawn_notifies_once(
    session_bus: SessionBus, config_dir: Path, start_daemon: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """Its failed transition and its launch_failed event are one incident (two calls before)."""
    write_config(config_dir, f"apps:\n  - name: nowhere\n    command: sleep 60\n"
                             f"    cwd: {tmp_path / 'gone'}\n")
    daemon = start_daemon("--no-hotkeys")
    HttpApi(port_of(config_dir)).post("/apps/nowhere/launch", {})
    daemon.wait_event("launch_failed")
    wait_for(lambda: [c for c in session_bus.notifications() if "nowhere" in c[3]],
             what="the notification")
    time.sleep(0.5)  # proves no second call follows within half a second
    assert [c[3] for c in session_bus.notifications() if "nowhere" in c[3]] == [
        "nowhere failed"]


def test_a_rejected_config_edit_names_file_and_field(
    session_bus: SessionBus, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    write_config(config_dir, "apps: []\n")
    daemon = start_daemon("--no-hotkeys")
    write_config(config_dir, "apps:\n  - name: x\n    command: x\n    chord: 12\n")
    daemon.wait_event("reload_failed")
    wait_for(lambda: any("config rejected" in " ".join(c) for c in session_bus.notifications()),
             what="a notification for the rejected config")
    call = next(c for c in session_bus.notifications() if "orchestratr: config rejected" in c)
    assert "config.yml" in call[4] and "chord" in call[4]


def test_notifications_false_shows_nothing(
    session_bus: SessionBus, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    write_config(config_dir, "notifications: false\n" + CRASHING)
    daemon = start_daemon("--no-hotkeys")
    HttpApi(port_of(config_dir)).post("/apps/typo/launch", {})
    daemon.wait_event("app_transition", app="typo", dst="failed")
    time.sleep(0.5)  # proves nothing is sent within half a second
    assert session_bus.notifications() == []


def test_no_session_bus_is_logged_once_at_debug() -> None:
    bus = EventBus()
    notifier = Notifier(bus, enabled=lambda: True, address="unix:path=/nonexistent/bus")
    with capture_logs() as logs:
        assert notifier.show(Notice("app:a", "a failed", "boom")) is None
        assert notifier.show(Notice("app:a", "a failed", "boom")) is None
    said = [e for e in logs if e["event"] == "notifications_unavailable"]
    assert len(said) == 1 and said[0]["log_level"] == "debug"


NOWHERE = """
import sys
from orchestratr.desktop.notifications import Notice, Notifier
from orchestratr.supervisor.bus import EventBus
notifier = Notifier(EventBus(), enabled=lambda: True)
print(notifier.show(Notice("app:a", "a failed", "boom")), "jeepney" in sys.modules)
"""


def test_with_no_session_bus_anywhere_jeepney_is_never_loaded(tmp_path: Path) -> None:
    """No address and no ``$XDG_RUNTIME_DIR/bus``: nothing to connect to, so the D-Bus
    library stays out of the daemon's memory (a headless daemon notifies at start-up that
    hotkeys are unavailable, and at every crash)."""
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", NOWHERE], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.splitlines()[-1].split() == ["None", "False"]


def notified(bus: SessionBus, summary: str) -> list[list[str]]:
    """The Notify calls whose summary (the 4th argument) starts so."""
    return [call for call in bus.notifications() if call[3].startswith(summary)]


def test_hotkeys_unavailable_is_notified(
    session_bus: SessionBus, config_dir: Path, start_daemon: Callable[..., DaemonProcess],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon started at login where keys cannot be listened to says so on screen."""
    write_config(config_dir, "apps: []\n")
    monkeypatch.delenv("DISPLAY")  # the daemon's only: dunst already has its display
    daemon = start_daemon()
    daemon.wait_event("hotkeys_unavailable")
    wait_for(lambda: notified(session_bus, "orchestratr: hotkeys unavailable"),
             what="the hotkeys-unavailable notification")
    [call] = notified(session_bus, "orchestratr: hotkeys unavailable")
    assert call[0] == "orchestratr" and "DISPLAY" in call[4]


DEBUG_TYPO = "log_level: debug\napps:\n  - name: typo\n    command: no-such-command-here\n"


def fail_and_wait(daemon: DaemonProcess) -> None:
    def failures() -> int:
        return sum(e["event"] == "app_transition" and e.get("dst") == "failed"
                   for e in daemon.events())

    before = failures()
    HttpApi(port_of(daemon.config_dir)).post("/apps/typo/launch", {})
    wait_for(lambda: failures() > before, what="the launch to fail")


def test_notifications_resume_when_the_server_appears(
    desktop: Desktop, tmp_path: Path, config_dir: Path,
    start_daemon: Callable[..., DaemonProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bus with no notification server yet (dunst starts after the daemon at login)."""
    bus = SessionBus(tmp_path, desktop.name, serve=False)
    try:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus.address)
        write_config(config_dir, DEBUG_TYPO)
        daemon = start_daemon("--no-hotkeys")
        fail_and_wait(daemon)
        daemon.wait_event("notifications_unavailable")
        bus.serve()
        fail_and_wait(daemon)
        wait_for(lambda: notified(bus, "typo failed"), what="a notification")
        daemon.wait_event("notifications_available")
    finally:
        bus.close()


def test_notifications_resume_when_the_session_bus_appears(
    desktop: Desktop, tmp_path: Path, config_dir: Path,
    start_daemon: Callable[..., DaemonProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bus at all when the daemon starts, and no DBUS_SESSION_BUS_ADDRESS: the bus comes
    up later where systemd puts the user's bus, ``$XDG_RUNTIME_DIR/bus``."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    write_config(config_dir, DEBUG_TYPO)
    daemon = start_daemon("--no-hotkeys")
    fail_and_wait(daemon)
    daemon.wait_event("notifications_unavailable")
    bus = SessionBus(tmp_path, desktop.name, address=f"unix:path={runtime / 'bus'}")
    try:
        fail_and_wait(daemon)
        wait_for(lambda: notified(bus, "typo failed"), what="a notification")
        unavailable = [e for e in daemon.events() if e["event"] == "notifications_unavailable"]
        assert len(unavailable) == 1 and unavailable[0]["level"] == "debug"
    finally:
        bus.close()
