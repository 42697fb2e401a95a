"""What install writes on each platform: the macOS LaunchAgent and the Windows Run value are
checked here (this machine cannot load them); the Linux files also run for real in
tests/integration/cli/test_service.py."""

from __future__ import annotations

import configparser
import plistlib
import shlex
import subprocess
from pathlib import Path

import pytest

from orchestratr.cli import service
from orchestratr.cli.service import (
    LAUNCH_AGENT,
    MARKER,
    daemon_command,
    desktop_entry,
    launch_agent_plist,
    marker,
    run_key_value,
    systemd_unit,
)

COMMAND = ["/opt/my python/bin/python", "-m", "orchestratr", "daemon",
           "--config-dir", "/home/u/100% $HOME \"odd\""]


def test_launch_agent_runs_at_login_restarts_on_failure_and_carries_path() -> None:
    text = launch_agent_plist(COMMAND, "/opt/homebrew/bin:/usr/bin")
    agent = plistlib.loads(text.encode())
    assert agent == {
        "Label": LAUNCH_AGENT,
        "ProgramArguments": COMMAND,  # an argv: no quoting to get wrong
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Interactive",
        "EnvironmentVariables": {"PATH": "/opt/homebrew/bin:/usr/bin"},
    }
    assert f"<!-- {MARKER} -->" in text
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')


def test_launch_agent_marker_records_the_directories_install_made() -> None:
    made = [Path("/Users/u/Library/LaunchAgents")]
    text = launch_agent_plist(COMMAND, None, marker(made))
    assert "EnvironmentVariables" not in plistlib.loads(text.encode())
    assert service._made(text) == made


def test_windows_run_value_is_one_command_line_that_splits_back() -> None:
    command = [r"C:\Program Files\Python311\pythonw.exe", "-m", "orchestratr", "daemon",
               "--config-dir", r"C:\Users\Ann Lee\orch"]
    value = run_key_value(command)
    assert value == (r'"C:\Program Files\Python311\pythonw.exe" -m orchestratr daemon '
                     r'--config-dir "C:\Users\Ann Lee\orch"')


def test_windows_prefers_pythonw_beside_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = tmp_path / "python.exe"
    python.touch()
    monkeypatch.setattr(service.sys, "executable", str(python))
    assert daemon_command(None, windows=True)[0] == str(python)  # no pythonw.exe: python.exe
    (tmp_path / "pythonw.exe").touch()
    assert daemon_command(None, windows=True) == [
        str(tmp_path / "pythonw.exe"), "-m", "orchestratr", "daemon"]
    assert daemon_command(Path("/c"))[-2:] == ["--config-dir", "/c"]


def test_systemd_execstart_quotes_specifiers_variables_and_spaces() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read_string(systemd_unit(COMMAND, "/usr/bin:/bin"))
    exec_start = unit["Service"]["ExecStart"]
    assert "%%" in exec_start and "$$HOME" in exec_start
    # Undo systemd's own specifier and variable escapes; the rest splits as a shell would.
    argv = shlex.split(exec_start.replace("%%", "%").replace("$$", "$"))
    assert argv == COMMAND
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["Environment"] == "PATH=/usr/bin:/bin"


def test_desktop_exec_follows_the_desktop_entry_quoting() -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.read_string(desktop_entry(COMMAND))
    exec_line = entry["Desktop Entry"]["Exec"]
    assert "%%" in exec_line
    # The value's string escaping doubles backslashes; then the Exec quoting rules apply,
    # which are the shell's rules for double quotes: let a real shell split it.
    unescaped = exec_line.replace("\\\\", "\\").replace("%%", "%")
    words = subprocess.run(["sh", "-c", "printf '%s\\0' " + unescaped], capture_output=True,
                           text=True, check=True).stdout.split("\0")[:-1]
    assert words == COMMAND
    assert entry["Desktop Entry"]["Terminal"] == "false"


def test_the_made_directories_survive_a_round_trip_through_every_format() -> None:
    made = [Path("/h/.config"), Path("/h/.config/it's, odd")]
    for text in (desktop_entry(COMMAND, marker(made)), systemd_unit(COMMAND, None, marker(made)),
                 launch_agent_plist(COMMAND, None, marker(made))):
        assert service._made(text) == list(reversed(made))


