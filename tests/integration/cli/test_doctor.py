"""``orchestratr doctor`` with the daemon down, up and killed, and with broken configs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from orchestratr import __version__
from tests.conftest import DaemonProcess, write_config
from tests.integration.cli.conftest import Run

GOOD = """\
apps:
  - name: notes
    chord: n
    command: FOO=1 exec sleep 60
    ready_cmd: test -d /
  - name: shell
    command: trap '' TERM; sleep 60
"""


def checks(run: Run) -> dict[str, list[tuple[str, str]]]:
    """name -> [(verdict, message)] from the JSON form."""
    found: dict[str, list[tuple[str, str]]] = {}
    for check in run.json["checks"]:
        found.setdefault(check["name"], []).append((check["status"], check["message"]))
    return found


def has_line(run: Run, pattern: str) -> bool:
    return re.search(pattern, run.out, re.MULTILINE) is not None


def timed(cli: Callable[..., Run], *args: str) -> Run:
    start = time.monotonic()
    run = cli("doctor", *args)
    assert time.monotonic() - start < 5, "doctor took 5 s or more"
    return run


class TestDaemonDown:
    def test_a_good_config_passes_with_a_warning_for_the_daemon(
        self, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        write_config(config_dir, GOOD)
        run = timed(cli)
        assert run.code == 0, run.out
        *lines, summary = run.lines
        verdicts = {line.split()[1]: line.split()[0] for line in lines}
        assert verdicts["daemon"] == "WARN"
        assert f"not running; start it with `orchestratr daemon --config-dir {config_dir}`" in (
            run.out)
        assert verdicts["config.yml"] == "PASS"
        assert "FAIL" not in verdicts.values()
        assert re.fullmatch(r"\d+ checks: \d+ passed, \d+ warnings, 0 failed", summary)
        # one line per check, the same as --json, with the messages in one column
        listed = cli("doctor", "--json").json["checks"]
        width = max(len(c["name"]) for c in listed)
        assert lines == [f"{c['status']}  {c['name']:<{width}}  {c['message']}" for c in listed]

    def test_json_lists_every_check(self, cli: Callable[..., Run], config_dir: Path) -> None:
        write_config(config_dir, GOOD)
        run = timed(cli, "--json")
        assert run.code == 0
        found = checks(run)
        assert found["daemon"] == [("WARN", found["daemon"][0][1])]
        assert found["port file"][0][0] == "PASS"
        assert found["config.yml"] == [("PASS", "valid: 2 apps")]
        assert found["notes: command"][0] == ("PASS", "sleep -> " + found["notes: command"][0][1]
                                              .split(" -> ")[1])
        assert found["notes: ready_cmd"][0][0] == "PASS"
        assert found["shell: command"] == [("PASS", "starts with the shell word 'trap'")]
        assert found["hotkeys"][0][0] in ("PASS", "WARN")
        assert found["log dir"] == [("PASS", f"{config_dir / 'logs'} will be created "
                                             f"(under writable {config_dir})")]
        data = run.json
        assert data["failed"] == 0
        assert data["passed"] + data["warned"] == len(data["checks"])

    def test_without_a_display_hotkeys_warn_and_say_what_to_do(
        self, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        write_config(config_dir, GOOD)
        run = cli("doctor", "--json", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
        status, message = checks(run)["hotkeys"][0]
        assert status == "WARN"
        assert "no display (DISPLAY is not set)" in message
        assert "orchestratr trigger <chord>" in message

    def test_broken_config_and_drop_ins_fail_each_with_its_reason(
        self, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        write_config(config_dir, "apps:\n  - name: b/d\n    command: x\n    chrod: y\n")
        apps = config_dir / "apps.d"
        (apps / "good.yml").write_text("name: good\nchord: g\ncommand: no-such-program-xyz\n")
        (apps / "yaml.yml").write_text("name: [\n")
        (apps / "path.yml").write_text("name: p\nchord: p\ncommand: ./not-here --x\n")
        run = timed(cli)
        assert run.code == 1
        assert has_line(run, r"^FAIL  config\.yml +apps\[0\] \(b/d\): name: 'b/d' must be 1 to")
        assert has_line(run, r"^WARN  config\.yml +apps\[0\] \(b/d\): chrod: unknown field, ignored; "
                                 r"did you mean 'chord'\?")
        assert has_line(run, r"^FAIL  apps\.d/yaml\.yml +invalid YAML \(line 2, column 1\)")
        assert has_line(run, r"^PASS  apps\.d/good\.yml +app 'good', chord 'g'")
        assert has_line(run, r"^FAIL  good: command +'no-such-program-xyz' not found on PATH")
        assert has_line(run, r"^FAIL  p: command +\./not-here is not an executable file")
        assert has_line(run, r"^\d+ checks: \d+ passed, \d+ warnings, 4 failed$")
        assert cli("doctor", "--json").json["failed"] == 4

    def test_clashing_drop_ins_fail_both(self, cli: Callable[..., Run], config_dir: Path) -> None:
        write_config(config_dir, "apps: []\n")
        (config_dir / "apps.d" / "a.yml").write_text("name: a\nchord: x\ncommand: sleep 1\n")
        (config_dir / "apps.d" / "b.yml").write_text("name: b\nchord: X\ncommand: sleep 1\n")
        found = checks(cli("doctor", "--json"))
        for label in ("apps.d/a.yml", "apps.d/b.yml"):
            status, message = found[label][0]
            assert status == "FAIL" and "duplicate chord 'x'" in message

    def test_no_config_yet_is_a_warning(self, cli: Callable[..., Run], tmp_path: Path) -> None:
        run = cli("--config-dir", str(tmp_path / "fresh"), "doctor", "--json")
        assert run.code == 0
        assert ("WARN", f"{tmp_path / 'fresh' / 'config.yml'} does not exist; the daemon writes "
                        "a commented default at its first start") in checks(run)["config.yml"]

    def test_a_log_dir_that_cannot_be_made_fails(
        self, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        write_config(config_dir, GOOD)
        (config_dir / "logs").write_text("a file where the log dir should be")
        run = cli("doctor", "--json")
        assert run.code == 1
        assert checks(run)["log dir"] == [("FAIL", f"{config_dir / 'logs'} is not a directory, "
                                                   f"so {config_dir / 'logs'} cannot be made")]


class TestDaemonUp:
    def test_daemon_port_file_and_hotkeys_come_from_the_daemon(
        self, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        write_config(config_dir, GOOD)
        daemon = start_daemon("--no-hotkeys")
        port = int((config_dir / "port").read_text())
        run = timed(cli, "--json")
        assert run.code == 0, run.out
        found = checks(run)
        assert found["daemon"] == [("PASS", f"running: pid {daemon.proc.pid}, port {port}, "
                                            f"version {__version__}, API answers")]
        assert found["port file"] == [("PASS", f"{config_dir / 'port'}: port {port}")]
        status, message = found["hotkeys"][0]
        assert status == "WARN" and message.startswith("off in the daemon: disabled by --no-hotkeys")
        assert found["log dir"] == [("PASS", f"{config_dir / 'logs'} is writable")]

    def test_a_killed_daemon_leaves_a_stale_port_file_warning(
        self, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        write_config(config_dir, GOOD)
        start_daemon("--no-hotkeys").stop(9)
        run = timed(cli, "--json")
        assert run.code == 0
        found = checks(run)
        assert found["daemon"][0][0] == "WARN"
        status, message = found["port file"][0]
        assert status == "WARN" and "nothing answers there" in message

    def test_a_port_file_that_is_not_a_port_fails(
        self, cli: Callable[..., Run], config_dir: Path
    ) -> None:
        write_config(config_dir, GOOD)
        (config_dir / "port").write_text("http\n")
        found = checks(cli("doctor", "--json"))
        assert found["port file"] == [("FAIL", f"{config_dir / 'port'} holds 'http', "
                                               "not a port number")]
