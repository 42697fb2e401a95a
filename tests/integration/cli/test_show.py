"""One app in full (``orchestratr show``, ``GET /apps/{name}``) and every app at a glance
(``list`` with RESTARTS, ``--wide`` CPU and MEM): real daemons, real processes."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from orchestratr.client import Client
from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.cli.conftest import Run

CONFIG = """\
apps:
  - name: web
    chord: w
    description: a web server
    command: echo serving; sleep 60 & sleep 60
    cwd: {cwd}
    restart: on-failure
  - name: crasher
    command: echo crashing; sleep 1.2; exit 3
    restart: on-failure
    restart_delay_ms: 0
  - name: sleeper
    command: sleep 60
"""


@pytest.fixture
def daemon(
    config_dir: Path, tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> DaemonProcess:
    write_config(config_dir, CONFIG.replace("{cwd}", str(tmp_path)))
    return start_daemon("--no-hotkeys")


def detail(config_dir: Path, name: str) -> dict:
    return Client(config_dir=config_dir).app(name)


class TestDetails:
    def test_every_process_with_cpu_and_memory_and_the_log_file(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        assert cli("launch", "web").code == 0
        app = wait_for(lambda: (a := detail(config_dir, "web")) and len(a["processes"]) == 3
                       and a, what="the shell and its two sleeps")
        pids = {p["pid"] for p in app["processes"]}
        assert app["pid"] in pids
        assert pids == {app["pid"], *(c.pid for c in psutil.Process(app["pid"]).children())}
        for process in app["processes"]:
            assert process["rss_bytes"] == pytest.approx(
                psutil.Process(process["pid"]).memory_info().rss, rel=0.5)
            assert 0 <= process["cpu_percent"] <= 200
        assert app["log_path"] == str(config_dir / "logs" / "apps" / "web.log")
        assert app["restarts"] == 0 and app["last_exit"] is None
        assert 0 <= app["uptime_secs"] < 30

    def test_restarts_and_the_last_exit(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        """An app its policy restarted counts it; its last exit says status and when."""
        before = time.time()
        assert cli("launch", "crasher").code == 0
        app = wait_for(lambda: (a := detail(config_dir, "crasher"))["restarts"] >= 1 and a,
                       timeout=15, what="a restart")
        assert app["last_exit"]["code"] == 3 and app["last_exit"]["signal"] is None
        at = app["last_exit"]["at"]
        assert before <= datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() + 1
        listed = next(a for a in cli("list", "--json").json if a["name"] == "crasher")
        assert listed["restarts"] >= 1
        row = next(line for line in cli("list").lines if line.startswith("crasher"))
        assert re.search(r"\s[1-9]\d*\s+config", row), row

    def test_a_kill_is_told_by_its_signal(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        assert cli("launch", "sleeper").code == 0
        pid = detail(config_dir, "sleeper")["pid"]
        os.killpg(pid, signal.SIGKILL)
        app = wait_for(lambda: (a := detail(config_dir, "sleeper"))["last_exit"] and a,
                       what="the exit")
        assert app["last_exit"]["signal"] == "SIGKILL" and app["last_exit"]["code"] is None
        assert app["processes"] == [] and app["uptime_secs"] is None

    def test_uptime_counts_from_the_first_launch_across_a_daemon_restart(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        assert cli("launch", "sleeper").code == 0
        first = detail(config_dir, "sleeper")
        daemon.stop(signal.SIGKILL)
        start_daemon("--no-hotkeys")
        adopted = detail(config_dir, "sleeper")
        assert adopted["pid"] == first["pid"]
        assert adopted["started_at"] == first["started_at"]
        assert adopted["uptime_secs"] >= first["uptime_secs"]


class TestShow:
    def test_everything_about_one_app(
        self, daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path, tmp_path: Path
    ) -> None:
        assert cli("launch", "web").code == 0
        wait_for(lambda: cli("logs", "web", "-n", "1").out == "serving\n", what="its output")
        app = detail(config_dir, "web")
        run = cli("show", "web")
        assert run.code == 0, run.err
        text = run.out
        assert text.startswith("web - a web server\n")
        assert re.search(rf"state\s+ready \(pid {app['pid']}\), up \d+s since \d\d:\d\d:\d\d",
                         text)
        for expected in (f"command    {app['command']}", f"cwd        {tmp_path}",
                         "source     config", "chord      w",
                         "restart    on-failure, restarted 0 times",
                         f"log        {config_dir / 'logs' / 'apps' / 'web.log'}",
                         "stopped -> launching (launch by api)", "  serving"):
            assert expected in text, (expected, text)
        assert re.search(rf"\n  {app['pid']}\s+\d+\.\d%\s+\d+(\.\d)?[KMG]\n", text), text
        assert "last 2 lines of its log" in text

    def test_every_row_is_there_for_an_app_with_little_to_say(
        self, daemon: DaemonProcess, cli: Callable[..., Run]
    ) -> None:
        """Rows without a value used to be left out: no cwd row for an app without one."""
        text = cli("show", "sleeper").out
        for row in ("state", "command", "cwd", "source", "chord", "restart", "last exit",
                    "lease", "log"):
            assert re.search(rf"^  {row}\s+\S", text, re.MULTILINE), (row, text)
        assert "cwd        - (the daemon's)" in text and "chord      -" in text
        assert "error" not in text

    def test_json_has_the_log_lines_too(
        self, daemon: DaemonProcess, cli: Callable[..., Run]
    ) -> None:
        data = cli("show", "sleeper", "--json").json
        assert data["name"] == "sleeper" and data["log_lines"] == [] and data["processes"] == []
        assert {"restarts", "last_exit", "log_path", "history", "lease", "uptime_secs"} <= set(data)

    def test_an_unknown_app(self, daemon: DaemonProcess, cli: Callable[..., Run]) -> None:
        run = cli("show", "slepper")
        assert (run.code, run.err) == (1, "orchestratr: app 'slepper' not found; did you mean "
                                          "'sleeper'?\n")


class TestWide:
    def test_cpu_and_memory_columns(
        self, daemon: DaemonProcess, cli: Callable[..., Run]
    ) -> None:
        assert cli("launch", "sleeper").code == 0
        header, *rows = cli("list", "--wide").lines
        assert header.split() == ["NAME", "CHORD", "STATE", "PID", "UPTIME", "RESTARTS", "CPU",
                                  "MEM", "SOURCE", "ERROR"]
        sleeper = next(r for r in rows if r.startswith("sleeper")).split()
        assert re.fullmatch(r"\d+\.\d%", sleeper[6]) and re.fullmatch(r"\d+(\.\d)?[KMG]",
                                                                       sleeper[7])
        web = next(r for r in rows if r.startswith("web")).split()
        assert web[6:8] == ["-", "-"]
        listed = cli("list", "--wide", "--json").json
        assert next(a for a in listed if a["name"] == "sleeper")["processes"][0]["rss_bytes"] > 0
