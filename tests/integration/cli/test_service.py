"""``install`` / ``uninstall`` into a temporary home, for real.

This machine has no systemd user manager, so the XDG autostart path runs as it would on such a
desktop. The systemd path is taken when ``$XDG_RUNTIME_DIR/systemd/private`` exists; there a
``systemctl`` stand-in on PATH records what it is asked (the one thing this machine cannot do),
and the unit it enables is checked by ``systemd-analyze verify`` and its ExecStart run for real.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestratr.cli.service import MARKER
from tests.conftest import DaemonProcess, kill_apps_of, wait_for
from tests.integration.cli.conftest import Run, run_cli


class Home:
    """A temporary home with its own XDG dirs, and a config dir whose name needs quoting."""

    def __init__(self, root: Path, systemd: bool = False, systemctl_exit: int = 0) -> None:
        self.root = root
        self.config_dir = root / "my config"
        self.runtime = root / "run"
        self.runtime.mkdir()
        self.calls = root / "systemctl.calls"
        self.bin = root / "bin"
        self.bin.mkdir()
        if systemd:
            self.start_user_manager()
        fake = self.bin / "systemctl"
        fake.write_text(f'#!/bin/sh\necho "$*" >> "{self.calls}"\n'
                        f'[ {systemctl_exit} = 0 ] || echo "Failed to connect to bus" >&2\n'
                        f"exit {systemctl_exit}\n")
        fake.chmod(0o755)

    def start_user_manager(self) -> None:
        """What install looks for: the user manager's private socket in the runtime dir."""
        (self.runtime / "systemd").mkdir()
        (self.runtime / "systemd" / "private").touch()

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.root), "XDG_CONFIG_HOME": str(self.root / ".config"),
                "XDG_RUNTIME_DIR": str(self.runtime),
                "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def cli(self, *args: str) -> Run:
        return run_cli("--config-dir", str(self.config_dir), *args, env=self.env)

    @property
    def desktop(self) -> Path:
        return self.root / ".config" / "autostart" / "orchestratr.desktop"

    @property
    def unit(self) -> Path:
        return self.root / ".config" / "systemd" / "user" / "orchestratr.service"

    def systemctl_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def tree(self) -> set[str]:
        """Every path under the home, except the test's own scaffolding."""
        skip = {self.runtime, self.bin, self.calls, self.config_dir}
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*")
                if not any(p == s or s in p.parents for s in skip)}


