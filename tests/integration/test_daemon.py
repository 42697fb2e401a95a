"""The daemon as a user runs it: first run, lock, signals, hot reload, logs, surviving apps."""

from __future__ import annotations

import http.client
import json
import os
import pty
import re
import resource
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from orchestratr.client import Client, OrchestratrClientError
from orchestratr.errors import ConfigError
from orchestratr.processes.tracker import group_members
from orchestratr.registry import watch
from orchestratr.supervisor.states import AppState, Cause
from tests.conftest import (
    DaemonProcess,
    alive,
    wait_for,
    wait_state,
    write_config,
)
from tests.integration.api.conftest import port_of

S = AppState

APP = """\
apps:
  - name: {name}
    chord: {chord}
    command: "{command}"
"""


def autostart(name: str, command: str, settings: str = "") -> str:
    """A config.yml with one app that the daemon launches when it starts."""
    return settings + APP.format(name=name, chord=name, command=command) + "    autostart: true\n"


class TestStartAndStop:
    def test_first_run_creates_config_and_logs_json(self, tmp_path: Path, start_daemon) -> None:
        """A fresh config dir gets config.yml and apps.d/; the log is JSON lines."""
        config_dir = tmp_path / "config"
        os.rmdir(config_dir / "apps.d")
        os.rmdir(config_dir)
        daemon = start_daemon()
        assert (config_dir / "config.yml").read_text().startswith("# orchestratr configuration")
        assert stat.S_IMODE((config_dir / "apps.d").stat().st_mode) == 0o700
        started = daemon.wait_event("daemon_started")
        assert started["pid"] == daemon.proc.pid and started["apps"] == 0
        assert started["level"] == "info" and "timestamp" in started
        assert (config_dir / "orchestratr.pid").read_text() == str(daemon.proc.pid)

    def test_sigterm_and_sigint_stop_cleanly_and_apps_survive(
        self, config_dir: Path, start_daemon
    ) -> None:
        """Shutdown takes well under 2 s, releases the lock, and leaves apps running."""
        write_config(config_dir, autostart("a", "sleep 60"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            daemon = start_daemon()
            event = daemon.wait_event("app_transition", app="a", dst="ready")
            started = time.monotonic()
            assert daemon.stop(sig) == 0
            assert time.monotonic() - started < 2.0
            assert alive(event["pid"])  # type: ignore[arg-type]
            assert not (config_dir / "orchestratr.pid").exists()
            assert daemon.events()[-1]["event"] == "daemon_stopped"

    def test_restarted_daemon_adopts_running_apps(self, config_dir: Path, start_daemon) -> None:
        """A daemon restart adopts the apps left running instead of launching duplicates."""
        write_config(config_dir, autostart("a", "sleep 60"))
        first = start_daemon()
        pid = first.wait_event("app_transition", app="a", dst="ready")["pid"]
        first.stop()
        second = start_daemon()
        resumed = second.wait_event("app_transition", app="a", dst="launched")
        assert (resumed["pid"], resumed["trigger"], resumed.get("resumed")) == (
            pid, "notify_launched", True)
        assert not [e for e in second.events() if e.get("trigger") == "spawned"]
        os.killpg(pid, signal.SIGKILL)  # type: ignore[arg-type]
        second.wait_event("app_transition", app="a", dst="stopped")  # status unknown: not ours

    def test_stop_apps_on_exit(self, config_dir: Path, start_daemon) -> None:
        write_config(config_dir, autostart("a", "sleep 60", "stop_apps_on_exit: true\n"))
        daemon = start_daemon()
        pid = daemon.wait_event("app_transition", app="a", dst="ready")["pid"]
        assert daemon.stop() == 0
        assert not alive(pid)  # type: ignore[arg-type]
        assert not (config_dir / "running.json").exists()  # nothing left for the next daemon

    def test_stop_apps_on_exit_kills_what_ignores_sigterm_within_two_seconds(
        self, config_dir: Path, start_daemon
    ) -> None:
        """An app that ignores SIGTERM, with a 30 s stop timeout, is SIGKILLed in the budget."""
        stubborn = "trap '' TERM; sleep 60 & sleep 60; wait"
        write_config(config_dir, "stop_apps_on_exit: true\n"
                     + autostart("a", stubborn) + "    stop_timeout_ms: 30000\n")
        daemon = start_daemon()
        pid = daemon.wait_event("app_transition", app="a", dst="ready")["pid"]
        wait_for(lambda: len(group_members(pid)) == 3, what="the shell and its two sleeps")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 2.0
        assert group_members(pid) == []  # type: ignore[arg-type]
        stopped = daemon.wait_event("app_transition", app="a", dst="stopped")
        assert stopped["code"] == -signal.SIGKILL

    def test_failures_are_logged_at_log_level_warning(
        self, config_dir: Path, start_daemon
    ) -> None:
        """A transition into failed is a warning, so a quiet daemon still shows it."""
        write_config(config_dir, autostart("a", "exit 3", "log_level: warning\n"))
        daemon = start_daemon("--no-hotkeys", wait=False)
        failed = daemon.wait_event("app_transition", app="a", dst="failed")
        assert failed["level"] == "warning" and failed["code"] == 3
        assert not [e for e in daemon.events() if e["level"] == "info"]

    def test_second_daemon_exits_naming_the_first(self, start_daemon) -> None:
        first = start_daemon()
        second = start_daemon(wait=False)
        assert second.proc.wait(timeout=10) == 1
        message = second.proc.stderr.read()  # type: ignore[union-attr]
        assert f"another orchestratr daemon (pid {first.proc.pid}) is already running" in message
        assert first.proc.poll() is None

    def test_killed_daemon_leaves_no_blocking_lock(self, config_dir: Path, start_daemon) -> None:
        """After kill -9 the pid file remains, but the next daemon starts anyway."""
        first = start_daemon()
        first.stop(signal.SIGKILL)
        assert (config_dir / "orchestratr.pid").read_text() == str(first.proc.pid)
        second = start_daemon()
        assert (config_dir / "orchestratr.pid").read_text() == str(second.proc.pid)

    def test_sigusr1_prints_every_threads_stack_and_keeps_running(self, start_daemon) -> None:
        daemon = start_daemon()
        stderr = daemon.proc.stderr
        assert stderr is not None
        os.set_blocking(stderr.fileno(), False)
        printed: list[str] = []
        daemon.proc.send_signal(signal.SIGUSR1)

        def stacks_printed() -> bool:
            try:  # the raw descriptor: a text stream's read() fails on an empty non-blocking pipe
                printed.append(os.read(stderr.fileno(), 65536).decode(errors="replace"))
            except BlockingIOError:
                pass
            return "dispatch.py" in "".join(printed)

        wait_for(stacks_printed, what="the stacks on stderr")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
        assert "Thread 0x" in "".join(printed)

    def test_sigusr1_while_connections_come_and_go_never_crashes_the_daemon(
        self, config_dir: Path, start_daemon
    ) -> None:
        """faulthandler's own SIGUSR1 handler walked the threads without the GIL: a stack
        dump at the instant a connection's thread ended crashed the daemon with SIGSEGV
        (within 50 signals, 3 runs of 3, under this churn). The dump now runs with the GIL."""

        daemon = start_daemon()
        port, done = port_of(config_dir), threading.Event()
        stderr = daemon.proc.stderr
        assert stderr is not None

        def churn() -> None:
            while not done.is_set():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    conn.getresponse().read()
                    conn.close()
                except OSError:
                    pass

        def drain() -> None:  # the stacks go to stderr: a full pipe would block the daemon
            while stderr.read(65536):
                pass

        workers = [threading.Thread(target=churn) for _ in range(4)]
        workers.append(threading.Thread(target=drain, daemon=True))
        for worker in workers:
            worker.start()
        try:
            ends = time.monotonic() + 2
            while time.monotonic() < ends and daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGUSR1)
                time.sleep(0.005)
        finally:
            done.set()
            for worker in workers[:-1]:
                worker.join(timeout=10)
        assert daemon.proc.poll() is None, f"the daemon died: {daemon.proc.poll()}"
        assert daemon.stop() == 0

    def test_invalid_config_at_start_recovers_when_fixed(
        self, config_dir: Path, start_daemon
    ) -> None:
        """A broken config.yml still starts the daemon; fixing the file loads it."""
        write_config(config_dir, "apps:\n  - {name: a, chord: '?', command: x}\n")
        daemon = start_daemon()
        error = daemon.wait_event("config_error")
        assert error["problem"] == "config.yml: apps[0] (a): chord: chord '?' is reserved"
        write_config(config_dir, APP.format(name="a", chord="a", command="true"))
        assert daemon.wait_event("reloaded")["apps"] == 1

    def test_log_level_is_honoured(self, config_dir: Path, start_daemon) -> None:
        write_config(config_dir, "log_level: warning\n")
        daemon = start_daemon("--no-hotkeys", wait=False)
        daemon.wait_event("hotkeys_unavailable")  # a warning: no display, or --no-hotkeys
        time.sleep(0.3)  # nothing at info level may appear, so there is no event to wait for
        assert daemon.stop() == 0  # it got as far as its signal handler
        assert {e["level"] for e in daemon.events()} == {"warning"}


class TestSurvivors:
    """Apps outlive the daemon; the next one adopts them, and only them."""

    def test_group_whose_launcher_exited_is_adopted_after_restart(
        self, config_dir: Path, start_daemon
    ) -> None:
        """`sleep & exit 0`: the first process is gone, its group lives on and is adopted."""
        write_config(config_dir, autostart("a", "sleep 60 & exit 0"))
        first = start_daemon()
        pgid = first.wait_event("app_transition", app="a", dst="ready")["pid"]
        assert isinstance(pgid, int)
        wait_for(lambda: not alive(pgid), what="the launcher shell to exit")
        (member,) = group_members(pgid)
        first.stop()
        second = start_daemon()
        resumed = second.wait_event("app_transition", app="a", dst="launched")
        assert (resumed["pid"], resumed.get("resumed")) == (pgid, True)
        answer = Client(config_dir=config_dir).launch("a")
        assert (answer["spawned"], answer["pid"]) == (False, pgid)
        assert group_members(pgid) == [member]
        assert not [e for e in second.events() if e.get("trigger") == "spawned"]
        os.kill(member, signal.SIGKILL)
        second.wait_event("app_transition", app="a", dst="stopped")

    def test_apps_of_a_killed_daemon_are_adopted_not_duplicated(
        self, config_dir: Path, start_daemon
    ) -> None:
        """After kill -9 the record is still right: autostart adopts instead of spawning."""
        write_config(config_dir, autostart("a", "sleep 60"))
        first = start_daemon()
        pid = first.wait_event("app_transition", app="a", dst="ready")["pid"]
        first.stop(signal.SIGKILL)  # no wait for the record: it is on disk before the pid
        second = start_daemon()
        resumed = second.wait_event("app_transition", app="a", dst="ready")
        assert resumed["pid"] == pid and resumed["source"] == "daemon"
        assert not [e for e in second.events() if e.get("trigger") == "spawned"]

    def test_a_lease_announced_at_launch_outlives_a_killed_daemon(
        self, config_dir: Path, start_daemon
    ) -> None:
        """An app that announced its lease in the `launched` body heartbeats on across a
        daemon's kill -9: the record keeps the lease, so the next daemon holds the app to it
        (it answered 409, "holds no heartbeat lease", to every heartbeat)."""
        write_config(config_dir, autostart("a", "sleep 60"))
        first = start_daemon()
        pid = first.wait_event("app_transition", app="a", dst="ready")["pid"]
        client = Client(config_dir=config_dir)
        client.request("POST", "/apps/a/launched", {"lease_secs": 30})
        first.stop(signal.SIGKILL)
        second = start_daemon()
        assert second.wait_event("app_transition", app="a", dst="ready")["pid"] == pid
        client = Client(config_dir=config_dir)
        assert client.heartbeat("a")["expires_in_secs"] == pytest.approx(30, abs=1)
        assert client.app("a")["lease"]["lease_secs"] == 30

    def test_survivor_of_a_broken_config_waits_for_the_fix(
        self, config_dir: Path, start_daemon
    ) -> None:
        """Restarted with config.yml broken, the app is not in the registry: it stays
        recorded, and the reload that brings it back adopts it instead of launching it."""
        good = autostart("a", "sleep 60")
        write_config(config_dir, good)
        first = start_daemon()
        pid = first.wait_event("app_transition", app="a", dst="ready")["pid"]
        first.stop()
        write_config(config_dir, good.replace("name: a", "name: a/b"))
        second = start_daemon()
        assert second.wait_event("survivors_waiting")["apps"] == ["a"]
        assert [s["name"] for s in json.loads((config_dir / "running.json").read_text())] == ["a"]
        write_config(config_dir, good)
        resumed = second.wait_event("app_transition", app="a", dst="launched")
        assert (resumed["pid"], resumed.get("resumed")) == (pid, True)
        assert not [e for e in second.events() if e.get("trigger") == "spawned"]

    def test_a_record_naming_processes_that_are_not_ours_adopts_nothing(
        self, config_dir: Path, start_daemon
    ) -> None:
        """A group without our markers, a reused pid, pid 1: none is adopted; autostart runs."""
        stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
        try:
            record = [
                {"name": "a", "pid": stranger.pid, "group": True, "ready": True,
                 "create_time": time.time() - 5},
                {"name": "b", "pid": stranger.pid, "group": False, "ready": True,
                 "create_time": time.time() - 3600},
                {"name": "c", "pid": 1, "group": False, "ready": True,
                 "create_time": psutil.Process(1).create_time()},
            ]
            (config_dir / "running.json").write_text(json.dumps(record))
            write_config(config_dir, "apps:\n" + "".join(
                f"  - {{name: {n}, command: sleep 60, autostart: true}}\n" for n in "abc"))
            daemon = start_daemon()
            for name in "abc":
                spawned = daemon.wait_event("app_transition", app=name, trigger="spawned")
                assert spawned["pid"] not in (stranger.pid, 1)
            assert not [e for e in daemon.events() if e.get("resumed")]
            assert stranger.poll() is None
        finally:
            stranger.kill()
            stranger.wait()


def test_the_daemon_cannot_be_made_to_stop_itself(config_dir: Path, start_daemon) -> None:
    """POST /apps/a/launched naming the daemon's pid, or 1, is a 400; nothing is adopted."""
    write_config(config_dir, APP.format(name="a", chord="a", command="sleep 60"))
    daemon = start_daemon()
    client = Client(config_dir=config_dir)
    for pid in (daemon.proc.pid, 1):
        with pytest.raises(OrchestratrClientError) as info:
            client.notify_launched("a", pid=pid)
        assert (info.value.status, info.value.code) == (400, "bad_request")
    assert client.stop("a")["state"] == "stopped"
    assert daemon.proc.poll() is None
    assert not (config_dir / "running.json").exists()


class TestHotReload:
    @pytest.mark.parametrize("backend", ["inotify", "watchdog"])
    def test_valid_edit_applies_within_a_second(
        self, config_dir: Path, in_process_daemon, monkeypatch: pytest.MonkeyPatch, backend: str
    ) -> None:
        """inotify on Linux; watchdog where inotify cannot be had (forced here)."""
        if backend == "watchdog":
            monkeypatch.setattr(watch, "_inotify_or_none", lambda _on_paths: None)
        with in_process_daemon() as running:
            sup = running.supervisor
            subscription = sup.bus.subscribe(accept=lambda e: e.type == "reloaded")
            started = time.monotonic()
            write_config(config_dir, APP.format(name="a", chord="a", command="true"))
            assert subscription.get(timeout=1.0) is not None
            assert time.monotonic() - started < 1.0
            assert [s.name for s in sup.snapshots()] == ["a"]
            (config_dir / "apps.d" / "b.yml").write_text("name: b\nchord: b\ncommand: 'true'\n")
            assert subscription.get(timeout=1.0) is not None
            assert sup.registry.get("b").declared_in == "apps.d/b.yml"  # type: ignore[union-attr]
            (config_dir / "apps.d" / "b.yml").unlink()
            assert subscription.get(timeout=1.0) is not None
            assert [s.name for s in sup.snapshots()] == ["a"]

    def test_a_daemon_holding_over_1024_descriptors_still_reloads(
        self, config_dir: Path, in_process_daemon
    ) -> None:
        """1,000 apps hold more than 1,024 descriptors and the config watcher starts after
        them: select.select refused its descriptor, the thread died six times in a row and took
        the daemon down (issue 16)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
        held: list[int] = []
        try:
            held.extend(os.open(os.devnull, os.O_RDONLY) for _ in range(1100))
            with in_process_daemon() as running:
                subscription = running.supervisor.bus.subscribe(
                    accept=lambda e: e.type == "reloaded")
                write_config(config_dir, APP.format(name="a", chord="a", command="true"))
                assert subscription.get(timeout=2.0) is not None
                assert [s.name for s in running.supervisor.snapshots()] == ["a"]
        finally:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_invalid_edit_keeps_the_last_good_registry(
        self, config_dir: Path, in_process_daemon
    ) -> None:
        """A broken edit changes nothing and reports every error; the running app is untouched."""
        write_config(config_dir, autostart("a", "sleep 60"))
        with in_process_daemon() as running:
            sup = running.supervisor
            pid = sup.snapshot("a").pid
            failures = sup.bus.subscribe(accept=lambda e: e.type == "reload_failed")
            write_config(config_dir, "apps:\n  - {name: a/b, chord: '?', command: 1}\n"
                         "  - {name: b}\n")
            event = failures.get(timeout=2)
            assert event is not None
            assert len(event.data["errors"]) == 3  # name, chord, missing command
            before = sup.registry
            with pytest.raises(ConfigError):
                running.daemon.reload(Cause.api)
            assert sup.registry is before
            assert sup.snapshot("a").state is S.ready and sup.snapshot("a").pid == pid

    def test_broken_drop_in_blocks_nothing(self, config_dir: Path, in_process_daemon) -> None:
        with in_process_daemon() as running:
            reloads = running.supervisor.bus.subscribe(accept=lambda e: e.type == "reloaded")
            (config_dir / "apps.d" / "a.yml").write_text("name: a\ncommand: 'true'\n")
            (config_dir / "apps.d" / "b.yml").write_text("name: b\ncommand: [oops\n")
            wait_for(lambda: reloads.get(timeout=1) and
                     [s.name for s in running.supervisor.snapshots()] == ["a"])

    def test_broken_drop_in_keeps_its_last_good_app_until_deleted(
        self, config_dir: Path, in_process_daemon
    ) -> None:
        """Bad input loses nothing: a typo in a drop-in that loaded before keeps its app
        registered (running, launchable), with the file's error reported."""
        drop_in = config_dir / "apps.d" / "a.yml"
        drop_in.write_text("name: a\ncommand: sleep 60\nautostart: true\n")
        with in_process_daemon() as running:
            sup = running.supervisor
            wait_state(sup, "a", S.ready)
            pid = sup.snapshot("a").pid
            drop_in.write_text("name: a\ncommand: [sleep 60\n")
            wait_for(lambda: any("stays active" in p for p in sup.registry.skipped), timeout=2)
            (problem,) = sup.registry.skipped
            assert problem.startswith("apps.d/a.yml: invalid YAML")
            assert sup.registry.get("a").declared_in == "apps.d/a.yml"  # type: ignore[union-attr]
            again = sup.launch("a", Cause.api)
            assert (again.spawned, again.app.pid) == (False, pid)
            drop_in.unlink()
            wait_for(lambda: sup.registry.get("a") is None, timeout=2)
            assert sup.snapshot("a").removed and alive(pid)  # type: ignore[arg-type]

    def test_broken_config_at_start_still_loads_drop_ins(
        self, config_dir: Path, in_process_daemon
    ) -> None:
        """No previous state to keep: default settings, and the valid drop-ins run."""
        write_config(config_dir, "log_level: loud\napps: [{name: a, command: x, chord: '?'}]\n")
        (config_dir / "apps.d" / "b.yml").write_text("name: b\ncommand: sleep 60\n"
                                                     "autostart: true\n")
        with in_process_daemon() as running:
            sup = running.supervisor
            assert [a.name for a in sup.registry.apps] == ["b"]
            assert sup.registry.settings.log_level == "info"
            wait_state(sup, "b", S.ready)

    def test_reload_adds_autostart_and_keeps_removed_app_running(
        self, config_dir: Path, in_process_daemon
    ) -> None:
        write_config(config_dir, autostart("a", "sleep 60"))
        with in_process_daemon() as running:
            sup = running.supervisor
            pid = sup.snapshot("a").pid
            write_config(config_dir, autostart("b", "sleep 60"))
            wait_for(lambda: sup.registry.get("b") is not None)
            wait_state(sup, "b", S.ready)
            assert sup.snapshot("a").removed and alive(pid)  # type: ignore[arg-type]
            os.killpg(pid, signal.SIGKILL)  # type: ignore[arg-type]
            wait_for(lambda: [s.name for s in sup.snapshots()] == ["b"])

    def test_editor_rename_and_recreated_apps_dir(self, config_dir: Path, in_process_daemon) -> None:
        """Saves by rename and a deleted-then-recreated apps.d/ are still seen."""
        with in_process_daemon() as running:
            sup = running.supervisor
            apps_dir = config_dir / "apps.d"
            apps_dir.rmdir()
            apps_dir.mkdir()
            tmp = apps_dir / ".a.yml.swp"
            tmp.write_text("name: a\ncommand: 'true'\n")
            tmp.rename(apps_dir / "a.yml")
            wait_for(lambda: sup.registry.get("a") is not None, timeout=2)


def test_daemon_log_records_every_step(config_dir: Path, start_daemon) -> None:
    """Transitions carry app, trigger, source, pid and durations in the JSON log."""
    write_config(config_dir, autostart("a", "exit 7"))
    daemon: DaemonProcess = start_daemon()
    failed = daemon.wait_event("app_transition", app="a", dst="failed")
    assert failed["trigger"] == "exited" and failed["source"] == "tracker"
    assert failed["code"] == 7 and isinstance(failed["uptime_ms"], float)
    assert "exited with status 7 within 1 s" in failed["error"]  # type: ignore[operator]
    spawned = next(e for e in daemon.events() if e.get("trigger") == "spawned")
    assert isinstance(spawned["pid"], int) and isinstance(spawned["spawn_ms"], float)
    assert json.loads((config_dir / "logs" / "orchestratr.log").read_text().splitlines()[0])


class TestConsole:
    def test_readable_log_lines_on_a_terminal_only(
        self, config_dir: Path, start_daemon
    ) -> None:
        """stderr that is a pipe or a file (systemd, a redirect) gets no copy of the log."""
        piped = start_daemon("--no-hotkeys")
        assert piped.stop() == 0
        assert "daemon_started" not in piped.proc.stderr.read()  # type: ignore[union-attr]

        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestratr", "daemon", "--config-dir", str(config_dir),
             "--port", "0", "--no-hotkeys"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        seen = b""
        try:
            deadline = time.monotonic() + 10
            while b"daemon_started" not in seen and time.monotonic() < deadline:
                if select.select([leader], [], [], 0.1)[0]:
                    seen += os.read(leader, 65536)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            os.close(leader)
        text = re.sub(r"\x1b\[[0-9;]*m", "", seen.decode(errors="replace"))  # coloured
        assert "daemon_started" in text and "[info" in text
        assert '"event": "daemon_started"' not in text  # readable, not the JSON
