"""Issue 11: the supervisor's view and the machine's reality agree under every fault.

Each test names the defect it proves fixed; the fault campaign (kill -9 at random instants)
is in ``test_fault_campaign.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestratr import threads
from orchestratr.api.dispatch import Dispatcher
from orchestratr.client import Client, OrchestratrClientError
from orchestratr.processes import proctable
from orchestratr.processes.tracker import ProcessTracker
from orchestratr.supervisor.leases import LeaseClock
from orchestratr.supervisor.states import AppState
from tests.conftest import (
    PYTHON,
    alive,
    ignores_sigterm,
    kill_apps_of,
    wait_for,
    write_config,
)

S = AppState
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounts a tmpfs (root only)")


def app_processes(config_dir: Path, name: str) -> set[int]:
    """Every live process carrying the app's markers for this config dir."""
    return {p.pid for p in proctable.scan() if not p.zombie and p.app == name
            and proctable.same_dir(p.config_dir, str(config_dir))}


def crash_once(monkeypatch: pytest.MonkeyPatch, owner: type, method: str) -> list[int]:
    """Make ``owner.method`` raise once, then work; the returned list holds the crash."""
    crashes: list[int] = []
    real = getattr(owner, method)

    def once(self: object, *args: Any) -> Any:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("injected fault")
        return real(self, *args)

    monkeypatch.setattr(owner, method, once)
    return crashes


def config(*apps: str, settings: str = "") -> str:
    return settings + "apps:\n" + "".join(f"  - {entry}\n" for entry in apps)


# ---------------------------------------------------------------- every descendant

class TestDescendants:
    """Defect 3: a launcher running ``setsid app &`` left processes that survived ``stop``,
    untracked, while the app showed ``stopped`` and a second chord spawned a second one."""

    def test_a_setsid_escape_is_still_the_app_and_stop_ends_it(
        self, config_dir: Path, start_daemon
    ) -> None:
        write_config(config_dir, config("{name: a, command: 'setsid sleep 300 & exit 0'}"))
        daemon = start_daemon()
        client = Client(config_dir=config_dir)
        first = client.launch("a")
        wait_for(lambda: not alive(first["pid"]), what="the launcher shell to exit")
        escaped = wait_for(lambda: {p for p in app_processes(config_dir, "a")
                                    if os.getsid(p) == p}, what="the escaped sleep")
        (pid,) = escaped  # type: ignore[misc]  # it left the app's session
        daemon.wait_event("orphan_adopted", pid=pid)
        assert client.app("a")["state"] == "ready"  # its launcher is gone, it is not
        # and it is listed as the app's (it is below neither the group nor the leader)
        assert [p["pid"] for p in client.app("a")["processes"]] == [pid]
        again = client.launch("a")
        assert again["pid"] == first["pid"] and not again.get("spawned", False)
        assert app_processes(config_dir, "a") == {pid}  # no second instance
        client.stop("a")
        wait_for(lambda: client.app("a")["state"] == "stopped", what="stopped")
        assert not alive(pid)

    def test_a_setsid_grandchild_under_a_live_launcher_is_stopped_too(
        self, config_dir: Path, start_daemon
    ) -> None:
        write_config(config_dir, config("{name: a, command: 'setsid sleep 300 & sleep 300'}"))
        start_daemon()
        client = Client(config_dir=config_dir)
        client.launch("a")
        procs = wait_for(lambda: len(app_processes(config_dir, "a")) == 3 and
                         app_processes(config_dir, "a"), what="shell and two sleeps")
        client.stop("a")
        wait_for(lambda: client.app("a")["state"] == "stopped", what="stopped")
        assert not [p for p in procs if alive(p)]  # type: ignore[attr-defined]


# ---------------------------------------------------------------- leases over the API

def test_a_heartbeat_without_a_lease_is_409_saying_how_to_declare_one(
    config_dir: Path, start_daemon
) -> None:
    """Defect 2: ``orchestratr heartbeat term`` on an app without a lease started a 90 s
    lease whose expiry later failed the app and forgot its process."""
    write_config(config_dir, config("{name: term, command: 'sleep 300'}"))
    start_daemon()
    client = Client(config_dir=config_dir)
    client.launch("term")
    with pytest.raises(OrchestratrClientError) as refused:
        client.heartbeat("term")
    assert refused.value.status == 409 and "lease_secs" in str(refused.value)
    assert client.app("term")["lease"] is None


