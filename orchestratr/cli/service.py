"""``orchestratr install`` / ``uninstall``: start the daemon at every login.

Linux: a systemd user unit, enabled and started with ``systemctl --user`` when a user manager
runs (its socket ``$XDG_RUNTIME_DIR/systemd/private`` exists), otherwise an XDG autostart
entry. macOS: a LaunchAgent. Windows: the per-user ``Run`` registry value.

Every file install writes carries ``MARKER`` and the list of directories install had to make
for it; uninstall removes only files that carry the marker, then those directories if they are
empty, so it removes exactly what install wrote and never a file the user made. Both are
idempotent.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestratr.client import CONFIG_DIR_ENV, xdg_config_home

if TYPE_CHECKING:
    from orchestratr.cli.main import Context

NAME = "orchestratr"
UNIT = f"{NAME}.service"
LAUNCH_AGENT = "org.orchestratr.daemon"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
MARKER = "Written by `orchestratr install`; `orchestratr uninstall` removes it."
MADE = " It made these directories: "
DESCRIPTION = "orchestratr: a local process supervisor for desktop apps"


class InstallError(Exception):
    """A file that is not ours is in the way, or a service manager command failed."""


@dataclass
class Report:
    """What install or uninstall did, one action per step, for people and for --json."""

    method: str
    actions: list[dict[str, str]] = field(default_factory=list)

    def add(self, action: str, target: str) -> None:
        self.actions.append({"action": action, "target": target})

    def lines(self) -> list[str]:
        if not self.actions:
            return [f"nothing to do ({self.method})"]
        return [a["target"] if a["action"] == "note" else f"{a['action']} {a['target']}"
                for a in self.actions]


# ------------------------------------------------------------------ verbs

def install(ctx: Context) -> int:
    return _act(ctx, lambda target: target.install())


def uninstall(ctx: Context) -> int:
    return _act(ctx, lambda target: target.uninstall())


def _act(ctx: Context, step: Callable[[Target], Report]) -> int:
    config_dir = _chosen_config_dir(ctx.config_dir)
    try:
        report = step(_target(config_dir, ctx.client().daemon_alive()))
    except InstallError as exc:
        ctx.out.error(str(exc), "install_failed")
        return 1
    ctx.out.result({"method": report.method, "actions": report.actions}, report.lines())
    return 0


def _chosen_config_dir(explicit: str | None) -> Path | None:
    """A config dir given on the command line or in the environment goes into the service's
    command: the login session that starts it will not have this shell's environment."""
    chosen = explicit or os.environ.get(CONFIG_DIR_ENV)
    return Path(chosen).expanduser().absolute() if chosen else None


def daemon_command(config_dir: Path | None, windows: bool = False) -> list[str]:
    """The daemon's command line, with this interpreter (a venv's python finds its packages)."""
    python = Path(sys.executable)
    if windows:  # pythonw.exe runs without a console window
        gui = python.with_name("pythonw.exe")
        python = gui if gui.exists() else python
    command = [str(python), "-m", NAME, "daemon"]
    return command + (["--config-dir", str(config_dir)] if config_dir else [])


def _target(config_dir: Path | None, running: bool) -> Target:
    """The platform's way; ``running``: a daemon already runs on this config dir."""
    if sys.platform == "darwin":
        return LaunchAgent(daemon_command(config_dir))
    if sys.platform == "win32":
        return RunKey(daemon_command(config_dir, windows=True))
    return LinuxAutostart(daemon_command(config_dir), running)


class Target:
    method = ""

    def install(self) -> Report:
        raise NotImplementedError

    def uninstall(self) -> Report:
        raise NotImplementedError


# ------------------------------------------------------------------ files we own

def marker(made: Sequence[Path] = ()) -> str:
    """The comment that marks a file as install's, with the directories made for it."""
    return MARKER + (MADE + json.dumps([str(d) for d in made]) if made else "")


def _made(content: str) -> list[Path]:
    """The directories a file's marker says install made, deepest first."""
    for line in content.splitlines():
        if MARKER in line and MADE in line:
            text = line.split(MADE, 1)[1].removesuffix("-->").strip()
            try:
                return [Path(d) for d in reversed(json.loads(text))]
            except ValueError:
                return []
    return []