def starts_the_daemon(argv: list[str], config_dir: Path) -> None:
    """Run a generated command line for real: a daemon must come up on that config dir."""
    config_dir.mkdir(exist_ok=True)
    (config_dir / "config.yml").write_text("api_port: 0\napps: []\n")
    proc = subprocess.Popen([*argv, "--no-hotkeys"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (config_dir / "port").exists(), 10, what="the daemon's port file")
        assert run_cli("--config-dir", str(config_dir), "status").code == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        kill_apps_of(config_dir)


class TestXdgAutostart:
    def test_install_writes_a_desktop_entry_that_starts_the_daemon(self, tmp_path: Path) -> None:
        home = Home(tmp_path)
        run = home.cli("install")
        assert run.code == 0, run.err
        assert run.lines[0] == f"wrote {home.desktop}"
        assert "starts at your next login" in run.lines[1]
        entry = configparser.ConfigParser(interpolation=None)
        entry.read_string(home.desktop.read_text())
        section = entry["Desktop Entry"]
        assert section["Type"] == "Application"
        assert section["Name"] == "orchestratr"
        argv = shlex.split(section["Exec"])  # the config dir has a space: it must be quoted
        assert argv[1:] == ["-m", "orchestratr", "daemon", "--config-dir", str(home.config_dir)]
        assert Path(argv[0]).exists()
        assert home.systemctl_calls() == []
        starts_the_daemon(argv, home.config_dir)

    def test_idempotent_and_uninstall_removes_exactly_what_install_wrote(
        self, tmp_path: Path
    ) -> None:
        home = Home(tmp_path)
        (tmp_path / ".config").mkdir()
        (tmp_path / ".config" / "mine.conf").write_text("the user's own file\n")
        before = home.tree()
        assert home.cli("install").code == 0
        written = home.desktop.read_text()
        again = home.cli("install", "--json")
        assert again.code == 0
        assert again.json["method"] == "xdg-autostart"
        assert again.json["actions"][0] == {"action": "unchanged", "target": str(home.desktop)}
        assert home.desktop.read_text() == written
        removed = home.cli("uninstall")
        assert removed.code == 0
        assert removed.lines == [f"removed {home.desktop}", f"removed {home.desktop.parent}/"]
        assert home.tree() == before  # .config stays: it was there before install
        nothing = home.cli("uninstall", "--json")
        assert nothing.code == 0 and nothing.json == {"method": "xdg-autostart", "actions": []}
        assert home.cli("uninstall").out == "nothing to do (xdg-autostart)\n"

    def test_a_file_of_the_users_is_never_overwritten_nor_removed(self, tmp_path: Path) -> None:
        home = Home(tmp_path)
        home.desktop.parent.mkdir(parents=True)
        home.desktop.write_text("[Desktop Entry]\nExec=my-own-thing\n")
        run = home.cli("install")
        assert run.code == 1
        assert "was not written by orchestratr install" in run.err
        assert home.cli("uninstall").lines == [
            f"left alone (not written by orchestratr install) {home.desktop}"]
        assert home.desktop.read_text() == "[Desktop Entry]\nExec=my-own-thing\n"


class TestSystemd:
    def test_install_writes_enables_and_starts_a_user_unit(self, tmp_path: Path) -> None:
        home = Home(tmp_path, systemd=True)
        before = home.tree()
        run = home.cli("install")
        assert run.code == 0, run.err
        assert run.lines == [f"wrote {home.unit}", "ran systemctl --user daemon-reload",
                             "ran systemctl --user enable --now orchestratr.service"]
        assert home.systemctl_calls() == ["--user daemon-reload",
                                          "--user enable --now orchestratr.service"]
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.read_string(home.unit.read_text())
        assert unit["Service"]["Restart"] == "on-failure"
        assert unit["Install"]["WantedBy"] == "graphical-session.target"
        assert unit["Service"]["Environment"] == f'PATH={home.env["PATH"]}'
        argv = shlex.split(unit["Service"]["ExecStart"])
        assert argv[1:] == ["-m", "orchestratr", "daemon", "--config-dir", str(home.config_dir)]
        if shutil.which("systemd-analyze"):  # the real parser: any warning is a bad unit
            verify = subprocess.run(["systemd-analyze", "verify", str(home.unit)],
                                    capture_output=True, text=True, check=False)
            assert verify.returncode == 0 and verify.stderr == "", verify.stderr
        starts_the_daemon(argv, home.config_dir)
        assert not home.desktop.exists()

        again = home.cli("install")
        assert again.lines == [f"unchanged {home.unit}",
                               "ran systemctl --user enable --now orchestratr.service"]
        removed = home.cli("uninstall")
        assert removed.code == 0, removed.err
        made = [home.unit.parent, home.unit.parent.parent, tmp_path / ".config"]
        assert removed.lines == [
            "ran systemctl --user disable --now orchestratr.service", f"removed {home.unit}",
            *(f"removed {d}/" for d in made), "ran systemctl --user daemon-reload"]
        assert home.tree() == before
        assert home.cli("uninstall").out == "nothing to do (systemd)\n"

    def test_a_running_daemon_is_enabled_for_next_login_not_started_twice(
        self, tmp_path: Path
    ) -> None:
        home = Home(tmp_path, systemd=True)
        home.config_dir.mkdir()
        (home.config_dir / "config.yml").write_text("apps: []\n")
        daemon = DaemonProcess(home.config_dir, "--no-hotkeys")
        try:
            daemon.wait_event("daemon_started")
            run = home.cli("install")
            assert run.code == 0, run.err
            assert "ran systemctl --user enable orchestratr.service" in run.lines
            assert "already runs on this config dir" in run.out
            assert "--user enable --now orchestratr.service" not in home.systemctl_calls()
        finally:
            daemon.stop()

    def test_it_replaces_an_earlier_autostart_entry(self, tmp_path: Path) -> None:
        home = Home(tmp_path)
        assert home.cli("install").code == 0 and home.desktop.exists()
        home.start_user_manager()
        run = home.cli("install")
        assert run.code == 0, run.err
        assert f"removed {home.desktop}" in run.lines
        assert not home.desktop.exists() and home.unit.exists()
        assert home.cli("uninstall").code == 0
        assert not (tmp_path / ".config").exists()

    @pytest.mark.parametrize("verb", ["install", "uninstall"])
    def test_a_failing_systemctl_is_exit_1_with_its_message(
        self, tmp_path: Path, verb: str
    ) -> None:
        home = Home(tmp_path, systemd=True, systemctl_exit=1)
        if verb == "uninstall":  # a unit of ours to remove
            home.unit.parent.mkdir(parents=True)
            home.unit.write_text(f"# {MARKER}\n[Service]\nExecStart=/bin/true\n")
        run = home.cli(verb, "--json")
        assert run.code == 1
        assert run.json["code"] == "install_failed"
        assert "Failed to connect to bus" in run.json["error"]
