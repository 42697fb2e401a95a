"""Heartbeat leases on real processes, with real time: expiry, grace, revive, drain, restart.

Leases here last fractions of a second so that every path runs in well under a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from orchestratr.errors import ConflictError, InvalidTransitionError
from orchestratr.registry.model import AppSpec, RestartPolicy
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.states import AppState, Cause, Trigger
from tests.conftest import alive, ignores_sigterm, wait_for, wait_state

S = AppState
MakeSup = Callable[..., Supervisor]


def app(name: str = "a", **fields: object) -> AppSpec:
    return AppSpec(name, "sleep 30", **fields)  # type: ignore[arg-type]


def last(sup: Supervisor, name: str = "a") -> tuple[Trigger, Cause, S]:
    entry = sup.snapshot(name).history[-1]
    return entry.trigger, entry.cause, entry.dst


class TestExpiry:
    def test_a_missed_lease_makes_the_app_unresponsive_then_failed(
        self, make_supervisor: MakeSup
    ) -> None:
        """Without a restart policy the process is left alone once grace runs out, and stays
        tracked: the app is failed with its pid shown (issue 11, defect 2)."""
        sup = make_supervisor(app(lease_secs=0.2, grace_secs=0.2))
        launched = time.monotonic()
        pid = sup.launch("a", Cause.cli).app.pid
        assert pid
        wait_state(sup, "a", S.unresponsive)
        assert 0.18 <= time.monotonic() - launched < 1.0
        assert last(sup) == (Trigger.lease_expired, Cause.lease, S.unresponsive)
        assert [e.type for e in sup.bus.since(0)].count("lease_expired") == 1
        wait_state(sup, "a", S.failed)
        snap = sup.snapshot("a")
        assert snap.error == "heartbeat lease expired"
        assert last(sup) == (Trigger.grace_expired, Cause.lease, S.failed)
        assert alive(pid)  # left alone, as the issue asks
        assert snap.pid == pid  # ... and never forgotten

    def test_an_expired_app_is_never_launched_twice_and_stop_ends_it(
        self, make_supervisor: MakeSup
    ) -> None:
        """Defect 2: after the lease expired, a launch (a chord) spawned a second instance and
        a stop answered ``stopped`` while the old process ran on."""
        sup = make_supervisor(app(lease_secs=0.1, grace_secs=0.1))
        pid = sup.launch("a", Cause.cli).app.pid
        wait_state(sup, "a", S.failed)
        again = sup.launch("a", Cause.hotkey)
        assert not again.spawned and again.app.pid == pid
        sup.stop("a", Cause.cli)
        wait_state(sup, "a", S.stopped)
        assert not alive(pid)  # type: ignore[arg-type]
        assert sup.snapshot("a").pid is None

    def test_an_expired_apps_own_exit_is_still_seen(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(AppSpec("a", "sleep 0.6", lease_secs=0.1, grace_secs=0.1))
        sup.launch("a", Cause.cli)
        wait_state(sup, "a", S.failed)
        wait_for(lambda: sup.snapshot("a").pid is None, what="the held process's exit")
        snap = sup.snapshot("a")
        assert (snap.state, snap.error) == (S.failed, "heartbeat lease expired")

    def test_heartbeats_keep_the_lease(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app(lease_secs=0.2, grace_secs=0.1))
        sup.launch("a", Cause.cli)
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            renewal = sup.heartbeat("a", Cause.api)
            assert renewal.expires_in_s == pytest.approx(0.2)
            time.sleep(0.05)  # the app's heartbeat period, not a wait for anything
        assert sup.snapshot("a").state is S.ready
        wait_state(sup, "a", S.unresponsive)  # once they stop, it expires

    def test_a_heartbeat_in_grace_revives_and_restarts_the_lease(
        self, make_supervisor: MakeSup
    ) -> None:
        sup = make_supervisor(app(lease_secs=0.2, grace_secs=5))
        sup.launch("a", Cause.cli)
        ready_at = sup.snapshot("a").ready_at
        wait_state(sup, "a", S.unresponsive)
        sup.heartbeat("a", Cause.api)
        snap = sup.snapshot("a")
        assert (snap.state, snap.ready_at) == (S.ready, ready_at)  # ready since it first said so
        assert last(sup) == (Trigger.heartbeat, Cause.api, S.ready)
        wait_state(sup, "a", S.unresponsive)  # the lease runs again

    def test_with_a_restart_policy_grace_expiry_restarts_the_app(
        self, make_supervisor: MakeSup
    ) -> None:
        sup = make_supervisor(app(lease_secs=0.2, grace_secs=0.1,
                                  restart=RestartPolicy.on_failure, restart_delay_ms=0))
        first = sup.launch("a", Cause.cli).app.pid
        wait_for(lambda: sup.snapshot("a").pid not in (None, first), what="the relaunch")
        # read from the history: the app may be past ``stopping`` by the time one looks
        steps = [(h.trigger, h.cause, h.dst) for h in sup.snapshot("a").history]
        assert (Trigger.grace_expired, Cause.lease, S.stopping) in steps
        wait_state(sup, "a", S.ready)
        second = sup.snapshot("a").pid
        assert second not in (None, first) and not alive(first)  # type: ignore[arg-type]

    def test_a_stop_ends_the_lease(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app(lease_secs=0.2))
        sup.launch("a", Cause.cli)
        sup.stop("a", Cause.cli)
        wait_state(sup, "a", S.stopped)
        snap = sup.snapshot("a")
        assert snap.state is S.stopped
        assert (snap.lease_s, snap.expires_in_s) == (None, None)  # no deadline left to expire


class TestHeartbeat:
    def test_without_a_lease_a_heartbeat_is_refused(self, make_supervisor: MakeSup) -> None:
        """Defect 2: a heartbeat typed once by hand started a 90 s lease whose expiry failed
        a healthy app. Now it is refused, saying how to declare a lease."""
        sup = make_supervisor(app())
        sup.launch("a", Cause.cli)
        with pytest.raises(ConflictError, match="lease_secs"):
            sup.heartbeat("a", Cause.api)
        snap = sup.snapshot("a")
        assert (snap.state, snap.lease_s, snap.expires_in_s) == (S.ready, None, None)

    def test_launched_with_a_lease(self, make_supervisor: MakeSup) -> None:
        """An app that announces itself can ask for a lease of its own."""
        sup = make_supervisor(app())
        sup.notify_launched("a", Cause.api, lease_s=0.2)
        assert sup.snapshot("a").lease_s == 0.2
        wait_state(sup, "a", S.unresponsive)

    def test_a_heartbeat_from_a_stopped_app_means_ready(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app(lease_secs=30))
        assert sup.heartbeat("a", Cause.api).app.state is S.ready

    def test_a_heartbeat_while_stopping_is_refused(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(AppSpec("a", "trap '' TERM; sleep 30", stop_timeout_ms=2000,
                                      lease_secs=30))
        pid = sup.launch("a", Cause.cli).app.pid
        wait_for(lambda: ignores_sigterm(pid), what="the trap")
        sup.stop("a", Cause.cli)
        with pytest.raises(InvalidTransitionError, match="is stopping; cannot heartbeat"):
            sup.heartbeat("a", Cause.api)


class TestAdmin:
    def test_drain_starts_grace_now_and_revive_cancels_it(
        self, make_supervisor: MakeSup
    ) -> None:
        sup = make_supervisor(app(grace_secs=0.3))
        sup.launch("a", Cause.cli)
        snap = sup.drain("a", Cause.api)
        assert snap.state is S.unresponsive and snap.expires_in_s <= 0.3  # type: ignore[operator]
        assert last(sup) == (Trigger.drain, Cause.api, S.unresponsive)
        assert sup.drain("a", Cause.api).state is S.unresponsive  # idempotent
        assert sup.revive("a", Cause.api).state is S.ready
        assert last(sup) == (Trigger.revive, Cause.api, S.ready)
        time.sleep(0.4)  # a window longer than the grace period: nothing may expire in it
        assert sup.snapshot("a").state is S.ready  # the grace period was cancelled

    def test_a_drained_app_not_revived_fails_saying_so(self, make_supervisor: MakeSup) -> None:
        sup = make_supervisor(app(grace_secs=0.1))
        sup.launch("a", Cause.cli)
        sup.drain("a", Cause.api)
        wait_state(sup, "a", S.failed)
        assert "drained" in sup.snapshot("a").error  # type: ignore[operator]

    @pytest.mark.parametrize("command", ["drain", "revive"])
    def test_drain_and_revive_need_a_running_app(
        self, make_supervisor: MakeSup, command: str
    ) -> None:
        sup = make_supervisor(app())
        with pytest.raises(InvalidTransitionError, match=f"is stopped; cannot {command}"):
            getattr(sup, command)("a", Cause.api)


def test_many_leases_expire_each_at_its_own_deadline(make_supervisor: MakeSup) -> None:
    """One clock thread serves every lease, waking at each deadline."""
    lengths = [0.1, 0.3, 0.5]
    sup = make_supervisor(*(app(f"a{i}", lease_secs=s, grace_secs=30)
                            for i, s in enumerate(lengths)))
    started = time.monotonic()
    for i in range(len(lengths)):
        sup.notify_ready(f"a{i}", Cause.api)
    for i, secs in enumerate(lengths):
        wait_state(sup, f"a{i}", S.unresponsive)
        assert secs - 0.02 <= time.monotonic() - started < secs + 0.3
