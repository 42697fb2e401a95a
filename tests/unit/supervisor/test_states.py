"""Every (state, trigger) pair against THE table: where it goes, or that it is refused."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from orchestratr.registry.model import AppSpec
from orchestratr.supervisor.app import App
from orchestratr.supervisor.machine import Transition, build_machine
from orchestratr.supervisor.states import AppState, Cause, Trigger, allowed
from tests.conftest import run_concurrently

S, T = AppState, Trigger
REFUSED, INTERNAL = "refused", "internal"

# (trigger, variant) -> {state: outcome}. Variants exercise the rows' conditions:
# "pid"/"nopid": whether a process is known; "clean"/"crash": the exit code; "detached";
# "restart": the app has a restart policy (grace_expired then stops it to launch it again).
U = S.unresponsive
EXPECTED: dict[tuple[Trigger, str], dict[AppState, object]] = {
    # a failed app whose process lives on (its lease ran out) is not launched again
    (T.launch, "pid"): {S.stopped: S.launching, S.launching: INTERNAL, S.launched: INTERNAL,
                        S.ready: INTERNAL, U: INTERNAL, S.stopping: REFUSED, S.failed: INTERNAL},
    (T.launch, "nopid"): {S.stopped: S.launching, S.launching: INTERNAL, S.launched: INTERNAL,
                          S.ready: INTERNAL, U: INTERNAL, S.stopping: REFUSED,
                          S.failed: S.launching},
    (T.spawned, ""): {S.launching: S.launched},
    (T.spawned, "detached"): {S.launching: S.stopped},
    (T.spawn_failed, ""): {S.launching: S.failed},
    (T.notify_launched, ""): {S.stopped: S.launched, S.launching: S.launched, S.launched: INTERNAL,
                              S.ready: INTERNAL, U: INTERNAL, S.stopping: REFUSED,
                              S.failed: S.launched},
    (T.notify_ready, ""): {S.stopped: S.ready, S.launching: S.ready, S.launched: S.ready,
                           S.ready: INTERNAL, U: S.ready, S.stopping: REFUSED, S.failed: S.ready},
    (T.notify_stopped, "pid"): {S.stopped: INTERNAL, S.launching: S.stopping,
                                S.launched: S.stopping, S.ready: S.stopping, U: S.stopping,
                                S.stopping: INTERNAL, S.failed: S.stopping},
    (T.notify_stopped, "nopid"): {S.stopped: INTERNAL, S.launching: S.stopped,
                                  S.launched: S.stopped, S.ready: S.stopped, U: S.stopped,
                                  S.stopping: INTERNAL, S.failed: S.stopped},
    (T.exited, "clean"): {S.launching: S.stopped, S.launched: S.stopped, S.ready: S.stopped,
                          U: S.stopped, S.stopping: S.stopped, S.failed: S.failed},
    (T.exited, "crash"): {S.launching: S.failed, S.launched: S.failed, S.ready: S.failed,
                          U: S.failed, S.stopping: S.stopped, S.failed: S.failed},
    (T.stop, "pid"): {S.stopped: INTERNAL, S.launching: S.stopping, S.launched: S.stopping,
                      S.ready: S.stopping, U: S.stopping, S.stopping: INTERNAL,
                      S.failed: S.stopping},
    (T.stop, "nopid"): {S.stopped: INTERNAL, S.launching: S.stopping, S.launched: S.stopped,
                        S.ready: S.stopped, U: S.stopped, S.stopping: INTERNAL,
                        S.failed: S.stopped},
    (T.crash_loop, ""): {S.stopped: S.failed, S.failed: S.failed},
    (T.heartbeat, ""): {S.stopped: S.ready, S.launching: S.ready, S.launched: INTERNAL,
                        S.ready: INTERNAL, U: S.ready, S.stopping: REFUSED, S.failed: S.ready},
    (T.lease_expired, ""): {S.launched: U, S.ready: U},
    (T.drain, ""): {S.launched: U, S.ready: U, U: INTERNAL},
    (T.revive, ""): {U: S.ready, S.ready: INTERNAL},
    (T.grace_expired, "pid"): {U: S.failed},
    (T.grace_expired, "nopid"): {U: S.failed},
    (T.grace_expired, "restart"): {U: S.stopping},
    (T.grace_expired, "restart-nopid"): {U: S.failed},
}
KWARGS = {"": {}, "pid": {}, "nopid": {}, "detached": {"detached": True}, "clean": {"code": 0},
          "crash": {"code": -9, "error": "killed"}, "restart": {"restart": True},
          "restart-nopid": {"restart": True}}

CASES = [
    (trigger, variant, state, outcomes.get(state, REFUSED))
    for (trigger, variant), outcomes in EXPECTED.items()
    for state in AppState
]


def _record(transition: Transition) -> None:
    if transition.dst is not None:
        transition.model.apply(transition.src, transition.trigger, transition.kwargs)


MACHINE = build_machine(_record)


def make_app(state: AppState = S.stopped, pid: int | None = None) -> App:
    machine = MACHINE
    app = App(AppSpec("a", "true"), clock=time.time)
    machine.add_model(app)
    machine.set_state(state, model=app)
    app.pid = pid
    return app


def fire(app: App, trigger: Trigger, **kwargs: object) -> bool:
    """True if accepted."""
    with app.lock:
        app.moved()
        return MACHINE.fire(app, trigger, cause=Cause.api, **kwargs)


def test_every_trigger_and_state_is_covered() -> None:
    """The expectation table covers every trigger the machine knows."""
    assert {t for t, _ in EXPECTED} == set(Trigger)


@pytest.mark.parametrize(("trigger", "variant", "state", "outcome"), CASES,
                         ids=[f"{t.value}-{v or 'any'}-{s.value}" for t, v, s, _ in CASES])
def test_transition(trigger: Trigger, variant: str, state: AppState, outcome: object) -> None:
    """The pair goes where the table says, records history, or is refused without change."""
    app = make_app(state, pid=None if variant.endswith("nopid") else 4242)
    asked = allowed(state, trigger, app, cause=Cause.api, **KWARGS[variant])
    accepted = fire(app, trigger, **KWARGS[variant])
    assert asked == accepted  # asking the table agrees with firing through transitions
    if outcome == REFUSED:
        assert not accepted
        assert app.state is state and not app.history
    elif outcome == INTERNAL:
        assert accepted
        assert app.state is state and not app.history and app.last_entry is None
    else:
        assert accepted and app.state is outcome
        (entry,) = app.history
        assert (entry.src, entry.dst, entry.trigger, entry.cause) == (state, outcome, trigger,
                                                                        Cause.api)


class TestFields:
    def test_failed_carries_error_and_launch_clears_it(self) -> None:
        """failed keeps the error; the next successful launch clears it."""
        app = make_app(S.launching)
        fire(app, T.spawn_failed, error="boom")
        assert (app.state, app.error) == (S.failed, "boom")
        fire(app, T.launch)
        assert app.error == "boom"  # still failed until the spawn succeeds
        fire(app, T.spawned, pid=7)
        assert (app.state, app.error, app.pid) == (S.launched, None, 7)
        assert app.launched_at is not None and app.ready_at is None

    def test_ready_without_launched_sets_both_times(self) -> None:
        """An app may say ready first: that means launched and ready."""
        app = make_app()
        fire(app, T.notify_ready)
        assert app.launched_at is not None and app.ready_at == app.launched_at

    def test_repeated_launched_keeps_readiness(self) -> None:
        """launched while ready does not reset ready (the Go orchestratr's bug B3)."""
        app = make_app(S.launched, pid=5)
        fire(app, T.notify_ready)
        ready_at = app.ready_at
        fire(app, T.notify_launched)
        assert (app.state, app.ready_at) == (S.ready, ready_at)

    def test_history_is_bounded(self) -> None:
        app = make_app()
        for _ in range(200):
            fire(app, T.notify_ready)
            fire(app, T.notify_stopped)
        assert len(app.history) == 100


def test_concurrent_raw_triggers_keep_a_consistent_history() -> None:
    """Many threads firing random triggers: the state stays valid and the history chains."""
    app = make_app()
    triggers = [(t, KWARGS[v]) for t, v in EXPECTED]
    errors: list[BaseException] = []
    stop_at = time.monotonic() + 1.0

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < stop_at:
                trigger, kwargs = rng.choice(triggers)
                with app.lock:
                    app.pid = rng.choice([None, 99])
                    fire(app, trigger, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - any escape is the failure under test
            errors.append(exc)

    run_concurrently(hammer, 16)
    assert not errors
    assert isinstance(app.state, AppState)
    history = list(app.history)
    assert len(history) == 100
    for before, after in itertools.pairwise(history):
        assert after.src is before.dst
    assert history[-1].dst is app.state


def test_models_carry_no_bound_methods() -> None:
    """Apps are driven by name: transitions binds no per-app functions (1.1 MiB per 100)."""
    app = make_app()
    assert not [n for n in ("launch", "may_launch", "is_stopped", "trigger") if hasattr(app, n)]
    assert fire(app, T.launch) and app.state is S.launching
