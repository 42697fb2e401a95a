"""Starting apps: the shell, the process group, the environment and the per-app log file.

``ProcessLauncher`` is the supervisor's ``Launcher``: it spawns here, hands processes to the
``ProcessTracker`` and readiness probes to ``readiness``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from orchestratr.errors import LaunchError
from orchestratr.paths import APP_ENV, CONFIG_DIR_ENV
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
        self._spawned: dict[int, tuple[subprocess.Popen[bytes], Path, str]] = {}

    def spawn(self, spec: AppSpec) -> int:
        cwd = self._cwd(spec)
        output = self._app_log(spec.name)
        try:
            log_fd = _open_log(output, spec)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise LaunchError(_spawn_error(self._shell, exc)) from None
            raise LaunchError(f"cannot open its log file {output}: {exc.strerror}") from None
        try:
            with self._tracker.spawning() as note:
                proc = subprocess.Popen(
                    [self._shell, "-c", spec.command],
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=self._env(spec),
                    start_new_session=True,
                )
                note(proc.pid, True)
        except OSError as exc:
            raise LaunchError(_spawn_error(self._shell, exc)) from None
        except (ValueError, UnicodeError) as exc:  # what no exec can carry (a NUL, say)
            raise LaunchError(f"cannot be passed to a process: {exc}") from None
        finally:
            os.close(log_fd)
        with self._lock:
            self._spawned[proc.pid] = (proc, output, spec.name)
        return proc.pid

    def track(self, pid: int, on_exit: OnExit) -> None:
        with self._lock:
            proc, output, name = self._spawned.pop(pid)
        self._tracker.watch_child(proc, on_exit, output, app=name)

    def reap(self, pid: int) -> None:
        with self._lock:
            proc, _, _ = self._spawned.pop(pid)
        self._tracker.reap(proc)

    def adopt(
        self, pid: int, on_exit: OnExit, group: bool = False, members: Collection[int] = (),
        app: str | None = None,
    ) -> float:
        config_dir = self._extra_env.get(CONFIG_DIR_ENV)
        return self._tracker.watch_pid(pid, on_exit, group, members, app, config_dir)

    def same_group(self, pid: int, leader: int) -> bool:
        return self._tracker.belongs(pid, leader)

    def terminate(self, pid: int, group: bool, grace_s: float) -> None:
        self._tracker.terminate(pid, group, grace_s)

    def probe_ready(
        self, spec: AppSpec, on_ready: Callable[[], None], on_timeout: Callable[[], None]
    ) -> Callable[[], None]:
        assert spec.ready_cmd is not None
        return readiness.start_probe(
            self._tracker,
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


def _spawn_error(shell: str, exc: OSError) -> str:
    """Why a process could not be started; running out of descriptors says so plainly."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return (f"cannot run {shell}: out of file descriptors (the daemon's limit is {soft}, "
                f"hard limit {hard}); stop some apps or raise the hard limit (ulimit -Hn)")
    return f"cannot run {shell}: {exc.strerror or exc}"


_MADE: set[Path] = set()  # log directories known to exist: one mkdir each, not per launch


def _open_log(path: Path, spec: AppSpec) -> int:
    """Open the app's log for appending, rotating it first when it has grown too big."""
    if path.parent not in _MADE:
        path.parent.mkdir(parents=True, exist_ok=True)
        _MADE.add(path.parent)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_MAX_BYTES:
            for index in range(LOG_BACKUPS - 1, 0, -1):
                older = path.with_name(f"{path.name}.{index}")
                if older.exists():
                    older.replace(path.with_name(f"{path.name}.{index + 1}"))
            path.replace(path.with_name(f"{path.name}.1"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except FileNotFoundError:  # the log dir went away (a re-created config dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.write(fd, f"--- orchestratr: {stamp} launching {spec.command!r}\n".encode())
    return fd
