"""The restart policy over crash histories: the pure rule, then the supervisor replaying
scripted histories with a fake clock, a fake schedule and a fake launcher (no processes, no
sleeps)."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from structlog.testing import capture_logs

from orchestratr.registry.model import AppSpec, Registry, RestartPolicy
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.launcher import OnExit, ProcessExit
from orchestratr.supervisor.restarts import (
    CRASH_BURST,
    CRASH_WINDOW_S,
    MAX_BACKOFF_S,
    STABLE_AFTER_S,
    CrashLoop,
    Record,
    Restart,
    after_exit,
    wants_restart,
)
from orchestratr.supervisor.states import AppState, Cause, Trigger
from tests.conftest import wait_for

NEVER, ON_FAILURE, ALWAYS = RestartPolicy.never, RestartPolicy.on_failure, RestartPolicy.always


@pytest.mark.parametrize(("policy", "clean", "wanted"), [
    (NEVER, False, False), (NEVER, True, False),
    (ON_FAILURE, False, True), (ON_FAILURE, True, False),
    (ALWAYS, False, True), (ALWAYS, True, True),
])
def test_which_exits_a_policy_restarts(policy: RestartPolicy, clean: bool, wanted: bool) -> None:
    assert wants_restart(policy, clean) is wanted


# (starts before the exit, consecutive crashes, uptime of the run that ended, now) -> decision
HISTORIES: list[tuple[str, tuple[float, ...], int, float, float, object]] = [
    ("first crash: the base delay", (0.0,), 0, 0.5, 0.5, Restart(0.1, 1, Record((0.0,), 1))),
    ("second crash doubles it", (0.0, 1.0), 1, 0.5, 1.5, Restart(0.2, 2, Record((0.0, 1.0), 2))),
    ("the 4th doubles again", (0.0, 1.0, 2.0), 3, 0.5, 2.5,
     Restart(0.8, 4, Record((0.0, 1.0, 2.0), 4))),
    ("backoff is capped", (0.0,), 20, 0.5, 0.5, Restart(MAX_BACKOFF_S, 21, Record((0.0,), 21))),
    ("a stable run resets the count", (0.0,), 4, STABLE_AFTER_S, 100.0,
     Restart(0.1, 1, Record((0.0,), 1))),
    ("5 starts in the window is a loop", (0.0, 1.0, 2.0, 3.0, 4.0), 4, 0.5, 4.5,
     CrashLoop("crash loop: started 5 times within 10 s; not restarting until launched "
               "again (last: boom)")),
    ("old starts leave the window", (0.0, 1.0, 2.0, 3.0, 4.0), 4, 0.5, 10.5,
     Restart(1.6, 5, Record((0.0, 1.0, 2.0, 3.0, 4.0), 5))),
]


@pytest.mark.parametrize(("starts", "crashes", "uptime", "now", "decision"),
                         [h[1:] for h in HISTORIES], ids=[h[0] for h in HISTORIES])
def test_after_a_crash(starts: tuple[float, ...], crashes: int, uptime: float, now: float,
                       decision: object) -> None:
    spec = AppSpec("a", "x", restart=ON_FAILURE, restart_delay_ms=100)
    record = Record(starts, crashes)
    assert after_exit(spec, record, clean=False, uptime_s=uptime, now=now,
                      last_error="boom") == decision


def test_a_policy_that_wants_no_restart_decides_nothing() -> None:
    spec = AppSpec("a", "x", restart=ON_FAILURE)
    assert after_exit(spec, Record(), clean=True, uptime_s=1, now=1, last_error=None) is None


def test_only_the_last_starts_are_kept() -> None:
    record = Record()
    for at in range(100):
        record = record.started(float(at))
    assert len(record.starts) < 100 and record.starts[-1] == 99.0
    assert len(record.starts) > CRASH_BURST


# ---------------------------------------------------------------- the supervisor replaying


class FakeLauncher:
    """Spawns nothing: pids count up; a test ends one with ``exit``."""

    def __init__(self) -> None:
        self.next_pid = 1000
        self.watches: dict[int, OnExit] = {}
        self.terminated: list[int] = []

    def spawn(self, spec: AppSpec) -> int:
        self.next_pid += 1
        return self.next_pid

    def track(self, pid: int, on_exit: OnExit) -> None:
        self.watches[pid] = on_exit

    def exit(self, pid: int, code: int) -> None:
        self.watches.pop(pid)(ProcessExit(code, f"exited with status {code}"))

    def reap(self, pid: int) -> None: ...

    def adopt(self, pid: int, on_exit: OnExit, group: bool = False) -> float:
        self.watches[pid] = on_exit
        return 0.0

    def same_group(self, pid: int, leader: int) -> bool:
        return pid == leader

    def terminate(self, pid: int, group: bool, grace_s: float) -> None:
        self.terminated.append(pid)

    def probe_ready(self, spec: AppSpec, on_ready: Callable[[], None],
                    on_timeout: Callable[[], None]) -> Callable[[], None]:
        return lambda: None


@attrs.define
class Timers:
    """The supervisor's ``schedule``: nothing runs until the test says the time has come."""

    due: list[tuple[float, Callable[[], None]]] = attrs.field(factory=list)
    cancelled: int = 0

    def schedule(self, delay_s: float, fn: Callable[[], None]) -> Callable[[], None]:
        entry = (delay_s, fn)
        self.due.append(entry)

        def cancel() -> None:
            if entry in self.due:
                self.due.remove(entry)
                self.cancelled += 1
        return cancel

    def run_next(self) -> float:
        delay_s, fn = self.due.pop(0)
        fn()
        return delay_s


