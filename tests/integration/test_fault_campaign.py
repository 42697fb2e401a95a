"""Issue 11's fault campaign: ``kill -9`` of the daemon at random instants, then a restart
and an immediate launch of every app. Over every trial: no app runs twice, and no process of
an app runs without the daemon tracking it.

Defect 1 in numbers: before the durable record, 10 trials of 50 concurrent launches left 40
app groups untracked, autostart made duplicates in 3 of 10, and a launch right after the
restart duplicated the app in 4 of 8. Each trial costs about two daemon starts; the count is
``ORCHESTRATR_CAMPAIGN_TRIALS`` per scenario (10 by default: 20 in all).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from orchestratr.client import Client, OrchestratrClientError
from orchestratr.processes import proctable
from tests.conftest import kill_apps_of, run_concurrently, wait_for, write_config

APPS = 50
TRIALS = int(os.environ.get("ORCHESTRATR_CAMPAIGN_TRIALS", "10"))
SEED = int(os.environ.get("ORCHESTRATR_CAMPAIGN_SEED", str(time.time_ns() % 100_000)))


def manifest(autostart: bool) -> str:
    extra = ", autostart: true" if autostart else ""
    return "apps:\n" + "".join(f"  - {{name: app{i:02d}, command: 'sleep 300'{extra}}}\n"
                               for i in range(APPS))


def instances(config_dir: Path) -> dict[str, set[int]]:
    """App -> the sessions its marked processes run in: one per instance spawned."""
    found: dict[str, set[int]] = defaultdict(set)
    for proc in proctable.scan():
        if not proc.zombie and proc.app and proctable.same_dir(proc.config_dir,
                                                                str(config_dir)):
            found[proc.app].add(proc.session)
    return found


def launch_all(config_dir: Path) -> None:
    """Launch every app at once, each from its own client (connection)."""

    def launch(i: int) -> None:
        client = Client(config_dir=config_dir)
        for _ in range(3):  # a launch refused while the daemon starts is tried again
            try:
                client.launch(f"app{i:02d}")
                return
            except OrchestratrClientError as exc:
                if exc.status not in (None, 503):
                    raise
                time.sleep(0.05)  # a pace between tries, not a wait for anything
    run_concurrently(launch, APPS)


def check(config_dir: Path, client: Client, trial: str) -> None:
    """Zero duplicate instances, zero untracked processes."""
    tracked = {app["name"]: app["pid"] for app in client.apps()}
    running = instances(config_dir)
    duplicates = {name: sessions for name, sessions in running.items() if len(sessions) > 1}
    assert not duplicates, f"{trial}: apps running twice: {duplicates}"
    untracked = {name: sessions for name, sessions in running.items()
                 if tracked.get(name) not in sessions}
    assert not untracked, f"{trial}: app processes nobody tracks: {untracked} ({tracked})"
    assert sorted(running) == sorted(tracked), f"{trial}: every app launched once"


@pytest.mark.parametrize("scenario", ["launches", "autostart"])
def test_kill_9_at_random_instants_loses_and_duplicates_nothing(
    scenario: str, config_dir: Path, start_daemon
) -> None:
    rng = random.Random(f"{SEED}-{scenario}")
    autostart = scenario == "autostart"
    write_config(config_dir, manifest(autostart))
    try:
        for trial in range(TRIALS):
            label = f"seed {SEED}, {scenario} trial {trial}"
            first = start_daemon(wait=not autostart)
            if autostart:
                first.wait_event("api_listening", timeout=20)
                delay = rng.uniform(0.0, 0.25)  # autostart runs from here on
                time.sleep(delay)  # the random instant of the kill: the fault under test
                first.proc.kill()
            else:
                delay = rng.uniform(0.0, 0.15)
                killer = threading.Timer(delay, first.proc.kill)
                killer.start()
                try:
                    launch_all(config_dir)
                except OrchestratrClientError:
                    pass  # the daemon died under the launches: the point
                killer.join()
            first.proc.wait()
            second = start_daemon(wait=False)
            second.wait_event("api_listening", timeout=20)
            launch_all(config_dir)
            client = Client(config_dir=config_dir)
            wait_for(lambda c=client: all(a["pid"] for a in c.apps()), timeout=10,
                     what=f"{label}: every app running")
            check(config_dir, client, label)
            second.stop()
            kill_apps_of(config_dir)
            wait_for(lambda: not instances(config_dir), what="the trial's apps gone")
    finally:
        kill_apps_of(config_dir)