def write_owned(path: Path, render: Callable[[str], str], report: Report) -> bool:
    """Write ``render(marker)`` unless it is there already; True if the file changed.

    Raises:
        InstallError: a file that install did not write is in the way.
    """
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current is not None and MARKER not in current:
        raise InstallError(f"{path} exists and was not written by orchestratr install; "
                           "move it away first")
    made = list(reversed(_made(current))) if current is not None else _missing_parents(path)
    content = render(marker(made))
    if current == content:
        report.add("unchanged", str(path))
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)
    report.add("updated" if current is not None else "wrote", str(path))
    return True


def _missing_parents(path: Path) -> list[Path]:
    """The directories that must be made for ``path``, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return list(reversed(missing))


def remove_owned(path: Path, report: Report) -> bool:
    """Remove ``path`` if install wrote it, then the directories install made for it if they
    are empty; a file of the user's is left and reported."""
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    if MARKER not in current:
        report.add("left alone (not written by orchestratr install)", str(path))
        return False
    path.unlink()
    report.add("removed", str(path))
    for directory in _made(current):
        try:
            directory.rmdir()
        except OSError:
            break  # not empty (or gone): it holds more than what install put there
        report.add("removed", f"{directory}/")
    return True


def run_command(command: Sequence[str], report: Report) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"`{' '.join(command)}` failed: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise InstallError(f"`{' '.join(command)}` failed: {why}")
    report.add("ran", " ".join(command))


# ------------------------------------------------------------------ Linux