class Replay:
    """A supervisor over the fakes, with a clock the test moves."""

    def __init__(self, **fields: object) -> None:
        self.now = 1000.0
        self.launcher = FakeLauncher()
        self.timers = Timers()
        self.sup = Supervisor(self.launcher, monotonic=lambda: self.now,  # type: ignore[arg-type]
                              wall=lambda: self.now, schedule=self.timers.schedule)
        spec = AppSpec("a", "x", restart_delay_ms=100, **fields)  # type: ignore[arg-type]
        self.sup.apply_registry(Registry(apps=(spec,)))

    @property
    def pid(self) -> int:
        pid = self.sup.snapshot("a").pid
        assert pid is not None
        return pid

    def crash(self, after_s: float = 0.5, code: int = 3) -> None:
        self.now += after_s
        self.launcher.exit(self.pid, code)

    def restart_when_due(self) -> float:
        """Let the scheduled restart happen; returns the delay it waited for."""
        delay_s = self.timers.run_next()
        self.now += delay_s
        return delay_s

    @property
    def state(self) -> AppState:
        return self.sup.snapshot("a").state


def test_backoff_doubles_then_a_crash_loop_fails_the_app() -> None:
    replay = Replay(restart=ON_FAILURE)
    replay.sup.launch("a", Cause.cli)
    delays = []
    for _ in range(CRASH_BURST - 1):
        replay.crash()
        delays.append(replay.restart_when_due())
    replay.crash()
    assert delays == [0.1, 0.2, 0.4, 0.8]
    snap = replay.sup.snapshot("a")
    assert snap.state is AppState.failed and not replay.timers.due
    assert (snap.error or "").startswith(f"crash loop: started 5 times within "
                                         f"{CRASH_WINDOW_S:g} s")
    assert snap.history[-1].trigger is Trigger.crash_loop
    causes = [h.cause for h in snap.history if h.trigger is Trigger.launch]
    assert causes == [Cause.cli] + [Cause.restart] * 4


def test_a_stable_run_restarts_after_the_base_delay_again() -> None:
    replay = Replay(restart=ON_FAILURE)
    replay.sup.launch("a", Cause.cli)
    delays = []
    for _ in range(3):
        replay.crash(after_s=STABLE_AFTER_S + 1)
        delays.append(replay.restart_when_due())
    assert delays == [0.1, 0.1, 0.1]


