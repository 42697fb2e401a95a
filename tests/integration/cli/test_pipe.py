"""``orchestratr pipe``: NDJSON requests on stdin, responses on stdout, against a real daemon."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.cli.conftest import ORCHESTRATR, Shared, run_cli


def pipe(shared: Shared, *requests: Any, raw: str | None = None) -> list[dict[str, Any]]:
    """Send requests (objects, or ``raw`` text as is), read every response; exit must be 0."""
    text = raw if raw is not None else "".join(json.dumps(r) + "\n" for r in requests)
    run = shared.cli("pipe", input=text)
    assert run.code == 0, run.err
    assert run.err == ""
    return [json.loads(line) for line in run.lines]


class TestRequests:
    def test_launch_ready_stop_restart_in_order(self, shared_daemon: Shared) -> None:
        replies = pipe(shared_daemon, {"launch": "sleeper"}, {"launch": "sleeper"},
                       {"ready": "sleeper"}, {"restart": "sleeper"})
        launched, again, ready, restarted = replies
        pid = launched["launched"]["pid"]
        fresh = launched["launched"].pop("reason")
        assert launched == {"launched": {"app": "sleeper", "state": "ready", "pid": pid,
                                         "spawned": True, "focused": False}}
        assert "new process" in fresh
        assert again["launched"].pop("reason")  # sleep has no window to raise
        assert again == {"launched": {"app": "sleeper", "state": "ready", "pid": pid,
                                      "spawned": False, "focused": False},
                         "warning": "sleeper was already running; nothing was spawned"}
        assert ready == {"ready": {"app": "sleeper", "state": "ready", "pid": pid}}
        assert set(restarted) == {"restarted"} and restarted["restarted"]["app"] == "sleeper"
        wait_for(lambda: pipe(shared_daemon, {"list": None})[0]["apps"][1]["state"] == "ready")
        stopped = pipe(shared_daemon, {"stop": "sleeper"})
        assert stopped[0]["stopped"]["app"] == "sleeper"
        assert "status" not in stopped[0] and "status" not in stopped[0]["stopped"]

    def test_several_names_and_all_as_on_the_command_line(self, shared_daemon: Shared) -> None:
        launched, restarted, stopped = pipe(
            shared_daemon, {"launch": ["notes", "sleeper", "notes"]},
            {"restart": ["nope", "notes"]}, {"stop": "all"})
        assert [a["app"] for a in launched["launched"]] == ["notes", "sleeper"]
        nope, notes = restarted["restarted"]
        assert (nope["app"], nope["error"], notes["app"]) == ("nope", "not_found", "notes")
        assert [a["app"] for a in stopped["stopped"]] == [
            "notes", "sleeper", "stubborn", "broken"]
        assert shared_daemon.cli("stop", "all", "--wait").code == 0

    def test_list_reload_trigger(self, shared_daemon: Shared) -> None:
        listed, reloaded, triggered = pipe(
            shared_daemon, {"list": None}, {"reload": None}, {"trigger": "n"})
        assert [a["name"] for a in listed["apps"]] == ["notes", "sleeper", "stubborn", "broken"]
        assert reloaded["reloaded"]["warnings"] == [] and len(reloaded["reloaded"]["apps"]) == 4
        assert triggered["triggered"]["app"] == "notes"

    def test_the_daemons_errors_keep_its_code(self, shared_daemon: Shared) -> None:
        replies = pipe(shared_daemon, {"stop": "nope"}, {"launch": "broken"}, {"trigger": None},
                       {"subscribe": "nope", "idle_for": 1})
        assert replies[0] == {"error": "not_found", "message": "app 'nope' not found"}
        assert replies[3]["error"] == "not_found"  # as `events --app nope` says
        assert replies[1]["error"] == "launch_failed"
        assert "working directory '/nonexistent/dir' does not exist" in replies[1]["message"]
        assert replies[2]["error"] == "unavailable"


def test_a_launch_that_fails_after_its_spawn_is_an_error_in_the_pipe_too(
    config_dir: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """With ``"wait": true``, as ``orchestratr launch``: a missing command answered
    ``launched``, state ready (without it, the answer comes at once, as before)."""
    write_config(config_dir, "apps:\n  - name: typo\n    chord: t\n"
                             "    command: no-such-command-xyz\n")
    start_daemon("--no-hotkeys")
    run = run_cli("--config-dir", str(config_dir), "pipe", input="".join(
        json.dumps(r) + "\n" for r in ({"launch": "typo", "wait": True},
                                       {"trigger": "t", "wait": True}, {"launch": "typo"})))
    launched, triggered, unwaited = [json.loads(line) for line in run.lines]
    for reply in (launched, triggered):
        assert reply["error"] == "launch_failed" and "command not found" in reply["message"]
    assert unwaited["launched"]["app"] == "typo"


class TestMalformed:
    def test_each_bad_line_gets_an_error_and_the_pipe_goes_on(self, shared_daemon: Shared) -> None:
        raw = "\n".join([
            "this is not json",
            '["launch", "notes"]',
            '{"launch": "notes", "stop": "notes"}',
            '{"fly": "notes"}',
            '{"launch": 42}',
            '{"register": "notes"}',
            '{"subscribe": "*", "idle_for": -1}',
            "",  # blank lines are skipped
            '{"list": null}',
        ]) + "\n"
        replies = pipe(shared_daemon, raw=raw)
        *errors, listed = replies
        assert [e["error"] for e in errors] == ["bad_request"] * 7
        assert errors[0]["message"].startswith("line 1: not JSON: ")
        assert errors[1]["message"].startswith("line 2: expected an object with one of launch, ")
        assert errors[2]["message"].startswith("line 3: expected an object with one of")
        assert errors[3]["message"].startswith("line 4: expected an object with one of")
        assert errors[4]["message"] == "line 5: launch: wants an app name (a string)"
        assert errors[5]["message"].startswith("line 6: register: wants a manifest object")
        assert errors[6]["message"] == ("line 7: subscribe: idle_for wants a positive number "
                                        "of seconds")
        assert len(listed["apps"]) == 4

    def test_a_last_line_without_newline_is_still_a_request(self, shared_daemon: Shared) -> None:
        assert "apps" in pipe(shared_daemon, raw='{"list": null}')[0]


class TestLifetime:
    def test_eof_at_once_ends_cleanly(self, shared_daemon: Shared) -> None:
        assert pipe(shared_daemon, raw="") == []

    def test_without_a_daemon_every_request_says_so_and_the_pipe_goes_on(
        self, tmp_path: Path
    ) -> None:
        run = run_cli("--config-dir", str(tmp_path), "pipe", input='{"list": null}\n' * 2)
        assert run.code == 0
        replies = [json.loads(line) for line in run.lines]
        assert [r["error"] for r in replies] == ["not_running", "not_running"]
        assert str(tmp_path / "port") in replies[0]["message"]

    def test_answers_each_line_as_it_comes(self, shared_daemon: Shared) -> None:
        """An interactive peer writes a line and waits for its answer before the next."""
        proc = subprocess.Popen([*ORCHESTRATR, "--config-dir", str(shared_daemon.config_dir),
                                 "pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, bufsize=1)
        assert proc.stdin and proc.stdout
        try:
            for _ in range(3):
                start = time.monotonic()
                proc.stdin.write('{"list": null}\n')
                proc.stdin.flush()
                assert "apps" in json.loads(proc.stdout.readline())
                assert time.monotonic() - start < 5
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
            assert proc.stdout.read() == ""
        finally:
            proc.kill()
            proc.wait()


class TestStreaming:
    def test_subscribe_then_launch_on_one_pipe(self, shared_daemon: Shared) -> None:
        replies = pipe(shared_daemon, {"subscribe": "sleeper", "idle_for": 1},
                       {"launch": "sleeper"})
        launched = next(r for r in replies if "launched" in r)
        events = [r for r in replies if "event" in r]
        assert replies[-1] == {"subscribed": "sleeper", "status": "finished"}
        assert all(r["status"] == "ongoing" and "warning" not in r for r in events)
        assert {r["event"]["app"] for r in events} == {"sleeper"}
        states = [r["event"]["to"] for r in events if r["event"]["type"] == "state"]
        assert states[:3] == ["launching", "launched", "ready"]
        assert "status" not in launched
        assert shared_daemon.cli("stop", "sleeper", "--wait").code == 0

    def test_an_unbounded_subscription_finishes_at_end_of_input(
        self, shared_daemon: Shared
    ) -> None:
        replies = pipe(shared_daemon, {"subscribe": "*"}, {"list": None})
        assert "apps" in replies[0]
        assert replies[-1] == {"subscribed": "*", "status": "finished"}

    def test_register_heartbeat_unregister(self, shared_daemon: Shared) -> None:
        manifest = {"name": "piped", "command": "sleep 60", "lease_secs": 20}
        registered, renewed, removed, again = pipe(
            shared_daemon, {"register": manifest}, {"heartbeat": "piped"},
            {"unregister": "piped"}, {"heartbeat": "piped"})
        assert set(registered) == {"registered"}
        assert renewed["renewed"]["name"] == "piped"
        assert 19 < renewed["renewed"]["expires_in_secs"] <= 20
        assert removed == {"removed": "piped"}
        assert again["error"] == "not_found"
