"""Desktop notifications through a real notification server (dunst) on a private session bus,
observed with dbus-monitor and dunstctl."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from orchestratr.desktop.notifications import Notice, Notifier
from orchestratr.supervisor.bus import EventBus
from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.api.conftest import HttpApi, port_of
from tests.integration.desktop.conftest import SessionBus

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
    crashy = [c for c in session_bus.notifications() if any("crashy" in s for s in c)]
    first_id = crashy[0][1]
    assert first_id == "0"  # a new bubble, then updates of that same one
    assert len({c[1] for c in crashy[1:]}) == 1 and crashy[1][1] != "0"
    wait_for(lambda: session_bus.displayed() >= 2, what="dunst to show them")
    assert session_bus.displayed() <= 2  # one bubble for typo, one for crashy's whole loop


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
