"""Shared fixtures: real supervisors over real processes, real daemons on temp config dirs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from orchestratr.daemon import Daemon, DaemonOptions
from orchestratr.paths import APP_ENV, CONFIG_DIR_ENV, Paths
from orchestratr.processes.output import OutputPump
from orchestratr.processes.spawn import ProcessLauncher
from orchestratr.processes.tracker import ProcessTracker, group_members
from orchestratr.registry.model import AppSpec, Registry
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.launcher import RunningRecord
from orchestratr.supervisor.states import AppState

PYTHON = sys.executable


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> object:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.005)


def run_concurrently(target: Callable[[int], None], count: int) -> None:
    """Run ``target(0)`` ... ``target(count - 1)`` in threads and wait for all of them."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie's status still answers, but it is gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ignores_sigterm(pid: int | None) -> bool:
    """Whether ``pid`` has set SIGTERM to be ignored (``trap '' TERM`` has run): a stop sent
    before that would end the app instead of leaving it ``stopping``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def wait_state(sup: Supervisor, name: str, *states: AppState, timeout: float = 5.0) -> None:
    """Block on the event bus until ``name`` is in one of ``states``."""
    subscription = sup.bus.subscribe()
    try:
        deadline = time.monotonic() + timeout
        while sup.snapshot(name).state not in states:
            if time.monotonic() > deadline:
                pytest.fail(f"{name} is {sup.snapshot(name).state}, wanted {states}")
            subscription.get(timeout=0.05)
    finally:
        subscription.close()


def kill_group(pid: int | None) -> None:
    """SIGKILL the process group ``pid`` if an app of ours is still in it: by the time a test
    cleans up, the number may lead some other program's group."""
    if not pid:
        return
    with contextlib.suppress(psutil.Error, OSError):
        if any(APP_ENV in psutil.Process(m).environ() for m in group_members(pid)):
            os.killpg(pid, signal.SIGKILL)


def kill_apps_of(config_dir: Path) -> None:
    """Kill every app a daemon on ``config_dir`` launched, running or left behind."""
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(CONFIG_DIR_ENV) == str(config_dir):
                kill_group(proc.pid)
                proc.kill()


@pytest.fixture
def make_supervisor(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    """Build a Supervisor over real processes with the given apps; every app is killed after.
    Apps are marked as a daemon's on config dir ``tmp_path`` (see processes/survivors.py)."""
    made: list[tuple[Supervisor, ProcessTracker, OutputPump, ProcessLauncher]] = []

    def make(*apps: AppSpec, record: RunningRecord | None = None, shell: str = "/bin/sh") -> Supervisor:
        tracker = ProcessTracker()
        tracker.start()
        pump = OutputPump()
        pump.start()
        launcher = ProcessLauncher(Paths(tmp_path, tmp_path / "logs").app_log, tracker, shell=shell,
                                   extra_env={CONFIG_DIR_ENV: str(tmp_path)}, output=pump)
        sup = Supervisor(launcher, record=record)
        sup.apply_registry(Registry(apps=apps))
        made.append((sup, tracker, pump, launcher))
        return sup

    yield make
    for sup, tracker, pump, launcher in made:
        sup.shutdown(stop_apps=False)
        for snap in sup.snapshots():
            kill_group(snap.pid)
        tracker.stop()
        pump.stop()
        pump.close()
        launcher.close()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    (path / "apps.d").mkdir(parents=True)
    return path


def write_config(config_dir: Path, text: str) -> None:
    """Replace config.yml the way editors do: a new file renamed over the old one."""
    tmp = config_dir / ".config.yml.tmp"
    tmp.write_text(text)
    tmp.replace(config_dir / "config.yml")


class InProcessDaemon:
    """A Daemon running in a thread, for tests that need to look inside it."""

    def __init__(self, config_dir: Path) -> None:
        self.daemon = Daemon(DaemonOptions(config_dir=str(config_dir), port=0))
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def __enter__(self) -> InProcessDaemon:
        self.thread.start()
        assert self.daemon.started.wait(10), "daemon did not start"
        return self

    @property
    def supervisor(self) -> Supervisor:
        assert self.daemon.supervisor is not None
        return self.daemon.supervisor

    def __exit__(self, *exc: object) -> None:
        self.daemon.request_stop()
        self.thread.join(timeout=5)
        kill_apps_of(self.daemon.paths.config_dir)


@pytest.fixture
def in_process_daemon(config_dir: Path) -> Callable[[], InProcessDaemon]:
    return lambda: InProcessDaemon(config_dir)


class DaemonProcess:
    """``orchestratr daemon`` in a subprocess, observed through its JSON log."""

    def __init__(self, config_dir: Path, *args: str, port: int | None = 0) -> None:
        if port is not None and "--port" not in args:
            args = (*args, "--port", str(port))  # tests run in parallel; never the user's 9876
        self.config_dir = config_dir
        self.log_file = config_dir / "logs" / "orchestratr.log"
        self._skip = len(self._lines())  # earlier daemons' lines in the same log
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "orchestratr", "daemon", "--config-dir", str(config_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _lines(self) -> list[str]:
        """Complete lines only: the daemon may be halfway through writing the last one."""
        try:
            return self.log_file.read_text().split("\n")[:-1]
        except FileNotFoundError:
            return []

    def events(self) -> list[dict[str, object]]:
        """This daemon's log events so far."""
        return [json.loads(line) for line in self._lines()[self._skip:] if line.strip()]

    def wait_event(self, name: str, timeout: float = 10.0, **fields: object) -> dict[str, object]:
        def find() -> dict[str, object] | None:
            for event in self.events():
                if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
                    return event
            assert self.proc.poll() is None or name == "daemon_stopped", self.proc.stderr.read()
            return None

        return wait_for(find, timeout, what=f"log event {name} {fields}")  # type: ignore[return-value]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the daemon prints its threads' stacks
            time.sleep(1)
            self.proc.kill()
            pytest.fail(f"daemon did not stop; its stacks:\n{self.proc.communicate()[1]}")

    def app_pids(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]


@pytest.fixture
def start_daemon(config_dir: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(*args: str, wait: bool = True, port: int | None = 0) -> DaemonProcess:
        """``port=None`` leaves the port to the config's ``api_port``."""
        daemon = DaemonProcess(config_dir, *args, port=port)
        started.append(daemon)
        if wait:
            daemon.wait_event("daemon_started")
        return daemon

    yield start
    kill_apps_of(config_dir)
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        daemon.proc.stdout.close()  # type: ignore[union-attr]
        daemon.proc.stderr.close()  # type: ignore[union-attr]
