"""The supervisor over real processes: launch, track, exit, stop, restart, readiness, adoption."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import psutil
import pytest

from orchestratr import applog
from orchestratr.errors import (
    ConflictError,
    InvalidTransitionError,
    LaunchError,
    NoSuchProcessError,
    UnadoptablePidError,
    UnknownAppError,
)
from orchestratr.paths import Paths
from orchestratr.processes import survivors
from orchestratr.processes.journal import COMPACT_FLOOR, Journal, Survivor
from orchestratr.processes.tracker import group_members, in_app
from orchestratr.registry.model import AppSpec, Registry, RestartPolicy
from orchestratr.registry.validate import MAX_NAME
from orchestratr.supervisor.core import SHUTDOWN_GRACE_S, SHUTDOWN_WAIT_S, Supervisor
from orchestratr.supervisor.states import AppState, Cause, Trigger
from tests.conftest import alive, ignores_sigterm, run_concurrently, wait_for, wait_state

S = AppState
MakeSup = Callable[..., Supervisor]


def app(name: str, command: str, **fields: object) -> AppSpec:
    return AppSpec(name=name, command=command, **fields)  # type: ignore[arg-type]


def launches(sup: Supervisor, name: str) -> list[float]:
    return [h.at for h in sup.snapshot(name).history if h.trigger is Trigger.launch]


class TestLaunch:
    def test_launch_spawns_tracks_and_is_ready(self, make_supervisor: MakeSup) -> None:
        """A launch spawns one real process in its own session; no ready_cmd means ready."""
        sup = make_supervisor(app("a", "sleep 30"))
        result = sup.launch("a", Cause.cli)
        assert result.spawned and result.app.pid is not None
        assert result.app.state is S.ready
        proc = psutil.Process(result.app.pid)
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
        triggers = [(h.trigger, h.dst, h.cause) for h in sup.snapshot("a").history]
        assert triggers == [(Trigger.launch, S.launching, Cause.cli),
                            (Trigger.spawned, S.launched, Cause.cli),
                            (Trigger.notify_ready, S.ready, Cause.readiness)]

    def test_second_launch_spawns_nothing(self, make_supervisor: MakeSup) -> None:
        """Launching a running app reports its pid and keeps its readiness (Go bug B3)."""
        sup = make_supervisor(app("a", "sleep 30"))
        first = sup.launch("a", Cause.hotkey).app
        again = sup.launch("a", Cause.api)
        assert not again.spawned
        assert (again.app.pid, again.app.state, again.app.ready_at) == (
            first.pid, S.ready, first.ready_at)

    def test_concurrent_launches_spawn_exactly_one(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """Twenty threads pressing launch at once start one process.

        The command counts its own starts in a file: counting processes by command line would
        also catch the shell's fork before it execs (a transient second process).
        """
        sup = make_supervisor(app("a", "echo started >> starts; exec sleep 30",
                                  cwd=str(tmp_path)))
        barrier = threading.Barrier(20)
        results = []

        def press(_: int) -> None:
            barrier.wait()
            results.append(sup.launch("a", Cause.hotkey))

        run_concurrently(press, 20)
        assert sum(r.spawned for r in results) == 1
        pid = sup.snapshot("a").pid
        assert pid is not None
        wait_for(lambda: psutil.Process(pid).cmdline() == ["sleep", "30"], what="its exec")
        assert (tmp_path / "starts").read_text() == "started\n"
        assert [h.trigger for h in sup.snapshot("a").history].count(Trigger.spawned) == 1

    def test_env_cwd_and_output_go_to_the_app_log(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """The command runs in the shell with cwd and env; its output lands in its log file."""
        sup = make_supervisor(app("a", 'echo "$GREETING from $(pwd) as $ORCHESTRATR_APP" | tr a-z A-Z',
                                  cwd=str(tmp_path), env={"GREETING": "hi"}))
        sup.launch("a", Cause.cli)
        wait_state(sup, "a", S.stopped)
        log = (tmp_path / "logs" / "apps" / "a.log").read_text()
        assert f"HI FROM {str(tmp_path).upper()} AS A" in log

    def test_a_command_the_shell_would_only_exec_runs_without_one(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """No shell is started for plain words (the shell would exec them itself), and the
        program sees the same working directory and $PWD; anything else still goes through
        the shell, as does a plain command that cannot be exec'd."""
        started = tmp_path / "shells-started"
        shell = tmp_path / "counting-shell"
        shell.write_text(f'#!/bin/sh\necho "$2" >> {started}\nexec /bin/sh "$@"\n')
        shell.chmod(0o755)
        work = tmp_path / "work"
        work.mkdir()
        sup = make_supervisor(
            app("plain", "printenv PWD", cwd=str(work)),
            app("shell", "echo $((20 + 22))"),
            app("missing", "no-such-command-xyz --flag"),
            shell=str(shell),
        )
        for name in ("plain", "shell", "missing"):
            sup.launch(name, Cause.cli)
        wait_state(sup, "plain", S.stopped)
        wait_state(sup, "shell", S.stopped)
        wait_state(sup, "missing", S.failed)
        logs = tmp_path / "logs" / "apps"
        assert f"\n{work}\n" in (logs / "plain.log").read_text()
        assert "\n42\n" in (logs / "shell.log").read_text()
        assert sorted(started.read_text().splitlines()) == [
            "echo $((20 + 22))", "no-such-command-xyz --flag"]

    def test_output_is_in_the_file_once_the_app_is_seen_stopped(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """The pipe is copied before a clean exit is reported, as it was for a failed one: a
        reader who saw the app stopped once found its last line missing from the file."""
        sup = make_supervisor(app("a", "printf 'run %s\\n' $$"))
        for _ in range(20):
            pid = sup.launch("a", Cause.cli).app.pid
            wait_state(sup, "a", S.stopped)
            log = (tmp_path / "logs" / "apps" / "a.log").read_text()
            assert f"run {pid}\n" in log

    def test_unknown_app(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor()
        with pytest.raises(UnknownAppError, match="app 'nope' not found"):
            sup.launch("nope", Cause.cli)


class TestLaunchFailures:
    @pytest.mark.parametrize(
        ("command", "reason"),
        [
            ("no-such-command-xyz", "exited with status 127 (command not found) within 1 s of launch"),
            ("{script}", "exited with status 126 (permission denied) within 1 s of launch"),
            ("echo bad config >&2; exit 3", "exited with status 3 within 1 s of launch: bad config"),
        ],
    )
    def test_quick_failure_names_command_environment_and_reason(
        self, make_supervisor: MakeSup, tmp_path: Path, command: str, reason: str
    ) -> None:
        """Not found, not executable, or a non-zero exit within 1 s: failed, with the reason."""
        script = tmp_path / "not-executable.sh"
        script.write_text("echo hi\n")
        command = command.format(script=script)
        sup = make_supervisor(app("a", command, environment="wsl"))
        sup.launch("a", Cause.cli)
        wait_state(sup, "a", S.failed)
        error = sup.snapshot("a").error
        assert error is not None
        assert error.startswith(f"command {command!r} (wsl) {reason}")

    def test_missing_cwd_fails_the_spawn(self, make_supervisor: MakeSup) -> None:
        """A spawn that cannot start raises LaunchError and leaves the app failed."""
        sup = make_supervisor(app("a", "true", cwd="/no/such/dir"))
        with pytest.raises(LaunchError, match="working directory '/no/such/dir' does not exist"):
            sup.launch("a", Cause.cli)
        snap = sup.snapshot("a")
        assert snap.state is S.failed and "'true' (native)" in (snap.error or "")
        assert snap.history[-1].trigger is Trigger.spawn_failed

    def test_next_successful_launch_clears_the_error(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app("a", "exit 2"))
        sup.launch("a", Cause.cli)
        wait_state(sup, "a", S.failed)
        sup.apply_registry(Registry(apps=(app("a", "sleep 30"),)))
        assert sup.launch("a", Cause.cli).app.error is None

    def test_later_crash_is_failed_without_the_launch_wording(
        self, make_supervisor: MakeSup
    ) -> None:
        """Death by signal after launch: failed, with the signal in the error."""
        sup = make_supervisor(app("a", "sleep 30"))
        pid = sup.launch("a", Cause.cli).app.pid
        assert pid
        os.killpg(pid, signal.SIGKILL)
        wait_state(sup, "a", S.failed)
        error = sup.snapshot("a").error or ""
        assert "'sleep 30' (native) was killed by SIGKILL" in error


class TestTracking:
    def test_clean_exit_is_stopped(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app("a", "true"))
        sup.launch("a", Cause.cli)
        wait_state(sup, "a", S.stopped)
        last = sup.snapshot("a").history[-1]
        assert (last.trigger, last.cause, last.detail["code"]) == (Trigger.exited, Cause.tracker, 0)

    def test_group_keeps_app_alive_after_the_shell_exits(self, make_supervisor: MakeSup) -> None:
        """A shell that forks a child and exits leaves the app running until the child ends."""
        sup = make_supervisor(app("a", "sleep 30 & exit 0"))
        shell_pid = sup.launch("a", Cause.cli).app.pid
        assert shell_pid
        wait_for(lambda: not alive(shell_pid), what="the shell to exit")
        child = psutil.Process(shell_pid).children() if alive(shell_pid) else None
        members = _live_members(shell_pid)
        assert len(members) == 1 and child is None
        assert sup.snapshot("a").state is S.ready
        members[0].kill()
        wait_state(sup, "a", S.stopped)

    def test_adopted_pid_is_tracked_and_its_exit_means_stopped(
        self, make_supervisor: MakeSup
    ) -> None:
        """An app announcing its own pid is tracked; its exit (status unknown) is stopped."""
        sup = make_supervisor(app("a", "unused"))
        outsider = subprocess.Popen(["sleep", "30"])
        try:
            snap = sup.notify_launched("a", Cause.api, pid=outsider.pid)
            assert (snap.state, snap.pid) == (S.launched, outsider.pid)
            outsider.kill()
            outsider.wait()
            wait_state(sup, "a", S.stopped)
        finally:
            outsider.kill()

    def test_dead_pid_is_refused(self, make_supervisor: MakeSup) -> None:
        """A pid that is not running cannot be adopted; the app's state is unchanged."""
        sup = make_supervisor(app("a", "unused"))
        gone = subprocess.Popen(["true"])
        gone.wait()
        with pytest.raises(NoSuchProcessError, match=f"no running process with pid {gone.pid}"):
            sup.notify_launched("a", Cause.api, pid=gone.pid)
        assert sup.snapshot("a").state is S.stopped

    @pytest.mark.parametrize("who", ["init", "the daemon", "its parent"])
    def test_pids_whose_stop_would_signal_the_daemon_are_refused(
        self, make_supervisor: MakeSup, who: str
    ) -> None:
        """pid 1, the daemon (this process here) and its ancestors are never adopted."""
        pid = {"init": 1, "the daemon": os.getpid(), "its parent": os.getppid()}[who]
        sup = make_supervisor(app("a", "unused"), app("b", "sleep 30"))
        with pytest.raises(UnadoptablePidError, match=f"pid {pid} "):
            sup.notify_launched("a", Cause.api, pid=pid)
        snap = sup.snapshot("a")
        assert (snap.state, snap.pid, snap.history) == (S.stopped, None, ())
        # a running app too: the conflict with its process was said first (409, not 400)
        running = sup.launch("b", Cause.cli).app.pid
        with pytest.raises(UnadoptablePidError, match=f"pid {pid} "):
            sup.notify_launched("b", Cause.api, pid=pid)
        assert sup.snapshot("b").pid == running

    def test_another_pid_cannot_take_tracking_from_a_live_group(
        self, make_supervisor: MakeSup
    ) -> None:
        """A running app announcing an unrelated pid is refused (409), and no app can claim
        another app's process: either would leave a live process that no stop reaches."""
        sup = make_supervisor(app("a", "sleep 30"), app("b", "unused"))
        leader = sup.launch("a", Cause.cli).app.pid
        assert leader
        outsider = subprocess.Popen(["sleep", "30"])
        try:
            with pytest.raises(ConflictError, match=f"already runs as process group {leader}"):
                sup.notify_launched("a", Cause.api, pid=outsider.pid)
            with pytest.raises(ConflictError, match="is a process of app 'a'"):
                sup.notify_launched("b", Cause.api, pid=leader)
            assert (sup.snapshot("a").pid, sup.snapshot("a").group) == (leader, True)
            assert sup.snapshot("b").state is S.stopped
            sup.stop("a", Cause.cli)
            wait_state(sup, "a", S.stopped)  # still tracking the group it spawned
            assert not alive(leader) and outsider.poll() is None
        finally:
            outsider.kill()
            outsider.wait()

    def test_pid_of_own_group_keeps_group_tracking(self, make_supervisor: MakeSup) -> None:
        """The app's own process announcing its pid does not narrow tracking to that pid."""
        sup = make_supervisor(app("a", "sleep 30 & sleep 30 & wait"))
        leader = sup.launch("a", Cause.cli).app.pid
        assert leader
        members = wait_for(lambda: [p.pid for p in _live_members(leader) if p.pid != leader]
                           or None)
        assert isinstance(members, list)
        snap = sup.notify_launched("a", Cause.api, pid=members[0])
        assert (snap.pid, snap.group) == (leader, True)


class TestStop:
    def test_stop_terms_the_group(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app("a", "sleep 30 & sleep 30; wait"))
        pid = sup.launch("a", Cause.cli).app.pid
        snap = sup.stop("a", Cause.cli)
        assert snap.state is S.stopping
        wait_state(sup, "a", S.stopped)
        assert not _live_members(pid)
        assert sup.snapshot("a").error is None

    def test_sigkill_after_stop_timeout(self, make_supervisor: MakeSup, tmp_path: Path) -> None:
        """A command that ignores SIGTERM is killed after stop_timeout_ms."""
        sup = make_supervisor(app("a", "trap '' TERM; touch ready; sleep 30 & wait; sleep 30",
                                  cwd=str(tmp_path), stop_timeout_ms=300))
        sup.launch("a", Cause.cli)
        wait_for(lambda: (tmp_path / "ready").exists())
        started = time.monotonic()
        sup.stop("a", Cause.cli)
        wait_state(sup, "a", S.stopped)
        assert time.monotonic() - started >= 0.3
        assert sup.snapshot("a").history[-1].detail["code"] == -signal.SIGKILL

    def test_stop_when_stopped_is_accepted_and_changes_nothing(
        self, make_supervisor: MakeSup
    ) -> None:
        sup = make_supervisor(app("a", "sleep 30"))
        assert sup.stop("a", Cause.cli).state is S.stopped
        assert sup.snapshot("a").history == ()

    def test_shutdown_stopping_apps_is_bounded_and_complete(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """With stop_apps, an app that ignores SIGTERM is killed at the shutdown's grace, not
        after its 30 s stop timeout, and every app is gone before shutdown returns."""
        sup = make_supervisor(
            app("a", "trap '' TERM; touch up; sleep 30", cwd=str(tmp_path),
                stop_timeout_ms=30000),
            app("b", "sleep 30"))
        pids = [sup.launch(name, Cause.cli).app.pid for name in "ab"]
        wait_for(lambda: (tmp_path / "up").exists())
        started = time.monotonic()
        assert sup.shutdown(stop_apps=True) == []
        assert SHUTDOWN_GRACE_S <= time.monotonic() - started < SHUTDOWN_WAIT_S + 0.2
        assert [sup.snapshot(n).state for n in "ab"] == [S.stopped, S.stopped]
        assert sup.snapshot("a").history[-1].detail["code"] == -signal.SIGKILL
        assert not any(_live_members(pid) for pid in pids if pid)

    def test_restart_command(self, make_supervisor: MakeSup) -> None:
        """restart stops the running process and starts a new one."""
        sup = make_supervisor(app("a", "sleep 30"))
        old = sup.launch("a", Cause.cli).app.pid
        sup.restart("a", Cause.api)
        wait_for(lambda: sup.snapshot("a").state is S.ready and sup.snapshot("a").pid != old)
        assert old and not alive(old)


class TestRestartPolicy:
    """The policy's rules are replayed in tests/unit/supervisor/test_restarts.py with a fake
    clock; here real processes crash once, end to end."""

    def test_a_killed_app_runs_again_and_a_crash_loop_stops(
        self, make_supervisor: MakeSup
    ) -> None:
        sup = make_supervisor(app("a", "sleep 30", restart=RestartPolicy.on_failure,
                                  restart_delay_ms=0),
                              app("b", "exit 3", restart=RestartPolicy.on_failure,
                                  restart_delay_ms=0))
        old = sup.launch("a", Cause.cli).app.pid
        assert old
        os.killpg(old, signal.SIGKILL)
        wait_for(lambda: sup.snapshot("a").state is S.ready and sup.snapshot("a").pid != old)
        assert alive(sup.snapshot("a").pid)  # type: ignore[arg-type]
        sup.launch("b", Cause.cli)
        wait_for(lambda: sup.snapshot("b").history[-1].trigger is Trigger.crash_loop)
        assert len(launches(sup, "b")) == 5 and sup.snapshot("b").state is S.failed


class TestReadiness:
    def test_ready_cmd_polls_until_it_passes(self, make_supervisor: MakeSup, tmp_path: Path) -> None:
        sup = make_supervisor(app("a", "sleep 0.3; touch up; sleep 30", cwd=str(tmp_path),
                                  ready_cmd="test -f up", ready_timeout_ms=5000))
        assert sup.launch("a", Cause.cli).app.state is S.launched
        wait_state(sup, "a", S.ready)
        assert sup.snapshot("a").history[-1].cause is Cause.readiness

    def test_ready_timeout_leaves_the_app_launched(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app("a", "sleep 30", ready_cmd="false", ready_timeout_ms=300))
        subscription = sup.bus.subscribe(accept=lambda e: e.type == "ready_timeout")
        sup.launch("a", Cause.cli)
        event = subscription.get(timeout=5)
        assert event is not None and event.data["app"] == "a"
        assert sup.snapshot("a").state is S.launched

    def test_app_can_report_ready_itself(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app("a", "sleep 30", ready_cmd="false", ready_timeout_ms=5000))
        sup.launch("a", Cause.cli)
        assert sup.notify_ready("a", Cause.api).state is S.ready
        assert sup.notify_ready("a", Cause.api).state is S.ready  # idempotent


class TestModes:
    def test_detached_is_fire_and_forget(self, make_supervisor: MakeSup, tmp_path: Path) -> None:
        """A detached app is spawned, then stopped, with no tracking."""
        sup = make_supervisor(app("a", "echo $$ > pid; exec sleep 30", detached=True,
                                  cwd=str(tmp_path)))
        snap = sup.launch("a", Cause.cli).app
        assert snap.state is S.stopped and snap.pid is None
        pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text()))
        assert alive(pid)
        os.kill(pid, signal.SIGKILL)

    def test_detached_apps_are_reaped(self, make_supervisor: MakeSup) -> None:
        """Untracked, but waited for: no zombie and no process handle is left behind."""
        sup = make_supervisor(app("a", "exit 0", detached=True))
        for _ in range(3):
            assert sup.launch("a", Cause.cli).app.state is S.stopped
        pids = [h.detail["pid"] for h in sup.snapshot("a").history
                if h.trigger is Trigger.spawned]
        assert len(pids) == 3
        wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids), what="reaping")
        assert sup._launcher._spawned == {}  # type: ignore[attr-defined]

    def test_invalid_notification_is_refused_with_state_and_trigger(
        self, make_supervisor: MakeSup
    ) -> None:
        sup = make_supervisor(app("a", "trap '' TERM; sleep 30", stop_timeout_ms=2000))
        pid = sup.launch("a", Cause.cli).app.pid
        wait_for(lambda: ignores_sigterm(pid), what="the trap")
        sup.stop("a", Cause.cli)
        with pytest.raises(InvalidTransitionError) as info:
            sup.notify_ready("a", Cause.api)
        assert (info.value.state, info.value.trigger) == ("stopping", "notify_ready")
        with pytest.raises(InvalidTransitionError, match="it is stopping"):
            sup.launch("a", Cause.hotkey)


