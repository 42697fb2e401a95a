"""Starting apps: the shell, the process group, the environment and the per-app log file.

``ProcessLauncher`` is the supervisor's ``Launcher``: it spawns here, hands processes to the
``ProcessTracker`` and readiness probes to ``readiness``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from orchestratr.errors import LaunchError
from orchestratr.paths import APP_ENV
from orchestratr.processes import readiness
from orchestratr.processes.tracker import ProcessTracker
from orchestratr.registry.model import AppSpec
from orchestratr.supervisor.launcher import OnExit

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3


def user_shell() -> str:
    """The user's login shell, so commands may use pipes, variables and their aliases' syntax."""
    return os.environ.get("SHELL") or "/bin/sh"


class ProcessLauncher:
    def __init__(
        self,
        app_log: Callable[[str], Path],
        tracker: ProcessTracker,
        *,
        shell: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._app_log = app_log  # Paths.app_log: where an app's output goes
        self._tracker = tracker
        self._shell = shell or user_shell()
        self._extra_env = dict(extra_env or {})
        self._lock = threading.Lock()
        self._spawned: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}

    def spawn(self, spec: AppSpec) -> int:
        cwd = self._cwd(spec)
        output = self._app_log(spec.name)
        try:
            log_fd = _open_log(output, spec)
        except OSError as exc:
            raise LaunchError(f"cannot open its log file {output}: {exc.strerror}") from None
        try:
            proc = subprocess.Popen(
                [self._shell, "-c", spec.command],
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=self._env(spec),
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"cannot run {self._shell}: {exc.strerror or exc}") from None
        except (ValueError, UnicodeError) as exc:  # what no exec can carry (a NUL, say)
            raise LaunchError(f"cannot be passed to a process: {exc}") from None
        finally:
            os.close(log_fd)
        with self._lock:
            self._spawned[proc.pid] = (proc, output)
        return proc.pid

    def track(self, pid: int, on_exit: OnExit) -> None:
        with self._lock:
            proc, output = self._spawned.pop(pid)
        self._tracker.watch_child(proc, on_exit, output)

    def reap(self, pid: int) -> None:
        with self._lock:
            proc, _ = self._spawned.pop(pid)
        self._tracker.reap(proc)

    def adopt(self, pid: int, on_exit: OnExit, group: bool = False) -> float:
        return self._tracker.watch_pid(pid, on_exit, group)

    def same_group(self, pid: int, leader: int) -> bool:
        try:
            return os.getpgid(pid) == leader
        except OSError:
            return False

    def terminate(self, pid: int, group: bool, grace_s: float) -> None:
        self._tracker.terminate(pid, group, grace_s)

    def probe_ready(
        self, spec: AppSpec, on_ready: Callable[[], None], on_timeout: Callable[[], None]
    ) -> Callable[[], None]:
        assert spec.ready_cmd is not None
        return readiness.start_probe(
            [self._shell, "-c", spec.ready_cmd],
            spec.ready_timeout_ms / 1000,
            on_ready,
            on_timeout,
            env=self._env(spec),
            cwd=self._cwd(spec),
        )

    def _env(self, spec: AppSpec) -> dict[str, str]:
        """The daemon's environment, the app's ``env``, then the markers that a restarted
        daemon checks before adopting a process (so an app's ``env`` cannot override them)."""
        return {**os.environ, **spec.env, **self._extra_env, APP_ENV: spec.name}

    def _cwd(self, spec: AppSpec) -> str | None:
        if spec.cwd is None:
            return None
        cwd = os.path.expanduser(os.path.expandvars(spec.cwd))
        if not os.path.isdir(cwd):
            raise LaunchError(f"working directory {spec.cwd!r} does not exist")
        return cwd


def _open_log(path: Path, spec: AppSpec) -> int:
    """Open the app's log for appending, rotating it first when it has grown too big."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_MAX_BYTES:
            for index in range(LOG_BACKUPS - 1, 0, -1):
                older = path.with_name(f"{path.name}.{index}")
                if older.exists():
                    older.replace(path.with_name(f"{path.name}.{index + 1}"))
            path.replace(path.with_name(f"{path.name}.1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.write(fd, f"--- orchestratr: {stamp} launching {spec.command!r}\n".encode())
    return fd
