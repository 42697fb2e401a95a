"""``register`` / ``unregister`` / ``heartbeat``: apps added at run time by shell scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from tests.conftest import alive
from tests.integration.cli.conftest import ORCHESTRATR, Shared


def names(shared: Shared) -> list[str]:
    return [a["name"] for a in shared.cli("list", "--json").json]


def test_register_heartbeat_unregister(shared_daemon: Shared) -> None:
    cli = shared_daemon.cli
    run = cli("register", "script", "--command", "sleep 60", "--chord", "k", "--lease", "30",
              "--description", "a shell script", "--env", "MODE=x=y")
    assert run.code == 0, run.err
    assert run.out == "registered script, lease 30s\n"
    app = next(a for a in cli("list", "--json").json if a["name"] == "script")
    assert (app["chord"], app["description"], app["env"]) == ("k", "a shell script",
                                                               {"MODE": "x=y"})
    renewed = cli("heartbeat", "script")
    assert renewed.code == 0, renewed.err
    assert renewed.out in ("renewed script: expires in 30s\n", "renewed script: expires in 29s\n")
    beat = cli("heartbeat", "script", "--json").json
    assert beat["renewed"] == "script" and 29 < beat["expires_in_secs"] <= 30
    assert cli("launch", "script").code == 0
    gone = cli("unregister", "script", "--json")
    assert gone.code == 0, gone.err
    assert "script" not in names(shared_daemon)
    assert cli("unregister", "script").code == 1  # already gone: not_found
    assert cli("heartbeat", "script", "--json").json["code"] == "not_found"


def test_the_daemon_refuses_a_bad_or_duplicate_registration(shared_daemon: Shared) -> None:
    bad = shared_daemon.cli("register", "bad/name", "--command", "true", "--json")
    assert bad.code == 1 and bad.json["code"] == "invalid_config"
    assert "name: 'bad/name' must be 1 to 128 characters" in bad.json["errors"][0]
    human = shared_daemon.cli("register", "bad/name", "--command", "true")
    assert human.err.splitlines()[-1].startswith("  - app (bad/name): name: 'bad/name' must")
    taken = shared_daemon.cli("register", "notes", "--command", "true", "--json")
    assert taken.code == 1 and taken.json["code"] == "conflict"
    assert names(shared_daemon).count("notes") == 1


def test_unregister_keep_running_leaves_the_process(shared_daemon: Shared) -> None:
    cli = shared_daemon.cli
    assert cli("register", "kept", "--command", "sleep 60").code == 0
    pid = cli("launch", "kept", "--json").json["pid"]
    run = cli("unregister", "kept", "--keep-running")
    assert run.code == 0 and run.out == "unregistered kept (its process keeps running)\n"
    assert alive(pid)
    os.killpg(pid, signal.SIGKILL)


def test_heartbeat_every_keeps_renewing(shared_daemon: Shared) -> None:
    assert shared_daemon.cli("register", "beating", "--command", "sleep 60",
                             "--lease", "5").code == 0
    proc = subprocess.Popen([*ORCHESTRATR, "--config-dir", str(shared_daemon.config_dir),
                             "heartbeat", "beating", "--every", "0.1", "--json"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.kill()
        proc.wait()
    assert [x["renewed"] for x in lines] == ["beating"] * 3
    assert all(4 < x["expires_in_secs"] <= 5 for x in lines)
    assert shared_daemon.cli("unregister", "beating").code == 0


def test_drain_then_revive(shared_daemon: Shared) -> None:
    cli = shared_daemon.cli
    assert cli("register", "drained", "--command", "sleep 60", "--lease", "30").code == 0
    pid = cli("launch", "drained", "--json").json["pid"]
    run = cli("drain", "drained")
    assert run.code == 0, run.err
    assert run.out == f"drained: unresponsive (pid {pid})\n"
    revived = cli("revive", "drained", "--json")
    assert revived.code == 0 and revived.json["state"] == "ready"
    piped = cli("pipe", input='{"drain": "drained"}\n{"revive": "drained"}\n').lines
    assert [json.loads(x) for x in piped] == [
        {"drained": {"app": "drained", "state": "unresponsive", "pid": pid}},
        {"revived": {"app": "drained", "state": "ready", "pid": pid}}]
    assert cli("revive", "drained").code == 0  # reviving a ready app changes nothing
    assert cli("unregister", "drained").code == 0
