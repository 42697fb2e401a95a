"""The hotkey verbs and checks with hotkeys really on: a daemon on a private Xvfb."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import DaemonProcess, write_config
from tests.integration.cli.conftest import Run
from tests.integration.hotkeys.conftest import x_display, xvfb  # noqa: F401 - fixtures

CONFIG = "apps:\n  - name: notes\n    chord: n\n    command: sleep 60\n"


def test_pause_resume_status_trigger_and_doctor(
    x_display: str,  # noqa: F811
    cli: Callable[..., Run], config_dir: Path, start_daemon: Callable[..., DaemonProcess],
) -> None:
    write_config(config_dir, CONFIG)
    before = cli("doctor", "--json")  # daemon down: can this session have hotkeys?
    assert ("PASS", "X11 with the RECORD extension: hotkeys can run here") in [
        (c["status"], c["message"]) for c in before.json["checks"] if c["name"] == "hotkeys"]
    start_daemon()
    on = "on (leader ctrl+space, xorg, keys grabbed)"
    assert cli("status").lines[2] == f"hotkeys: {on}"
    paused = cli("pause")
    assert paused.code == 0 and paused.out == "hotkeys: paused (leader ctrl+space)\n"
    assert cli("status", "--json").json["hotkeys"]["paused"] is True
    refused = cli("trigger")
    assert refused.code == 1 and "paused" in refused.err
    resumed = cli("resume", "--json")
    assert resumed.code == 0
    assert (resumed.json["paused"], resumed.json["suppressing"]) == (False, True)
    assert cli("status").lines[2] == f"hotkeys: {on}"
    leader = cli("trigger")
    assert leader.code == 0, leader.err
    assert leader.out == "leader pressed: the next chord key launches its app\n"
    doctor = cli("doctor", "--json")
    hotkeys = [c for c in doctor.json["checks"] if c["name"] == "hotkeys"]
    assert hotkeys == [{"name": "hotkeys", "status": "PASS",
                        "message": "xorg, leader ctrl+space, keys grabbed"}]
