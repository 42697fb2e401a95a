"""The real ``orchestratr`` executable in subprocesses, against real daemons.

``cli(...)`` runs one command and returns its exit code, stdout and stderr; ``shared_daemon``
is one daemon per test module for the tests that do not change its config.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.conftest import DaemonProcess, kill_apps_of, wait_for, write_config
from tests.integration.api.conftest import CONFIG  # notes, sleeper, stubborn, broken

ORCHESTRATR = [sys.executable, "-m", "orchestratr"]


@attrs.frozen
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without ORCHESTRATR_* variables (no test ever reaches a real daemon by
    accident) or NO_COLOR, plus ``extra``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("ORCHESTRATR_") and k != "NO_COLOR"}
    return {**base, **(extra or {})}


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 20) -> Run:
    """``orchestratr ARGS`` with this interpreter, in ``clean_env(env)``."""
    done = subprocess.run([*ORCHESTRATR, *args], capture_output=True, text=True, input=input,
                          env=clean_env(env), timeout=timeout, check=False)
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(config_dir: Path) -> Callable[..., Run]:
    """``orchestratr --config-dir <this test's config dir> ARGS``."""
    return lambda *args, **kw: run_cli("--config-dir", str(config_dir), *args, **kw)


@attrs.frozen
class Shared:
    config_dir: Path
    daemon: DaemonProcess

    def cli(self, *args: str, **kw: Any) -> Run:
        return run_cli("--config-dir", str(self.config_dir), *args, **kw)

    @property
    def port(self) -> int:
        return int((self.config_dir / "port").read_text())


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One daemon (port 0, no hotkeys) on CONFIG for a whole module."""
    with serving(tmp_path_factory.mktemp("shared") / "config", CONFIG) as shared:
        yield shared


@contextmanager
def serving(config_dir: Path, config: str) -> Iterator[Shared]:
    """A daemon (port 0, no hotkeys) on ``config`` until the block ends; its apps are killed
    after it."""
    (config_dir / "apps.d").mkdir(parents=True)
    write_config(config_dir, config)
    daemon = DaemonProcess(config_dir, "--no-hotkeys")
    try:
        daemon.wait_event("daemon_started")
        yield Shared(config_dir, daemon)
    finally:
        daemon.stop()
        kill_apps_of(config_dir)
        daemon.proc.stdout.close()  # type: ignore[union-attr]
        daemon.proc.stderr.close()  # type: ignore[union-attr]


class Tmux:
    """A real terminal: one tmux server of its own (``-L``: never a person's sessions), one
    window running ``command``, read back as the screen shows it."""

    def __init__(self, socket: str, command: list[str], env: dict[str, str],
                 size: tuple[int, int] = (120, 30)) -> None:
        self._base = ["tmux", "-L", socket, "-f", "/dev/null"]
        shell_command = " ".join(shlex.quote(word) for word in command)
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # the exit status is kept on screen for the test to read (the shell outlives a Ctrl-C:
        # a trap, unlike an ignored signal, is not inherited)
        script = f"trap true INT; env -u NO_COLOR {exports} {shell_command}; echo EXIT=$?; sleep 600"
        subprocess.run([*self._base, "new-session", "-d", "-x", str(size[0]), "-y", str(size[1]),
                        "sh", "-c", script], check=True, timeout=10)

    def screen(self) -> str:
        return subprocess.run([*self._base, "capture-pane", "-p"], capture_output=True,
                              text=True, check=True, timeout=10).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self._base, "send-keys", *keys], check=True, timeout=10)

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        """The screen once it shows ``text``."""
        found = wait_for(lambda: text in (screen := self.screen()) and screen, timeout,
                         what=f"{text!r} on the screen")
        return str(found)

    def close(self) -> None:
        subprocess.run([*self._base, "kill-server"], check=False, timeout=10,
                       capture_output=True)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., Tmux]]:
    """``tmux(*orchestratr_args)``: the command in a real terminal, with this interpreter."""
    made: list[Tmux] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Tmux:
        socket = f"orchestratr-test-{os.getpid()}-{len(made)}-{tmp_path.name}"
        made.append(Tmux(socket, [*ORCHESTRATR, *args],
                         {"TERM": "xterm-256color", **(env or {})}))
        return made[-1]

    yield start
    for terminal in made:
        terminal.close()
