"""``orchestratr logs``: one app's last lines, every app's interleaved with a prefix, NDJSON,
and ``-f`` followed in a real terminal (tmux) until Ctrl-C; against a real daemon."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.cli.conftest import ORCHESTRATR, Run, Tmux, clean_env

CONFIG = """\
apps:
  - name: talker
    command: i=1; while [ $i -le 30 ]; do echo "talk $i"; i=$((i+1)); done; sleep 60
  - name: echo
    command: echo "echo says hi"; sleep 60
  - name: ticker
    command: i=1; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done
  - name: quiet
    command: sleep 60
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def daemon(config_dir: Path, start_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    write_config(config_dir, CONFIG)
    return start_daemon("--no-hotkeys")


def ran(cli: Callable[..., Run], name: str, last: str) -> None:
    """Launch ``name`` and wait until its output ends with ``last``."""
    assert cli("launch", name).code == 0
    wait_for(lambda: cli("logs", name, "-n", "1").out == f"{last}\n", what=f"{name}'s output")


class TestLast:
    def test_one_apps_last_lines(self, daemon: DaemonProcess, cli: Callable[..., Run]) -> None:
        ran(cli, "talker", "talk 30")
        run = cli("logs", "talker", "-n", "3")
        assert (run.code, run.out, run.err) == (0, "talk 28\ntalk 29\ntalk 30\n", "")
        everything = cli("logs", "talker").lines  # 100 by default: the header and 30 lines
        assert everything[0].startswith("--- orchestratr: ") and len(everything) == 31

    def test_every_app_with_its_name_before_each_line(
        self, daemon: DaemonProcess, cli: Callable[..., Run]
    ) -> None:
        ran(cli, "talker", "talk 30")
        ran(cli, "echo", "echo says hi")
        lines = cli("logs", "-n", "1").lines
        assert lines == ["talker | talk 30", "echo   | echo says hi"]  # the order of the config

    def test_json_is_one_object_a_line(self, daemon: DaemonProcess, cli: Callable[..., Run]) -> None:
        ran(cli, "talker", "talk 30")
        records = [json.loads(line) for line in cli("logs", "talker", "-n", "2", "--json").lines]
        assert records == [{"app": "talker", "line": "talk 29", "at": None},
                           {"app": "talker", "line": "talk 30", "at": None}]

    def test_an_app_that_never_ran_prints_nothing(
        self, daemon: DaemonProcess, cli: Callable[..., Run]
    ) -> None:
        assert cli("logs", "quiet") == Run(0, "", "")

    def test_an_unknown_app_says_which_are_known(
        self, daemon: DaemonProcess, cli: Callable[..., Run]
    ) -> None:
        run = cli("logs", "talkr")
        assert run.code == 1
        assert run.err == "orchestratr: app 'talkr' not found; did you mean 'talker'?\n"


class TestFollow:
    def test_lines_as_they_come_across_a_restart_then_ctrl_c(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path,
        tmux: Callable[..., Tmux],
    ) -> None:
        """As a person sees it: live lines, a launch line where the app restarts, and Ctrl-C
        ending it with status 130 and no traceback."""
        assert cli("launch", "ticker").code == 0
        terminal = tmux("--config-dir", str(config_dir), "logs", "ticker", "-f", "-n", "0")
        terminal.wait_for("tick 3")
        assert cli("restart", "ticker", "--wait").code == 0
        terminal.wait_for("--- launch 'i=1;")
        wait_for(lambda: "tick 2" in ANSI.sub("", terminal.screen()).split("--- launch")[-1],
                 what="the new run's lines after its launch line")
        terminal.keys("C-c")
        screen = terminal.wait_for("EXIT=")
        assert "EXIT=130" in screen
        assert "Traceback" not in screen and "KeyboardInterrupt" not in screen

    def test_every_app_followed_with_prefixes(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path,
        tmux: Callable[..., Tmux],
    ) -> None:
        terminal = tmux("--config-dir", str(config_dir), "logs", "-f", "-n", "5")
        assert cli("launch", "echo", "ticker").code == 0  # before or after it connects
        terminal.wait_for("echo   | echo says hi")
        terminal.wait_for("ticker | tick 2")
        terminal.keys("C-c")
        assert "EXIT=130" in terminal.wait_for("EXIT=")

    def test_every_app_followed_includes_one_registered_meanwhile(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path,
        tmux: Callable[..., Tmux],
    ) -> None:
        """The list of apps was fixed when ``logs -f`` started (an audit)."""
        terminal = tmux("--config-dir", str(config_dir), "logs", "-f", "-n", "5")
        assert cli("launch", "echo").code == 0
        terminal.wait_for("echo   | echo says hi")
        assert cli("register", "latecomer", "--command", "echo late; sleep 60").code == 0
        assert cli("launch", "latecomer").code == 0
        terminal.wait_for("latecomer | late")
        terminal.keys("C-c")
        assert "EXIT=130" in terminal.wait_for("EXIT=")

    def test_json_follow_and_interrupt(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        assert cli("launch", "ticker").code == 0
        proc = subprocess.Popen([*ORCHESTRATR, "--config-dir", str(config_dir), "logs", "ticker",
                                 "-f", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=clean_env(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            assert proc.stdout
            launch = json.loads(proc.stdout.readline())  # the run's header, from the backlog
            assert launch["app"] == "ticker" and launch["launch"].startswith("i=1; while true")
            first = json.loads(proc.stdout.readline())
            assert first == {"app": "ticker", "line": "tick 1", "at": None}
            while (record := json.loads(proc.stdout.readline()))["at"] is None:
                pass  # the rest of the backlog; then the lines written since it connected
            assert record["app"] == "ticker" and record["line"].startswith("tick ")
            assert record["at"].endswith("Z")
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130
        assert "Traceback" not in err


def test_a_refused_follow_says_why_instead_of_waiting_for_ever(
    daemon: DaemonProcess, cli: Callable[..., Run]
) -> None:
    """``-n`` past the API's limit: ``logs -f`` used to retry the refusal silently for good."""
    for args in (("talker", "-n", "20000", "-f"), ("-n", "20000", "-f"), ("talker", "-n", "20000")):
        run = cli("logs", *args)
        assert (run.code, run.err) == (2, "orchestratr logs: error: -n wants from 0 to 10000 lines\n")