def user_manager_running() -> bool:
    """Is a systemd user manager running for this session? Its private socket says so."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip() or f"/run/user/{os.getuid()}"
    return (Path(runtime) / "systemd" / "private").exists() and bool(shutil.which("systemctl"))


def systemd_unit(command: list[str], path: str | None, mark: str = MARKER) -> str:
    """A user unit that starts with the graphical session (where DISPLAY is set, so hotkeys
    work) and restarts the daemon if it crashes."""
    env = f'Environment={_systemd_quote("PATH=" + path, expand=False)}\n' if path else ""
    return (
        f"# {mark}\n"
        "[Unit]\n"
        f"Description={DESCRIPTION}\n"
        "PartOf=graphical-session.target\n"
        "After=graphical-session.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_systemd_quote(arg) for arg in command)}\n"
        f"{env}"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\n"
        "WantedBy=graphical-session.target\n"
    )


def _systemd_quote(arg: str, expand: bool = True) -> str:
    """One word of a unit's command line: ``%`` specifiers and ``$`` variables made literal."""
    arg = arg.replace("%", "%%")
    if expand:
        arg = arg.replace("$", "$$")
    if arg and not any(c in arg for c in " \t\"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def desktop_entry(command: list[str], mark: str = MARKER) -> str:
    """An XDG autostart entry (freedesktop Desktop Entry Specification 1.5)."""
    return (
        "[Desktop Entry]\n"
        f"# {mark}\n"
        "Type=Application\n"
        f"Name={NAME}\n"
        f"Comment={DESCRIPTION}\n"
        f"Exec={' '.join(_desktop_quote(arg) for arg in command)}\n"
        "Terminal=false\n"
        "NoDisplay=true\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


_DESKTOP_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def _desktop_quote(arg: str) -> str:
    """One Exec argument: quoted if it holds a reserved character, ``%`` doubled, and the
    backslashes of the quoting doubled again by the string escaping of the value."""
    arg = arg.replace("%", "%%")
    if arg and not _DESKTOP_RESERVED & set(arg):
        return arg
    quoted = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return ('"' + quoted + '"').replace("\\", "\\\\")


class LinuxAutostart(Target):
    """The systemd user unit when a user manager runs, else the XDG autostart entry."""

    def __init__(self, command: list[str], running: bool = False) -> None:
        self.command = command
        self.running = running
        self.unit = xdg_config_home() / "systemd" / "user" / UNIT
        self.desktop = xdg_config_home() / "autostart" / f"{NAME}.desktop"
        self.systemd = user_manager_running()
        self.method = "systemd" if self.systemd else "xdg-autostart"

    def install(self) -> Report:
        report = Report(self.method)
        if not self.systemd:
            write_owned(self.desktop, lambda mark: desktop_entry(self.command, mark), report)
            report.add("note", "the daemon starts at your next login; to start it now run "
                               "`orchestratr daemon &`")
            return report
        remove_owned(self.desktop, report)  # the unit replaces an earlier autostart entry
        path = os.environ.get("PATH")
        changed = write_owned(self.unit, lambda mark: systemd_unit(self.command, path, mark),
                              report)
        if changed:
            run_command(["systemctl", "--user", "daemon-reload"], report)
        if self.running:  # a second daemon would exit at once, and be restarted, and ...
            run_command(["systemctl", "--user", "enable", UNIT], report)
            report.add("note", "a daemon already runs on this config dir: the unit starts it "
                               "from your next login")
        else:
            run_command(["systemctl", "--user", "enable", "--now", UNIT], report)
        return report

    def uninstall(self) -> Report:
        report = Report(self.method)
        if self.systemd and _owned(self.unit):
            run_command(["systemctl", "--user", "disable", "--now", UNIT], report)
        if remove_owned(self.unit, report) and self.systemd:
            run_command(["systemctl", "--user", "daemon-reload"], report)
        remove_owned(self.desktop, report)
        return report


def _owned(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8")
    except OSError:
        return False


# ------------------------------------------------------------------ macOS

def launch_agent_plist(command: list[str], path: str | None, mark: str = MARKER) -> str:
    """A LaunchAgent that starts at login and is restarted when it exits with an error."""
    agent: dict[str, Any] = {
        "Label": LAUNCH_AGENT,
        "ProgramArguments": command,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Interactive",
    }
    if path:  # launchd's own PATH is /usr/bin:/bin:/usr/sbin:/sbin: apps would not be found
        agent["EnvironmentVariables"] = {"PATH": path}
    text = plistlib.dumps(agent).decode("utf-8")
    head, _, body = text.partition("<plist")
    return f"{head}<!-- {mark} -->\n<plist{body}"


class LaunchAgent(Target):
    method = "launchd"

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.plist = Path.home() / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT}.plist"

    def install(self) -> Report:
        report = Report(self.method)
        path = os.environ.get("PATH")
        if write_owned(self.plist, lambda mark: launch_agent_plist(self.command, path, mark),
                       report):
            domain = f"gui/{os.getuid()}"
            subprocess.run(["launchctl", "bootout", f"{domain}/{LAUNCH_AGENT}"],
                           capture_output=True, check=False)  # an older copy may be loaded
            run_command(["launchctl", "bootstrap", domain, str(self.plist)], report)
        return report

    def uninstall(self) -> Report:
        report = Report(self.method)
        if _owned(self.plist):
            run_command(["launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCH_AGENT}"], report)
        remove_owned(self.plist, report)
        return report


# ------------------------------------------------------------------ Windows

def run_key_value(command: list[str]) -> str:
    """The Run value's data: a command line as CreateProcess parses it."""
    return subprocess.list2cmdline(command)


class RunKey(Target):
    """``HKEY_CURRENT_USER\\...\\Run\\orchestratr``: Windows starts it at every logon."""

    method = "registry-run-key"

    def __init__(self, command: list[str]) -> None:
        self.value = run_key_value(command)

    def install(self) -> Report:
        if sys.platform != "win32":  # also tells type checkers elsewhere to skip the rest
            raise InstallError("the Run key exists on Windows only")
        import winreg

        report = Report(self.method)
        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            try:
                current = winreg.QueryValueEx(key, NAME)[0]
            except FileNotFoundError:
                current = None
            if current == self.value:
                report.add("unchanged", rf"HKCU\{RUN_KEY}\{NAME}")
            else:
                winreg.SetValueEx(key, NAME, 0, winreg.REG_SZ, self.value)
                report.add("wrote", rf"HKCU\{RUN_KEY}\{NAME} = {self.value}")
        return report

    def uninstall(self) -> Report:
        if sys.platform != "win32":
            raise InstallError("the Run key exists on Windows only")
        import winreg

        report = Report(self.method)
        with winreg.CreateKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            try:
                winreg.DeleteValue(key, NAME)
            except FileNotFoundError:
                return report
        report.add("removed", rf"HKCU\{RUN_KEY}\{NAME}")
        return report