def test_on_failure_leaves_a_clean_exit_alone_and_always_restarts_it() -> None:
    on_failure = Replay(restart=ON_FAILURE)
    on_failure.sup.launch("a", Cause.cli)
    on_failure.crash(code=0)
    assert on_failure.state is AppState.stopped and not on_failure.timers.due
    always = Replay(restart=ALWAYS)
    always.sup.launch("a", Cause.cli)
    always.crash(code=0)
    assert always.restart_when_due() == 0.1 and always.state is AppState.ready


def test_a_stop_during_the_backoff_cancels_the_restart() -> None:
    replay = Replay(restart=ALWAYS)
    replay.sup.launch("a", Cause.cli)
    replay.crash(code=1)
    assert replay.state is AppState.failed and len(replay.timers.due) == 1
    replay.sup.stop("a", Cause.cli)
    assert replay.state is AppState.stopped
    assert not replay.timers.due and replay.timers.cancelled == 1


def test_a_timer_that_fires_after_its_cancel_starts_nothing() -> None:
    """A timer thread may already be running its function when the cancel comes."""
    replay = Replay(restart=ALWAYS)
    replay.sup.launch("a", Cause.cli)
    replay.crash(code=1)
    _, late = replay.timers.due[0]
    replay.sup.stop("a", Cause.cli)
    late()
    assert replay.state is AppState.stopped


def test_a_manual_launch_forgets_the_crash_loop() -> None:
    replay = Replay(restart=ON_FAILURE)
    for _ in range(2):
        replay.sup.launch("a", Cause.cli)
        for _ in range(CRASH_BURST - 1):
            replay.crash()
            replay.restart_when_due()
        replay.crash()
        assert replay.sup.snapshot("a").history[-1].trigger is Trigger.crash_loop
    launches = [h for h in replay.sup.snapshot("a").history if h.trigger is Trigger.launch]
    assert len(launches) == 2 * CRASH_BURST


def test_failures_log_as_warnings_and_a_crash_loop_as_an_error() -> None:
    """So that ``log_level: warning`` still shows every failure."""
    replay = Replay(restart=ON_FAILURE)
    with capture_logs() as logs:
        replay.sup.launch("a", Cause.cli)
        for _ in range(CRASH_BURST - 1):
            replay.crash()
            replay.restart_when_due()
        replay.crash()
    levels = {(e["trigger"], e["dst"]): e["log_level"] for e in logs
              if e["event"] == "app_transition"}
    assert levels == {("launch", "launching"): "info", ("spawned", "launched"): "info",
                      ("notify_ready", "ready"): "info", ("exited", "failed"): "warning",
                      ("crash_loop", "failed"): "error"}
    scheduled = [(e["restart_in_ms"], e["restart_attempt"]) for e in logs
                 if e["event"] == "app_transition" and "restart_in_ms" in e]
    assert scheduled == [(100.0, 1), (200.0, 2), (400.0, 3), (800.0, 4)]


@pytest.mark.parametrize("delay_s", [0.0, 0.01])
def test_a_scheduled_call_that_raises_is_logged_and_the_next_still_runs(delay_s: float) -> None:
    """A restart runs on a kept thread (due at once) or a timer thread: a failure in it is
    logged with its traceback, not lost on stderr, and the kept threads go on serving."""
    import threading

    from orchestratr.supervisor.restarts import thread_timer

    ran = threading.Event()

    def boom() -> None:
        raise RuntimeError("no spawn today")

    def failed() -> list[dict[str, object]]:
        return [e for e in logs if e["event"] == "scheduled_call_failed"]

    with capture_logs() as logs:
        thread_timer(delay_s, boom)
        thread_timer(delay_s, ran.set)
        assert ran.wait(5)
        wait_for(failed, timeout=5, what="the failure logged")
    assert failed()[0]["log_level"] == "error" and failed()[0].get("exc_info")
