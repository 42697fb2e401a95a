"""Starting apps: the shell, the process group, the environment and the per-app log file.

``ProcessLauncher`` is the supervisor's ``Launcher``: it spawns here, hands processes to the
``ProcessTracker``, readiness probes to ``readiness``, output to the ``OutputPump`` and
questions about CPU and memory to ``Usage``.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import threading
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from orchestratr import applog
from orchestratr.applog import Recent
from orchestratr.errors import LaunchError
from orchestratr.paths import APP_ENV, CONFIG_DIR_ENV
from orchestratr.processes import readiness
from orchestratr.processes.forker import Forker
from orchestratr.processes.output import OutputPump
from orchestratr.processes.tracker import ProcessTracker, check_adoptable
from orchestratr.registry.model import AppSpec
from orchestratr.supervisor.launcher import OnExit, ProcessExit, ProcessUsage

if TYPE_CHECKING:
    from orchestratr.processes.usage import Usage


def user_shell() -> str:
    """The user's login shell, so commands may use pipes, variables and their aliases' syntax."""
    return os.environ.get("SHELL") or "/bin/sh"


# Words of characters no shell expands or quotes, between blanks (not newlines: they end a
# command): such a command is split by the shell exactly as by ``str.split``.
_PLAIN_COMMAND = re.compile(r"[A-Za-z0-9_./:,+@%=\- \t]+")
# bash's keywords and builtins (``compgen -bk``): as a command, the shell runs them itself.
_SHELL_WORDS = frozenset("""
    . : [ [[ ]] ! { } alias bg bind break builtin caller case cd command compgen complete
    compopt continue coproc declare dirs disown do done echo elif else enable esac eval exec
    exit export false fc fg fi for function getopts hash help history if in jobs kill let
    local logout mapfile popd printf pushd pwd read readarray readonly return select set shift
    shopt source suspend test then time times trap true type typeset ulimit umask unalias
    unset until wait while
""".split())


def direct_argv(command: str) -> list[str] | None:
    """The words of ``command`` when a shell would only split it and exec the first one (no
    quote, variable, glob, tilde, redirection, operator, assignment or builtin): ``bash -c``
    execs such a command itself, so running the words directly is the same process, without
    the shell's start (1.5 ms of CPU per launch through bash, 0.6 ms direct). None otherwise."""
    words = command.split() if _PLAIN_COMMAND.fullmatch(command) else []
    if not words or words[0] in _SHELL_WORDS or "=" in words[0]:
        return None
    return words


class ProcessLauncher:
    def __init__(
        self,
        app_log: Callable[[str], Path],
        tracker: ProcessTracker,
        *,
        shell: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        output: OutputPump | None = None,
    ) -> None:
        self._app_log = app_log  # Paths.app_log: where an app's output goes
        self._tracker = tracker
        self._output = output  # None: apps write to their file themselves (rotated at launch)
        self._usage: Usage | None = None  # made at the first question: an idle daemon has none
        self._shell = shell or user_shell()
        self._extra_env = dict(extra_env or {})
        # the daemon's environment, read once: os.environ decodes every variable per read
        # (a tenth of a launch's Python), and the daemon never changes its own
        self._base_env = dict(os.environ)
        self._forker = Forker()  # every app is forked on a kept thread (see forker.py)
        self._lock = threading.Lock()
        # pid -> (its process, its log file, its app, the file's last bytes as written)
        self._spawned: dict[int, tuple[subprocess.Popen[bytes], Path, str, Recent | None]] = {}

    def spawn(self, spec: AppSpec) -> int:
        cwd = self._cwd(spec)
        output = self._app_log(spec.name)
        try:
            log_fd = (self._output.open(output, spec.command) if self._output is not None
                      else _open_log(output, spec))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise LaunchError(_spawn_error(self._program(spec), exc)) from None
            raise LaunchError(f"cannot open its log file {output}: {exc.strerror}") from None
        try:
            with self._tracker.spawning() as note:
                proc = self._forker.call(partial(self._popen, spec, cwd, log_fd))
                note(proc.pid, True)
        except OSError as exc:
            raise LaunchError(_spawn_error(self._program(spec), exc)) from None
        except (ValueError, UnicodeError) as exc:  # what no exec can carry (a NUL, say)
            raise LaunchError(f"cannot be passed to a process: {exc}") from None
        finally:
            os.close(log_fd)
        recent = self._output.recent(output) if self._output is not None else None
        with self._lock:
            self._spawned[proc.pid] = (proc, output, spec.name, recent)
        return proc.pid

    def close(self) -> None:
        """End the fork threads (the apps keep running; a later launch forks on its caller)."""
        self._forker.close()

    def _popen(self, spec: AppSpec, cwd: str | None, log_fd: int) -> subprocess.Popen[bytes]:
        """Run the command, directly when the shell would only exec it (see ``direct_argv``).
        A direct run that cannot start (no such program, not executable, a script without
        its ``#!``) goes through the shell after all, which runs it or says why as before."""
        env = self._env(spec)
        words = direct_argv(spec.command)
        if words is not None:
            try:
                pwd = {"PWD": os.path.abspath(cwd)} if cwd else {}  # as the shell would set it
                return _popen(words, cwd, log_fd, {**env, **pwd})
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    raise
        return _popen([self._shell, "-c", spec.command], cwd, log_fd, env)

    def _program(self, spec: AppSpec) -> str:
        """What a launch of ``spec`` runs first: the command's program, or the shell."""
        words = direct_argv(spec.command)
        return words[0] if words else self._shell

    def track(self, pid: int, on_exit: OnExit) -> None:
        with self._lock:
            proc, output, name, recent = self._spawned.pop(pid)
        self._tracker.watch_child(proc, self._quoting_output(on_exit, output, recent), app=name)

    def _quoting_output(self, on_exit: OnExit, output: Path, recent: Recent | None) -> OnExit:
        """``on_exit``, once what the app wrote is in its file (copied from its pipe first:
        whoever sees the app ended finds all its output there), given its last line when it
        failed."""

        def exited(exit: ProcessExit) -> None:
            if self._output is not None:
                self._output.drain(output)
            if exit.code not in (0, None):
                exit = attrs.evolve(exit, output_tail=applog.last_line(output, recent))
            on_exit(exit)

        return exited

    def reap(self, pid: int) -> None:
        with self._lock:
            proc, _, _, _ = self._spawned.pop(pid)
        self._tracker.reap(proc)

    def adopt(
        self, pid: int, on_exit: OnExit, group: bool = False, members: Collection[int] = (),
        app: str | None = None, born: float | None = None,
    ) -> float:
        config_dir = self._extra_env.get(CONFIG_DIR_ENV)
        return self._tracker.watch_pid(pid, on_exit, group, members, app, config_dir, born)

    def reattach_output(self, name: str, members: Collection[int]) -> bool:
        """Copy the output of an adopted app to its file again (its pipe is reopened).
        ``members``: its processes, as adoption's one scan found them (a process-table scan
        per app made a restart with 1,000 apps running take 26 s)."""
        if self._output is None:
            return False
        return self._output.reopen(self._app_log(name), sorted(members))

    def usage(self, pid: int, group: bool) -> list[ProcessUsage]:
        if self._usage is None:
            from orchestratr.processes.usage import Usage

            self._usage = Usage()
        return self._usage.of(pid, group, also=self._tracker.processes(pid))

    def check_adoptable(self, pid: int) -> None:
        check_adoptable(pid)

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
        return {**self._base_env, **spec.env, **self._extra_env, APP_ENV: spec.name}

    def _cwd(self, spec: AppSpec) -> str | None:
        if spec.cwd is None:
            return None
        cwd = os.path.expanduser(os.path.expandvars(spec.cwd))
        if not os.path.isdir(cwd):
            raise LaunchError(f"working directory {spec.cwd!r} does not exist")
        return cwd


def _popen(
    argv: list[str], cwd: str | None, log_fd: int, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """A new session (the app leads its own process group), output to ``log_fd``."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd,
                            stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)


def _spawn_error(program: str, exc: OSError) -> str:
    """Why ``program`` could not be started; running out of descriptors says so plainly."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return (f"cannot run {program}: out of file descriptors (the daemon's limit is {soft}, "
                f"hard limit {hard}); stop some apps or raise the hard limit (ulimit -Hn)")
    return f"cannot run {program}: {exc.strerror or exc}"


_MADE: set[Path] = set()  # log directories known to exist: one mkdir each, not per launch


def _open_log(path: Path, spec: AppSpec) -> int:
    """Without an output pump: the app's log for it to append to, rotated first when it has
    passed the limit (the only time it can be, since the app holds the file)."""
    if path.parent not in _MADE:
        path.parent.mkdir(parents=True, exist_ok=True)
        _MADE.add(path.parent)
    if path.exists() and path.stat().st_size >= applog.LOG_MAX_BYTES:
        applog.rotate(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except FileNotFoundError:  # the log dir went away (a re-created config dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, applog.header(spec.command))
    return fd