class TestReload:
    def test_removed_app_stays_tracked_until_it_exits(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app("a", "sleep 30"), app("b", "sleep 30"))
        pid = sup.launch("a", Cause.cli).app.pid
        sup.apply_registry(Registry(apps=(app("b", "sleep 30"),)))
        snap = sup.snapshot("a")
        assert snap.removed and snap.state is S.ready and alive(pid)  # type: ignore[arg-type]
        with pytest.raises(UnknownAppError, match="removed"):
            sup.launch("a", Cause.cli)
        sup.stop("a", Cause.cli)
        wait_for(lambda: "a" not in [s.name for s in sup.snapshots()])

    def test_changed_command_is_used_at_next_launch(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        sup = make_supervisor(app("a", "sleep 30"))
        pid = sup.launch("a", Cause.cli).app.pid
        sup.apply_registry(Registry(apps=(app("a", "sleep 31"),)))
        assert sup.snapshot("a").pid == pid
        sup.stop("a", Cause.cli)
        wait_state(sup, "a", S.stopped)
        sup.launch("a", Cause.cli)
        # the run's header, written before it is spawned (its shell may have exec'd by now)
        launch = applog.parse_header(applog.tail(Paths(tmp_path, tmp_path / "logs").app_log("a"), 1)[0])
        assert launch is not None and launch.command == "sleep 31"

    def test_autostart_on_add(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor()
        added = sup.apply_registry(Registry(apps=(app("a", "sleep 30", autostart=True),
                                                  app("b", "sleep 30"))))
        assert added == ["a", "b"]
        assert sup.snapshot("a").state is S.ready and sup.snapshot("b").state is S.stopped


class TestRunningRecord:
    """The durable record (processes/journal.py) and adoption only of what is ours."""

    def test_a_launch_is_on_disk_before_it_returns(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """Issue 11, defect 1: running.json was written asynchronously, so a daemon killed
        during launches left groups nobody had recorded. Now a launch returns only once a
        fresh reader of the files (the next daemon) finds its group."""
        files = (tmp_path / "running.json", tmp_path / "running.journal")
        journal = Journal(*files)
        journal.open()
        sup = make_supervisor(app("a", "sleep 30 & exit 0"), app("b", "sleep 30"),
                              record=journal)
        try:
            before = time.time()
            group = sup.launch("a", Cause.cli).app.pid
            assert [(s.name, s.pid) for s in Journal(*files).read()] == [("a", group)]
            other = sup.launch("b", Cause.cli).app.pid
            assert {s.name for s in Journal(*files).read()} == {"a", "b"}
            os.killpg(other, signal.SIGKILL)  # type: ignore[arg-type]
            wait_for(lambda: [s.name for s in Journal(*files).read()] == ["a"])
            (entry,) = Journal(*files).read()
            assert (entry.pid, entry.group) == (group, True)
            assert before - 1 <= entry.create_time <= time.time()  # when it was spawned
            sup.stop("a", Cause.cli)
            wait_for(lambda: not Journal(*files).read(), what="an empty record")
        finally:
            journal.close()

    def test_an_exit_is_recorded_before_the_app_is_seen_without_its_process(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """A daemon stopping its apps on the way out waits until none has a process, then
        closes the record. The exit was recorded after its news (event, log line): while
        those were slow, the record was closed with the stopped app still in it, and the next
        daemon found a running.json of apps that no longer ran."""
        journal = Journal(tmp_path / "running.json", tmp_path / "running.journal")
        journal.open()
        sup = make_supervisor(app("a", "sleep 30"), record=journal)

        def slow_news(event: object) -> bool:
            time.sleep(0.3)  # the bus calls this with the news of every transition
            return False

        sup.launch("a", Cause.cli)
        reader = sup.bus.subscribe(accept=slow_news)
        try:
            assert sup.shutdown(stop_apps=True) == []
            assert journal.close() == 0
        finally:
            reader.close()

    def test_an_app_announcing_its_tracked_pid_again_keeps_its_record(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """A second `launched` with the pid already tracked rewrote the record as not ready
        (and without its lease): the next daemon adopted a ready app as merely launched."""
        files = (tmp_path / "running.json", tmp_path / "running.journal")
        journal = Journal(*files)
        journal.open()
        sup = make_supervisor(app("a", "sleep 30"), record=journal)
        try:
            pid = sup.launch("a", Cause.cli).app.pid
            assert pid is not None
            sup.notify_launched("a", Cause.api, pid=pid, lease_s=30.0)
            sup.notify_ready("a", Cause.api)
            sup.notify_launched("a", Cause.api, pid=pid)
            journal.durable()
            (entry,) = Journal(*files).read()
            assert (entry.pid, entry.ready, entry.lease_s) == (pid, True, 30.0)
        finally:
            sup.stop("a", Cause.cli)
            journal.close()

    def test_the_journal_is_compacted(self, tmp_path: Path) -> None:
        files = (tmp_path / "running.json", tmp_path / "running.journal")
        journal = Journal(*files)
        journal.open()
        for pid in range(2, 2 + COMPACT_FLOOR * 2):
            journal.started("a", pid, True, 1.0)
            journal.ended("a", pid)
        journal.started("b", 77, True, 1.0)
        assert files[1].stat().st_size < COMPACT_FLOOR * 200  # not every line ever written
        assert [s.name for s in Journal(*files).read()] == ["b"]
        assert journal.close() == 1

    def test_long_names_and_announced_leases_survive_replay_and_compaction(
        self, tmp_path: Path
    ) -> None:
        """A name of 128 characters (the Go orchestratr's limit; the record took 64, so such an
        app was launched twice after a restart) and a lease announced at launch are read back
        from the journal and from the compacted snapshot."""
        files = (tmp_path / "running.json", tmp_path / "running.journal")
        long_name = "n" * MAX_NAME
        journal = Journal(*files)
        journal.open()
        journal.started(long_name, 42, True, 1.0)
        journal.leased(long_name, 42, 30.0)
        assert [(s.name, s.lease_s) for s in Journal(*files).read()] == [(long_name, 30.0)]
        assert journal.close() == 1  # compacts into running.json
        assert [(s.name, s.lease_s) for s in Journal(*files).read()] == [(long_name, 30.0)]

    def test_a_group_is_recognised_by_its_live_members(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """The launcher shell is gone; its child, marked with our config dir and the app's
        name, is what makes the group ours. Another name or config dir is not ours."""
        sup = make_supervisor(app("a", "sleep 30 & exit 0"))
        sup.launch("a", Cause.cli)
        snap = sup.snapshot("a")
        assert snap.pid and snap.started_at
        wait_for(lambda: not alive(snap.pid), what="the launcher shell to exit")  # type: ignore[arg-type]
        record = Survivor("a", snap.pid, True, True, snap.started_at)
        (found,) = survivors.plan([record], tmp_path).found
        assert (found.name, found.pid) == ("a", snap.pid) and len(found.members) == 1
        plan = survivors.plan([attrs.evolve(record, name="b")], tmp_path)
        assert [f.name for f in plan.found] == ["a"]  # by its markers, though unrecorded
        assert [g.name for g in plan.gone] == ["b"]
        assert survivors.plan([record], tmp_path / "elsewhere").found == []

    def test_a_stale_record_never_lends_its_number_to_a_live_app(
        self, make_supervisor: MakeSup, tmp_path: Path
    ) -> None:
        """The newest record of the app names a group that is gone, while a marked process
        of the app runs (forked before its own record reached the disk): the app is adopted
        under its live group's number, and the stale record is let go (the fault campaign
        once saw the dead number shown as the app's pid)."""
        sup = make_supervisor(app("a", "sleep 30"))
        live = sup.launch("a", Cause.cli).app.pid
        gone = subprocess.Popen(["true"], start_new_session=True)
        gone.wait()
        stale = Survivor("a", gone.pid, True, True, time.time())
        plan = survivors.plan([stale], tmp_path)
        (found,) = plan.found
        assert found.pid == live and plan.gone == [stale]

    def test_unmarked_groups_and_reused_pids_are_not_ours(self, tmp_path: Path) -> None:
        stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
        try:
            born = psutil.Process(stranger.pid).create_time()
            group = Survivor("a", stranger.pid, True, True, born)
            single = attrs.evolve(group, group=False)

            def found(record: Survivor) -> bool:
                return bool(survivors.plan([record], tmp_path).found)

            assert not found(group)  # no markers
            assert found(single)  # an announced pid: its create time
            assert not found(attrs.evolve(single, create_time=born - 60))
            assert not found(attrs.evolve(single, pid=1))
        finally:
            stranger.kill()
            stranger.wait()
        assert not found(single)  # gone

    def test_resume_refuses_an_app_that_already_runs(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app("a", "sleep 30"))
        pid = sup.launch("a", Cause.cli).app.pid
        assert pid
        with pytest.raises(ConflictError, match="already ready"):
            sup.adopt("a", pid, True, True)


def test_stress_commands_and_real_exits(make_supervisor: MakeSup) -> None:
    """Threads issue random commands while real processes exit: every history chains."""
    names = ["a", "b", "c"]
    sup = make_supervisor(app("a", "sleep 0.05"), app("b", "sleep 30"),
                          app("c", "exit 1", restart=RestartPolicy.on_failure, restart_delay_ms=0))
    stop_at = time.monotonic() + 2.0
    unexpected: list[BaseException] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        commands = [
            lambda n: sup.launch(n, Cause.hotkey),
            lambda n: sup.stop(n, Cause.api),
            lambda n: sup.restart(n, Cause.cli),
            lambda n: sup.notify_ready(n, Cause.api),
            lambda n: sup.notify_launched(n, Cause.api),
            lambda n: sup.notify_stopped(n, Cause.api),
        ]
        while time.monotonic() < stop_at:
            try:
                rng.choice(commands)(rng.choice(names))
            except (InvalidTransitionError, LaunchError):
                pass
            except BaseException as exc:  # noqa: BLE001 - anything else is the failure
                unexpected.append(exc)

    run_concurrently(hammer, 12)
    assert not unexpected
    for name in names:
        sup.stop(name, Cause.cli)
        wait_state(sup, name, S.stopped, S.failed, S.ready, S.launched, timeout=10)
    events = [e for e in sup.bus.since(0) if e.type == "state"]
    assert len(events) > 100
    for name in names:
        chain = [e.data for e in events if e.data["app"] == name]
        for before, after in itertools.pairwise(chain):
            assert after["from"] == before["to"], (name, before, after)
        assert chain[-1]["to"] == sup.snapshot(name).state.value


def _live_members(pgid: int) -> list[psutil.Process]:
    """The group's processes that still run (an orphaned zombie is dead, however lazily the
    init process of this machine reaps it)."""
    return [psutil.Process(pid) for pid in group_members(pgid)]


def test_damaged_record_entries_are_dropped(tmp_path: Path) -> None:
    """A hand-edited running.json: entries of the wrong shape are ignored, not trusted (a
    group pid of 2**63 crashed every start-up: issue 11, defect 7); a file that is not JSON
    at all is moved aside, and the record starts empty."""
    path, journal = tmp_path / "running.json", tmp_path / "running.journal"
    good = {"name": "a", "pid": 4242, "group": True, "ready": False, "create_time": 1.5}
    path.write_text(json.dumps([good, {**good, "create_time": "soon"}, {**good, "pid": "1"},
                                {**good, "pid": 2**63}, {**good, "extra": 1}, ["a"], "junk"]))
    assert Journal(path, journal).read() == [Survivor(**good)]
    for damage in ("{not json", "[" * 100_000):
        path.write_text(damage)
        assert Journal(path, journal).read() == []
        (moved,) = tmp_path.glob("running.json.corrupt-*")
        assert moved.read_text() == damage
        moved.unlink()


def test_in_app_knows_the_group_its_descendants_and_nothing_else(tmp_path: Path) -> None:
    """The app's processes for run-or-raise: the group leader, a child a launcher shell forked
    (in the group), a child that left the group with setsid (still in the tree), and not an
    unrelated process."""
    forked_file, setsid_file = tmp_path / "forked", tmp_path / "setsid"
    script = (f"sleep 60 & echo $! > {forked_file}; setsid sleep 60 & echo $! > {setsid_file}; "
              "wait")
    app = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        wait_for(lambda: all(f.exists() and f.read_text().endswith("\n")
                             for f in (forked_file, setsid_file)), what="the children's pids")
        forked, setsid = int(forked_file.read_text()), int(setsid_file.read_text())
        wait_for(lambda: os.getpgid(setsid) != app.pid, what="setsid to leave the group")
        for pid in (app.pid, forked, setsid):
            assert in_app(app.pid, pid), pid
        assert not in_app(app.pid, stranger.pid)
        assert not in_app(app.pid, os.getpid())
    finally:
        if setsid_file.exists() and setsid_file.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(setsid_file.read_text()), signal.SIGKILL)
        os.killpg(app.pid, signal.SIGKILL)
        stranger.kill()
        for proc in (app, stranger):
            proc.wait()


OWNS = """
import os, signal, subprocess, time
from orchestratr.processes import proctable
from orchestratr.processes.tracker import ProcessTracker, in_app
tracker = ProcessTracker(subreaper=proctable.become_subreaper())
tracker.start()
proc = subprocess.Popen(["sh", "-c", "setsid sleep 30 & exit 0"], start_new_session=True)
tracker.watch_child(proc, lambda exit: None, app="a")
deadline = time.monotonic() + 10
escaped = []
try:
    while not escaped and time.monotonic() < deadline:
        escaped = [c for c in proctable.own_children() if c != proc.pid and os.getsid(c) == c]
        time.sleep(0.01)
    (pid,) = escaped
    while not tracker.owns(proc.pid, pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(tracker.owns(proc.pid, pid), in_app(proc.pid, pid), tracker.owns(proc.pid, os.getpid()))
finally:  # the escaped sleep is no child of the test's: ended here, whatever failed
    for pid in escaped:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    tracker.stop()
"""


FOREIGN = """
import os, subprocess, threading
from orchestratr.processes import proctable
from orchestratr.processes.tracker import ProcessTracker
tracker = ProcessTracker(subreaper=proctable.become_subreaper(), config_dir="/tmp/this-daemon")
tracker.start()
foreign = []
def spawn_foreign():  # a thread that ends: its child becomes the main thread's
    env = dict(os.environ, ORCHESTRATR_APP="a", ORCHESTRATR_CONFIG_DIR="/tmp/another-daemon")
    foreign.append(subprocess.Popen(["sleep", "30"], env=env, start_new_session=True))
try:
    spawner = threading.Thread(target=spawn_foreign)
    spawner.start()
    spawner.join()
    ended = threading.Event()
    env = dict(os.environ, ORCHESTRATR_APP="a", ORCHESTRATR_CONFIG_DIR="/tmp/this-daemon")
    app = subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)
    tracker.watch_child(app, lambda exit: ended.set(), app="a")
    os.killpg(app.pid, 9)
    print(ended.wait(5), foreign[0].poll() is None)
finally:
    for proc in foreign:
        proc.kill()
        proc.wait()
    tracker.stop()
"""


def test_a_child_carrying_another_config_dirs_marker_is_no_orphan_of_a_dying_app() -> None:
    """Another daemon's app of the same name, a child of the main thread, was taken for an
    orphan of the app that died, whose exit then waited for it (the suite runs many daemons
    in one process: an exit went unseen for 5 s). In a process of its own: a subreaper."""
    out = subprocess.run([sys.executable, "-c", FOREIGN], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.splitlines()[-1].split() == ["True", "True"]  # the exit seen, the other alive


def test_the_tracker_owns_a_member_that_left_the_tree() -> None:
    """Run-or-raise asks whose a window's process is: a child that called ``setsid`` and came
    back to the daemon (a subreaper) is below neither the leader nor its group, but the
    tracker holds it as the app's (an audit found its windows never raised). In a process of
    its own: a subreaper stays one."""
    out = subprocess.run([sys.executable, "-c", OWNS], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.splitlines()[-1].split() == ["True", "False", "False"]  # after its log lines