# ---------------------------------------------------------------- threads

class TestThreads:
    @pytest.fixture(autouse=True)
    def _forget_crashes(self) -> Iterator[None]:
        """The crashes counted here are process-wide: a later in-process /health in this
        worker would answer degraded for minutes."""
        yield
        threads.reset()

    """Defect 4: the exit tracker died on an OverflowError (stop_timeout_ms over 2**31-1)
    with a traceback on stderr only, and from then on no exit was noticed."""

    def test_a_huge_stop_timeout_is_a_config_error(self, config_dir: Path, start_daemon) -> None:
        write_config(config_dir, config("{name: a, command: 'sleep 300', "
                                        "stop_timeout_ms: 4294967296}"))
        daemon = start_daemon()
        error = daemon.wait_event("config_error")
        assert "stop_timeout_ms" in error["problem"] and "at most 3600000" in error["problem"]

    def test_the_tracker_outlives_an_enormous_grace(self) -> None:
        tracker = ProcessTracker()
        tracker.start()
        proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 30"], start_new_session=True)
        exited = threading.Event()
        try:
            tracker.watch_child(proc, lambda _exit: exited.set())
            wait_for(lambda: ignores_sigterm(proc.pid), what="the trap")
            tracker.terminate(proc.pid, True, 2**40)  # what epoll.poll could not take
            os.killpg(proc.pid, signal.SIGKILL)
            assert exited.wait(5), "the exit was not noticed"
        finally:
            tracker.stop()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def test_a_crashed_thread_is_logged_restarted_and_reported(
        self, config_dir: Path, in_process_daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception injected into the exit tracker's loop: logged as an error with its
        traceback, the thread restarted, GET /health degraded, and exits still seen."""
        write_config(config_dir, config("{name: a, command: 'sleep 300'}"))
        crashes = crash_once(monkeypatch, ProcessTracker, "_ready")
        with in_process_daemon() as running:
            client = Client(config_dir=config_dir)
            wait_for(lambda: crashes, what="the injected crash")
            pid = client.launch("a")["pid"]
            health = wait_for(lambda: (h := client.health())["status"] == "degraded" and h)
            (part,) = health["degraded"]  # type: ignore[index]
            assert part["part"] == "process-tracker" and "injected fault" in part["error"]
            os.killpg(pid, signal.SIGKILL)
            wait_for(lambda: running.supervisor.snapshot("a").state is S.failed,
                     what="the exit, seen by the restarted tracker")
        log = (config_dir / "logs" / "orchestratr.log").read_text()
        crash = next(json.loads(line) for line in log.splitlines() if "thread_crashed" in line)
        assert crash["level"] == "error" and "RuntimeError: injected fault" in crash["exception"]
        assert '"thread_restarted"' in log

    def test_the_api_thread_is_supervised_too(
        self, config_dir: Path, in_process_daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The API's dispatcher (it accepts, and watches streams for hang-ups) died silently
        with a traceback on stderr, and every request failed from then on (an audit)."""
        write_config(config_dir, config("{name: a, command: 'sleep 300'}"))
        crashes = crash_once(monkeypatch, Dispatcher, "_expire")
        with in_process_daemon():
            client = Client(config_dir=config_dir)
            health = wait_for(lambda: (h := client.health())["status"] == "degraded" and h)
            assert crashes  # the first request's turn of the loop raised
            (part,) = health["degraded"]  # type: ignore[index]
            assert part["part"] == "api" and "injected fault" in part["error"]
            assert client.launch("a")["state"] == "ready"
        assert '"thread_restarted"' in (config_dir / "logs" / "orchestratr.log").read_text()

    def test_the_lease_clock_is_supervised_too(
        self, config_dir: Path, in_process_daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The lease clock died silently, and no lease ever expired again (an audit)."""
        write_config(config_dir, config("{name: a, command: 'sleep 300', lease_secs: 1}"))
        crash_once(monkeypatch, LeaseClock, "_loop")
        with in_process_daemon() as running:
            client = Client(config_dir=config_dir)
            client.launch("a")
            wait_for(lambda: running.supervisor.snapshot("a").state is S.unresponsive,
                     timeout=10, what="the lease to run out, on the restarted clock")
            (part,) = client.health()["degraded"]
            assert part["part"] == "lease-clock" and "injected fault" in part["error"]

    def test_a_thread_that_keeps_crashing_stops_the_daemon_non_zero(
        self, config_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
    ) -> None:
        from orchestratr.daemon import Daemon, DaemonOptions

        def always(self: ProcessTracker, timeout: float | None) -> list[int]:
            raise RuntimeError("broken for good")

        monkeypatch.setattr(ProcessTracker, "_ready", always)
        monkeypatch.setattr(threads, "FIRST_BACKOFF_S", 0.01)
        write_config(config_dir, config("{name: a, command: 'sleep 300', autostart: true}"))
        daemon = Daemon(DaemonOptions(config_dir=str(config_dir), port=0))
        status: list[int] = []
        runner = threading.Thread(target=lambda: status.append(daemon.run()), daemon=True)
        runner.start()
        runner.join(timeout=30)
        assert status == [1]
        err = capfd.readouterr().err
        assert "internal thread 'process-tracker' failed" in err and "broken for good" in err


# ---------------------------------------------------------------- the lock and signals

class TestOneDaemon:
    def test_deleting_the_pid_file_admits_no_second_daemon(
        self, config_dir: Path, start_daemon
    ) -> None:
        """Defect 6: the lock was found by path; a deleted orchestratr.pid let a second
        daemon start on the same config dir."""
        first = start_daemon()
        (config_dir / "orchestratr.pid").unlink()
        second = start_daemon(wait=False)
        assert second.proc.wait(timeout=10) == 1
        assert "already running" in second.proc.stderr.read()  # type: ignore[union-attr]
        assert first.proc.poll() is None

    def test_sighup_reloads_and_keeps_running(self, config_dir: Path, start_daemon) -> None:
        """Defect 6: SIGHUP killed the daemon and left its port and pid files behind."""
        daemon = start_daemon()
        write_config(config_dir, config("{name: late, command: 'sleep 1'}"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_event("signal_received", signal="SIGHUP")
        wait_for(lambda: [a["name"] for a in Client(config_dir=config_dir).apps()] == ["late"])
        assert daemon.proc.poll() is None and (config_dir / "port").exists()

    @pytest.mark.parametrize("gone_s", [0.0, 0.5])
    def test_a_recreated_config_dir_is_watched_again(
        self, config_dir: Path, start_daemon, gone_s: float
    ) -> None:
        """Defect 6: a config dir deleted and re-created was never watched again. And one
        gone longer than the watcher's debounce was watched but not locked again: a second
        daemon got in (an audit)."""
        daemon = start_daemon()
        backup = config_dir.with_name("saved")
        config_dir.rename(backup)
        daemon.log_file = backup / "logs" / "orchestratr.log"  # its log went with the dir
        time.sleep(gone_s)  # widens the window on purpose: the watcher sees the dir gone
        config_dir.mkdir()
        (config_dir / "apps.d").mkdir()
        write_config(config_dir, config("{name: back, command: 'sleep 1'}"))
        daemon.wait_event("config_dir_recreated")
        wait_for(lambda: (config_dir / "port").exists(), what="the port file, written again")
        wait_for(lambda: [a["name"] for a in Client(config_dir=config_dir).apps()] == ["back"])
        assert (config_dir / "orchestratr.pid").read_text() == str(daemon.proc.pid)
        intruder = start_daemon(wait=False)  # the new directory is locked too
        assert intruder.proc.wait(timeout=10) == 1


# ---------------------------------------------------------------- logging and the disk

@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]),
                    "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@needs_root
def test_logging_survives_a_full_disk(config_dir: Path, start_daemon) -> None:
    """Defect 5: ENOSPC killed the log writer; records piled up in memory and logging never
    resumed. Now records are dropped (counted), memory stays bounded, and once space is
    freed logging resumes with one warning saying how many were lost."""
    with tmpfs(config_dir / "logs") as logs:
        daemon = start_daemon()
        client = Client(config_dir=config_dir)
        filler = logs / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            while True:
                handle.write(b"x" * 65536)  # until the disk is full
        rss = psutil.Process(daemon.proc.pid).memory_info().rss
        for _ in range(3000):
            client.health()  # an http_request line each, none of which fits
        assert psutil.Process(daemon.proc.pid).memory_info().rss < rss + 8 * 2**20
        filler.unlink()
        client.health()
        dropped = daemon.wait_event("log_records_dropped")
        assert dropped["dropped"] >= 2900 and dropped["level"] == "warning"
        client.health()
        daemon.wait_event("http_request")
        assert sum(e["event"] == "log_records_dropped" for e in daemon.events()) == 1
        daemon.stop()


def test_an_unusable_log_file_exits_2_with_one_line(config_dir: Path, tmp_path: Path) -> None:
    """Defect 7: an unusable --log-file exited with a raw traceback."""
    (tmp_path / "file").write_text("")
    for bad in (tmp_path, tmp_path / "file" / "daemon.log"):  # a directory; under a file
        proc = subprocess.run([PYTHON, "-m", "orchestratr", "daemon", "--config-dir",
                               str(config_dir), "--port", "0", "--log-file", str(bad)],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "cannot write the log file" in proc.stderr
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- bad files

BILLION_LAUGHS = """\
name: lol
command: sleep 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
env: [*g,*g,*g,*g,*g,*g,*g,*g,*g]
"""


class TestBadFiles:
    """Defect 7: damaged files crashed start-up or blocked every reload."""

    def test_bad_drop_ins_are_skipped_and_reloads_still_apply(
        self, config_dir: Path, start_daemon
    ) -> None:
        apps = config_dir / "apps.d"
        (apps / "deep.yml").write_text("[" * 1000 + "]" * 1000)
        (apps / "loop.yml").symlink_to(apps / "loop.yml")
        (apps / "laughs.yml").write_text(BILLION_LAUGHS)
        (apps / "big.yml").write_text("name: big\ncommand: x\n#" + "x" * 2**21)
        os.mkfifo(apps / "fifo.yml")
        (apps / "good.yml").write_text("name: good\ncommand: sleep 1\n")
        write_config(config_dir, "[" * 1000 + "]" * 1000)  # config.yml nested 1000 deep
        daemon = start_daemon()
        client = Client(config_dir=config_dir)
        assert [a["name"] for a in client.apps()] == ["good"]
        problems = " ".join(e["problem"] for e in daemon.events()
                            if e["event"] in ("config_error", "config_warning"))
        for name, why in (("deep", "nested more than"), ("loop", "symbolic link loop"),
                          ("laughs", "aliases"), ("big", "larger than"),
                          ("fifo", "not a regular file (a FIFO)")):
            assert f"apps.d/{name}.yml: " in problems and why in problems, name
        write_config(config_dir, config("{name: fixed, command: 'sleep 1'}"))
        started = time.monotonic()
        reloaded = client.reload()
        assert time.monotonic() - started < 2
        assert {a["name"] for a in client.apps()} == {"good", "fixed"}, reloaded

    def test_apps_d_as_a_file_and_config_yml_as_a_fifo(
        self, config_dir: Path, start_daemon
    ) -> None:
        (config_dir / "apps.d").rmdir()
        (config_dir / "apps.d").write_text("not a directory")
        os.mkfifo(config_dir / "config.yml")
        daemon = start_daemon()  # a FIFO hung start-up (and POST /reload)
        client = Client(config_dir=config_dir)
        assert any("apps.d: is not a directory" in e.get("problem", "")
                   for e in daemon.events())
        with pytest.raises(OrchestratrClientError) as refused:
            client.reload()
        assert refused.value.status == 400 and "not a regular file" in str(refused.value)
        (config_dir / "config.yml").unlink()
        write_config(config_dir, config("{name: a, command: 'sleep 1'}"))
        client.reload()
        assert [a["name"] for a in client.apps()] == ["a"]

    def test_damaged_state_files_are_moved_aside(self, config_dir: Path, start_daemon) -> None:
        (config_dir / "registered.json").write_text("[" * 100_000)
        record = [{"name": "a", "pid": 2**63, "group": True, "ready": True,
                   "create_time": time.time()}]
        (config_dir / "running.json").write_text(json.dumps(record))
        (config_dir / "running.journal").write_text("[" * 100_000 + "\n{torn")
        daemon = start_daemon()
        assert [p.name.split(".corrupt-")[0] for p in config_dir.glob("*.corrupt-*")] == \
            ["registered.json"]
        daemon.stop()
        start_daemon().stop()  # the entry was not written back: every start works

    def test_a_shadowed_registration_is_never_stored_twice(
        self, config_dir: Path, start_daemon
    ) -> None:
        start_daemon()
        client = Client(config_dir=config_dir)
        client.register({"name": "reg", "command": "sleep 1", "chord": "r"})
        (config_dir / "apps.d" / "other.yml").write_text("name: other\ncommand: x\nchord: r\n")
        client.reload()
        assert "reg" not in [a["name"] for a in client.apps()]  # shadowed by the chord
        with pytest.raises(OrchestratrClientError) as refused:
            client.register({"name": "reg", "command": "sleep 2"})
        assert refused.value.status == 409
        assert len(json.loads((config_dir / "registered.json").read_text())) == 1
        client.unregister("reg")
        assert json.loads((config_dir / "registered.json").read_text()) == []

    @needs_root
    def test_a_read_only_config_dir_registers_nothing(
        self, tmp_path: Path, start_daemon, config_dir: Path
    ) -> None:
        """POST /apps answered 500 while the app appeared after the next reload, unsaved."""
        start_daemon()
        client = Client(config_dir=config_dir)
        subprocess.run(["mount", "--bind", str(config_dir), str(config_dir)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(config_dir)], check=True)
            with pytest.raises(OrchestratrClientError) as refused:
                client.register({"name": "reg", "command": "sleep 1"})
            assert refused.value.status == 507 and "Read-only file system" in str(refused.value)
            client.reload()
            assert "reg" not in [a["name"] for a in client.apps()]
        finally:
            subprocess.run(["umount", "-l", str(config_dir)], check=False)


def test_the_daemon_is_a_subreaper() -> None:
    """What makes every descendant come back (checked in a throwaway child process)."""
    code = ("from orchestratr.processes import proctable; import sys; "
            "sys.exit(0 if proctable.become_subreaper() else 1)")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


@pytest.fixture(autouse=True)
def _no_strays(config_dir: Path) -> Iterator[None]:
    yield
    kill_apps_of(config_dir)


def test_a_signal_handler_that_logs_cannot_deadlock_the_log_queue() -> None:
    """A signal handler runs on the thread it interrupts; when that thread was inside the log
    queue's put, the handler's own log line (``signal_received``) must not wait for it (a
    SIGTERM during a busy start-up hung the daemon for good)."""
    from orchestratr import logs

    records = logs._Records()
    done = threading.Event()

    def interrupted_inside_put() -> None:
        with records._ready:  # where the interrupted thread was
            records.put("the handler's line")
        done.set()

    threading.Thread(target=interrupted_inside_put, daemon=True).start()
    assert done.wait(5), "the log queue deadlocked"


def test_a_launch_waits_for_the_adoption_then_goes_on(make_supervisor) -> None:
    """Defect 1: the restarted daemon answered launches before it had adopted the survivors,
    and a launch in that window duplicated the app. Launches now wait (bounded) until the
    adoption is done."""
    from orchestratr.registry.model import AppSpec
    from orchestratr.supervisor.states import Cause

    sup = make_supervisor(AppSpec("a", "sleep 30"))
    sup.hold_launches()
    results: list[object] = []
    waiting = threading.Thread(target=lambda: results.append(sup.launch("a", Cause.hotkey)))
    waiting.start()
    time.sleep(0.2)  # a window in which nothing may happen: the launch must wait
    assert not results and sup.snapshot("a").state is S.stopped
    sup.admit_launches()
    waiting.join(timeout=5)
    assert results and results[0].spawned  # type: ignore[attr-defined]


def test_a_launch_that_waits_too_long_is_refused(
    make_supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestratr.errors import UnavailableError
    from orchestratr.registry.model import AppSpec
    from orchestratr.supervisor import core
    from orchestratr.supervisor.states import Cause

    monkeypatch.setattr(core, "ADMIT_WAIT_S", 0.1)
    sup = make_supervisor(AppSpec("a", "sleep 30"))
    sup.hold_launches()
    with pytest.raises(UnavailableError, match="try again shortly"):
        sup.launch("a", Cause.api)
    assert sup.snapshot("a").state is S.stopped


def test_sigterm_delivered_to_any_thread_stops_the_daemon(config_dir: Path, start_daemon) -> None:
    """The kernel hands a process's signal to any thread; one that landed on a worker thread
    left the main thread asleep in a lock wait, and the daemon never stopped (seen as a hung
    shutdown). Here SIGTERM is sent to a thread that is not the main one, on purpose."""
    import ctypes

    daemon = start_daemon()
    pid = daemon.proc.pid
    worker = next(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    sys_tgkill = 234  # x86-64
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(sys_tgkill, pid, worker, signal.SIGTERM) == 0
    assert daemon.proc.wait(timeout=10) == 0
    daemon.wait_event("daemon_stopped")
