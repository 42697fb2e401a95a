"""The client verbs, human and --json, against one real daemon per module (and fresh ones
where a test changes the config or stops the daemon)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestratr import __version__
from orchestratr.cli.render import parse_time
from orchestratr.client import Client
from tests.conftest import DaemonProcess, ignores_sigterm, wait_for, write_config
from tests.integration.cli.conftest import CONFIG, ORCHESTRATR, Run, Shared, run_cli

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def state_of(shared: Shared, name: str) -> str:
    return next(a["state"] for a in shared.cli("list", "--json").json if a["name"] == name)


def columns(line: str) -> list[int]:
    """Where each column of a table line starts."""
    return [m.start() for m in re.finditer(r"(?:(?<=  )|^)\S", line)]


class TestStatus:
    def test_human(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("status")
        assert run.code == 0, run.err
        pid, port = shared_daemon.daemon.proc.pid, shared_daemon.port
        daemon, config, hotkeys, apps = run.lines
        assert re.fullmatch(rf"daemon: running \(pid {pid}, port {port}, version "
                            rf"{re.escape(__version__)}, up \d+s\)", daemon), daemon
        assert config == f"config: {shared_daemon.config_dir}"
        assert hotkeys == "hotkeys: off (disabled by --no-hotkeys)"
        assert re.fullmatch(r"apps: 4 \((\d+ \w+, )*\d+ stopped(, \d+ \w+)*\)", apps), apps
        assert not ANSI.search(run.out), "colour on a pipe"

    def test_a_rejected_config_is_said_and_status_still_succeeds(
        self, config_dir: Path, start_daemon: Callable[..., DaemonProcess],
        cli: Callable[..., Run],
    ) -> None:
        write_config(config_dir, "apps:\n  - name: x\n    command: x\n    chord: 12\n"
                                 "  - name: y\n    command: y\n    chord: 13\n")
        start_daemon("--no-hotkeys")
        run = cli("status")
        assert run.code == 0, run.err
        assert run.lines[1] == (f"config: rejected, 2 errors — run `orchestratr reload` to see "
                                f"them ({config_dir})")

    def test_json(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("status", "--json")
        assert run.code == 0
        data = run.json
        assert data["pid"] == shared_daemon.daemon.proc.pid
        assert data["port"] == shared_daemon.port
        assert data["version"] == __version__
        assert 0 <= data["uptime_secs"] < 120
        assert data["hotkeys"]["enabled"] is False
        assert data["hotkeys"]["reason"] == "disabled by --no-hotkeys"
        assert data["apps"]["total"] == 4
        assert sum(data["apps"]["by_state"].values()) == 4
        assert data["config_dir"] == str(shared_daemon.config_dir)

    def test_uptime_counts_from_the_daemons_start(self, shared_daemon: Shared) -> None:
        """Uptime is the time since the daemon says it started, not since the CLI asked."""
        started = parse_time(Client(config_dir=shared_daemon.config_dir).health()["started_at"])
        before = time.time()
        uptime = shared_daemon.cli("status", "--json").json["uptime_secs"]
        assert started is not None
        assert before - started - 0.01 <= uptime <= time.time() - started + 0.01


class TestList:
    def test_table_has_aligned_columns_and_each_app(self, shared_daemon: Shared) -> None:
        assert shared_daemon.cli("launch", "notes").code in (0,)
        run = shared_daemon.cli("list")
        assert run.code == 0, run.err
        header, *rows = run.lines
        assert header.split() == ["NAME", "CHORD", "STATE", "PID", "UPTIME", "RESTARTS",
                                  "SOURCE", "ERROR"]
        starts = columns(header)
        by_name = {row.split()[0]: row for row in rows}
        assert set(by_name) == {"notes", "sleeper", "stubborn", "broken"}
        for row in rows:
            for start in starts[:7]:  # every cell begins under its header
                assert row[start - 2:start] == "  " or start == 0, (header, row)
        notes = by_name["notes"].split()
        pid = shared_daemon.cli("list", "--json").json[0]["pid"]
        assert notes[:4] == ["notes", "n", "ready", str(pid)]
        assert re.fullmatch(r"\d+s|\d+m\d\ds", notes[4])
        assert notes[5:7] == ["0", "config"]
        assert by_name["sleeper"].split()[1:6] == ["s", "stopped", "-", "-", "0"]

    def test_error_column_shows_why_an_app_failed(self, shared_daemon: Shared) -> None:
        shared_daemon.cli("launch", "broken")
        row = next(r for r in shared_daemon.cli("list").lines if r.startswith("broken"))
        assert "failed" in row and "working directory '/nonexistent/dir' does not exist" in row

    def test_json_is_the_apis_list(self, shared_daemon: Shared) -> None:
        apps = shared_daemon.cli("list", "--json").json
        assert [a["name"] for a in apps] == ["notes", "sleeper", "stubborn", "broken"]
        assert {"state", "pid", "launched_at", "source", "error", "chord"} <= set(apps[0])

    def test_colour_on_a_terminal_only_and_never_with_no_color(
        self, shared_daemon: Shared
    ) -> None:
        shared_daemon.cli("launch", "notes")
        coloured = on_a_terminal(shared_daemon, "list")
        assert "\x1b[32mready" in coloured  # ready is green
        assert "\x1b[1mNAME" in coloured
        plain = on_a_terminal(shared_daemon, "list", NO_COLOR="1")
        assert not ANSI.search(plain)
        uptime = re.compile(r"\b\d+(?:[smhd]\d*)+\b")  # it may tick between the two runs
        assert uptime.sub("-", ANSI.sub("", coloured)).split() == uptime.sub("-", plain).split()


def on_a_terminal(shared: Shared, *args: str, **env: str) -> str:
    """Run with stdout on a pseudo-terminal, as a person would see it."""
    leader, follower = pty.openpty()
    clean = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.Popen([*ORCHESTRATR, "--config-dir", str(shared.config_dir), *args],
                            stdout=follower, stderr=subprocess.PIPE,
                            env={**clean, "TERM": "xterm", **env})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=10)
    os.close(leader)
    assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
    return b"".join(chunks).decode().replace("\r\n", "\n")


class TestCommands:
    def test_launch_stop_restart(self, shared_daemon: Shared) -> None:
        cli = shared_daemon.cli
        launched = cli("launch", "sleeper")
        assert launched.code == 0, launched.err
        pid = cli("list", "--json").json[1]["pid"]
        assert launched.out == f"launched sleeper (pid {pid})\n"
        again = cli("launch", "sleeper", "--json")
        assert again.code == 0
        assert again.json == {"app": "sleeper", "state": "ready", "pid": pid, "spawned": False,
                              "focused": False, "reason": "no display (DISPLAY is not set)",
                              "status": "ok"}
        assert cli("launch", "sleeper").out == (f"sleeper is already running (pid {pid}, "
                                                "ready); no window raised: no display "
                                                "(DISPLAY is not set)\n")
        restarted = cli("restart", "sleeper", "--wait")
        assert restarted.code == 0, restarted.err
        new_pid = cli("list", "--json").json[1]["pid"]
        assert new_pid != pid and restarted.out == f"restarted sleeper (pid {new_pid})\n"
        at_once = cli("restart", "sleeper")  # the daemon answers while the old pid stops
        assert at_once.code == 0
        assert at_once.out in (f"restarting sleeper: stopping pid {new_pid}, then launching it "
                               "again\n", f"restarted sleeper (pid {new_pid})\n")
        wait_for(lambda: cli("list", "--json").json[1]["pid"] not in (None, new_pid))
        stopped = cli("stop", "sleeper", "--json")
        assert stopped.code == 0
        assert stopped.json["app"] == "sleeper" and stopped.json["state"] in ("stopping", "stopped")
        wait_for(lambda: state_of(shared_daemon, "sleeper") == "stopped")

    def test_stop_wait_returns_once_stopped(self, shared_daemon: Shared) -> None:
        assert shared_daemon.cli("launch", "sleeper").code == 0
        run = shared_daemon.cli("stop", "sleeper", "--wait")
        assert run.code == 0, run.err
        assert run.out == "sleeper: stopped\n"
        assert state_of(shared_daemon, "sleeper") == "stopped"

    def test_a_refused_transition_is_the_daemons_409_and_exit_1(
        self, shared_daemon: Shared
    ) -> None:
        cli = shared_daemon.cli
        launched = cli("launch", "stubborn", "--json")
        assert launched.code == 0
        wait_for(lambda: ignores_sigterm(launched.json["pid"]), what="the trap")
        assert cli("stop", "stubborn").out.startswith("stubborn: stopping (pid ")  # ignores TERM
        run = cli("launch", "stubborn")
        assert run.code == 1
        assert run.out == ""
        assert run.err.startswith("orchestratr: app 'stubborn' is stopping; cannot launch")
        as_json = cli("launch", "stubborn", "--json")
        assert as_json.code == 1
        assert as_json.json["code"] == "invalid_transition"
        assert as_json.json["error"].startswith("app 'stubborn' is stopping; cannot launch")

    @pytest.mark.parametrize("verb", ["launch", "stop", "restart"])
    def test_an_unknown_app_is_exit_1_not_found(self, shared_daemon: Shared, verb: str) -> None:
        run = shared_daemon.cli(verb, "nope", "--json")
        assert run.code == 1
        assert run.json == {"error": "app 'nope' not found", "code": "not_found"}

    def test_a_launch_that_fails_is_exit_1_with_the_reason(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("launch", "broken")
        assert run.code == 1
        assert "working directory '/nonexistent/dir' does not exist" in run.err

    def test_trigger_a_chord_launches_its_app(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("trigger", "N", "--json")  # chords ignore case
        assert run.code == 0, run.err
        assert run.json["app"] == "notes" and run.json["state"] == "ready"
        assert run.json["pid"] == shared_daemon.cli("list", "--json").json[0]["pid"]
        assert shared_daemon.cli("trigger", "n").out.startswith("notes is already running")

    def test_a_chord_whose_launch_fails_says_so(
        self, config_dir: Path, start_daemon: Callable[..., DaemonProcess],
        cli: Callable[..., Run],
    ) -> None:
        """As ``launch`` does (issue 13, on every path): it printed ``launched typo (pid N)``
        and exited 0 for a missing command."""
        write_config(config_dir, "apps:\n  - name: typo\n    chord: t\n"
                                 "    command: no-such-command-xyz\n")
        start_daemon("--no-hotkeys")
        run = cli("trigger", "t")
        assert run.code == 1 and "typo failed to launch" in run.err, run
        assert "command not found" in run.err
        assert cli("trigger", "t", "--no-wait").out.startswith("launched typo")

    def test_trigger_errors(self, shared_daemon: Shared) -> None:
        unbound = shared_daemon.cli("trigger", "q")
        assert unbound.code == 1
        assert unbound.err == "orchestratr: no app with chord 'q'\n"
        leader = shared_daemon.cli("trigger", "--json")
        assert leader.code == 1
        assert leader.json["code"] == "unavailable"
        assert "disabled by --no-hotkeys" in leader.json["error"]

    def test_pause_and_resume_without_hotkeys_report_them_off(
        self, shared_daemon: Shared
    ) -> None:
        for verb in ("pause", "resume"):
            run = shared_daemon.cli(verb)
            assert run.code == 0, run.err
            assert run.out == "hotkeys: off (disabled by --no-hotkeys)\n"
            assert shared_daemon.cli(verb, "--json").json["enabled"] is False


class TestOptions:
    def test_config_dir_from_the_environment(self, shared_daemon: Shared) -> None:
        run = run_cli("status", "--json",
                      env={"ORCHESTRATR_CONFIG_DIR": str(shared_daemon.config_dir)})
        assert run.code == 0 and run.json["pid"] == shared_daemon.daemon.proc.pid

    def test_the_option_beats_the_environment_and_goes_either_side_of_the_verb(
        self, shared_daemon: Shared, tmp_path: Path
    ) -> None:
        env = {"ORCHESTRATR_CONFIG_DIR": str(tmp_path)}  # no daemon there
        after = run_cli("status", "--json", "--config-dir", str(shared_daemon.config_dir), env=env)
        before = run_cli("--json", "--config-dir", str(shared_daemon.config_dir), "status", env=env)
        assert after.code == before.code == 0
        assert after.json["pid"] == before.json["pid"] == shared_daemon.daemon.proc.pid

    def test_client_verbs_do_not_load_the_daemons_libraries(self, shared_daemon: Shared) -> None:
        code = (
            "import sys; from orchestratr.cli import main; "
            f"rc = main(['--config-dir', {str(shared_daemon.config_dir)!r}, 'list', '--json']); "
            "heavy = {'structlog', 'transitions', 'pynput', 'yaml', 'cattrs', 'psutil', 'ssl'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules if sys.modules[m]}), rc, "
            "file=sys.stderr)"
        )
        done = subprocess.run([ORCHESTRATR[0], "-c", code], capture_output=True, text=True,
                              check=False, timeout=20)
        assert done.stderr.strip() == "[] 0", done.stderr


class TestUsage:
    @pytest.mark.parametrize("args", [
        ["launch"],  # NAME missing
        ["nonsense"],
        ["status", "--bogus"],
        ["register", "app"],  # --command missing
        ["register", "app", "--command", "true", "--env", "NOEQUALS"],
        ["heartbeat", "app", "--every", "0"],
        ["events", "--since", "soon"],
    ])
    def test_exit_2(self, cli: Callable[..., Run], args: list[str]) -> None:
        run = cli(*args)
        assert run.code == 2, run
        assert "usage:" in run.err or "error:" in run.err
        assert run.out == ""


class TestNotRunning:
    VERBS = (["status"], ["list"], ["launch", "notes"], ["stop", "notes"], ["restart", "notes"],
             ["reload"], ["trigger", "n"], ["trigger"], ["pause"], ["resume"], ["events"],
             ["register", "x", "--command", "true"], ["unregister", "x"], ["heartbeat", "x"],
             ["drain", "x"], ["revive", "x"])

    @pytest.mark.parametrize("args", VERBS, ids=[" ".join(v) for v in VERBS])
    def test_exit_3_says_where_the_port_file_was_looked_for_and_how_to_start(
        self, cli: Callable[..., Run], config_dir: Path, args: list[str]
    ) -> None:
        run = cli(*args)
        assert run.code == 3, run
        assert run.out == ""
        assert f"no port file at {config_dir / 'port'}" in run.err
        assert f"`orchestratr daemon --config-dir {config_dir}`" in run.err

    def test_json_form(self, cli: Callable[..., Run], config_dir: Path) -> None:
        run = cli("list", "--json")
        assert run.code == 3
        assert run.json["code"] == "not_running"
        assert str(config_dir / "port") in run.json["error"]

    def test_a_port_file_left_by_a_killed_daemon(
        self, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        daemon = start_daemon("--no-hotkeys")
        port = (config_dir / "port").read_text().strip()
        daemon.stop(9)
        run = cli("status")
        assert run.code == 3
        assert f"nothing on port {port}; port file {config_dir / 'port'}" in run.err


class TestReload:
    def test_success_then_every_validation_error(
        self, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        write_config(config_dir, CONFIG)
        (config_dir / "apps.d" / "bad.yml").write_text("name: [\n")
        start_daemon("--no-hotkeys")
        ok = cli("reload")
        assert ok.code == 0, ok.err
        assert ok.lines[0] == "reloaded: 4 apps"
        assert any(line.startswith("skipped: apps.d/bad.yml: invalid YAML") for line in ok.lines)
        assert cli("reload", "--json").json["status"] == "ok"
        write_config(config_dir, "apps:\n  - name: b/d\n    command: x\n  - name: b\n    chord: '?'\n")
        bad = cli("reload")
        assert bad.code == 1
        assert "config validation failed with 3 error(s)" in bad.err
        problems = [line for line in bad.err.splitlines() if line.startswith("  - ")]
        assert len(problems) >= 3
        assert any("apps[0] (b/d): name" in p for p in problems)
        assert any("apps[1] (b): command" in p for p in problems)
        as_json = cli("reload", "--json")
        assert as_json.code == 1
        assert as_json.json["code"] == "invalid_config"
        assert len(as_json.json["errors"]) == 3
        assert json.loads(as_json.out)["errors"][2].startswith("config.yml: apps[1] (b): chord")


def test_daemon_json_announces_where_it_listens(config_dir: Path) -> None:
    proc = subprocess.Popen([*ORCHESTRATR, "daemon", "--json", "--config-dir", str(config_dir),
                             "--port", "0", "--no-hotkeys"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout
        announced = json.loads(proc.stdout.readline())
        assert announced == {"status": "started", "pid": proc.pid,
                             "port": int((config_dir / "port").read_text()),
                             "config_dir": str(config_dir), "version": __version__}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
