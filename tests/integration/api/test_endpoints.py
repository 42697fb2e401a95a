"""Every endpoint against a real daemon with real processes, over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from orchestratr import __version__
from orchestratr.api.routes import Api
from tests.conftest import alive, ignores_sigterm, wait_for, write_config
from tests.integration.api.conftest import CONFIG, HttpApi


class TestInspect:
    def test_health_names_the_daemon(self, serve: Any) -> None:
        api, daemon = serve()
        reply = api.get("/health")
        assert (reply.status, reply.body["status"], reply.body["version"]) == (
            200, "ok", __version__)
        assert reply.body["pid"] == daemon.proc.pid and reply.body["started_at"].endswith("Z")

    def test_apps_lists_config_fields_source_and_live_state(self, api: HttpApi) -> None:
        apps = {a["name"]: a for a in api.get("/apps").body}
        assert list(apps) == ["notes", "sleeper", "stubborn", "broken", "extra"]
        notes = apps["notes"]
        assert (notes["chord"], notes["command"], notes["description"]) == ("n", "sleep 60",
                                                                              "a note pad")
        assert (notes["source"], apps["extra"]["source"]) == ("config", "apps.d/extra.yml")
        assert (notes["state"], notes["pid"], notes["launched_at"], notes["error"]) == (
            "stopped", None, None, None)

    def test_no_apps_is_an_empty_list(self, serve: Any, config_dir: Path) -> None:
        api, _ = serve("apps: []\n")
        (config_dir / "apps.d" / "extra.yml").unlink()
        api.post("/reload")
        assert api.get("/apps").body == []

    def test_apps_reflects_every_change_at_once(self, api: HttpApi) -> None:
        """GET /apps reuses its encoded body only while nothing changed."""
        def notes() -> dict:
            return next(a for a in api.get("/apps").body if a["name"] == "notes")

        assert notes()["state"] == "stopped"
        api.post("/apps/notes/launched")
        assert notes()["state"] == "launched"
        api.post("/apps/notes/ready")
        assert (notes()["state"], notes()["ready_at"] is not None) == ("ready", True)
        outsider = subprocess.Popen(["sleep", "60"])
        try:  # no transition: only the pid changes
            api.post("/apps/notes/launched", {"pid": outsider.pid})
            assert (notes()["state"], notes()["pid"]) == ("ready", outsider.pid)
        finally:
            outsider.kill()
            outsider.wait()
        wait_for(lambda: notes()["state"] == "stopped", what="the outsider's exit in /apps")

    def test_one_app_carries_its_history(self, api: HttpApi) -> None:
        api.post("/apps/notes/launch")
        api.wait_state("notes", "ready")
        history = api.app("notes")["history"]
        assert [(h["from"], h["to"], h["source"]) for h in history] == [
            ("stopped", "launching", "api"), ("launching", "launched", "api"),
            ("launched", "ready", "readiness")]

    def test_state_is_go_compatible(self, api: HttpApi) -> None:
        untouched = api.get("/apps/notes/state").body
        assert untouched == {"name": "notes", "launched": False, "ready": False,
                             "state": "stopped"}
        api.post("/apps/notes/ready")
        ready = api.get("/apps/notes/state").body
        assert (ready["launched"], ready["ready"], ready["state"]) == (True, True, "ready")
        assert ready["launched_at"].endswith("Z") and ready["ready_at"].endswith("Z")

    def test_names_are_case_insensitive_and_share_one_state(self, api: HttpApi) -> None:
        """The Go orchestratr's bug B4: /apps/NOTES must be the same app as /apps/notes."""
        api.post("/apps/NOTES/ready")
        assert api.get("/apps/notes/state").body["state"] == "ready"
        assert api.get("/apps/Notes").body["name"] == "notes"


class TestNotifications:
    def test_launched_with_a_pid_tracks_that_process(self, api: HttpApi) -> None:
        outsider = subprocess.Popen(["sleep", "60"])
        try:
            reply = api.post("/apps/notes/launched", {"pid": outsider.pid})
            assert (reply.status, reply.body["state"], reply.body["pid"]) == (
                200, "launched", outsider.pid)
            outsider.kill()
            outsider.wait()
            assert api.wait_state("notes", "stopped")["pid"] is None
        finally:
            outsider.kill()

    def test_launched_without_a_pid_then_ready(self, api: HttpApi) -> None:
        assert api.post("/apps/notes/launched").body == {
            "app": "notes", "state": "launched", "pid": None, "status": "ok"}
        assert api.post("/apps/notes/ready", {}).body["state"] == "ready"

    def test_ready_without_launched_means_both_and_is_idempotent(self, api: HttpApi) -> None:
        first = api.post("/apps/notes/ready")
        again = api.post("/apps/notes/ready")
        assert (first.status, again.status) == (200, 200)
        assert api.app("notes")["launched_at"] is not None
        assert [h["to"] for h in api.app("notes")["history"]] == ["ready"]

    def test_stopped_ends_a_process_less_app(self, api: HttpApi) -> None:
        api.post("/apps/notes/ready")
        assert api.post("/apps/notes/stopped").body["state"] == "stopped"
        assert api.post("/apps/notes/stopped").status == 200  # idempotent

    def test_stopped_with_a_process_waits_for_it_to_exit(self, api: HttpApi) -> None:
        """The app announces its own shutdown: orchestratr kills nothing, and its exit, even
        by a signal, is then a clean stop rather than a failure."""
        pid = api.post("/apps/notes/launch").body["pid"]
        api.wait_state("notes", "ready")
        assert api.post("/apps/notes/stopped").body["state"] == "stopping"
        time.sleep(0.3)  # a window in which orchestratr must kill nothing
        assert alive(pid) and api.app("notes")["state"] == "stopping"
        os.killpg(pid, signal.SIGTERM)
        assert api.wait_state("notes", "stopped")["error"] is None

    def test_a_notification_that_does_not_fit_is_409_naming_the_state(
        self, api: HttpApi
    ) -> None:
        pid = api.post("/apps/stubborn/launch").body["pid"]
        wait_for(lambda: ignores_sigterm(pid), what="the trap")
        assert api.post("/apps/stubborn/stop").body["state"] == "stopping"
        reply = api.post("/apps/stubborn/ready")
        assert (reply.status, reply.body["code"]) == (409, "invalid_transition")
        assert "stopping" in reply.body["error"]
        relaunch = api.post("/apps/stubborn/launch")
        assert (relaunch.status, relaunch.body["code"]) == (409, "invalid_transition")


class TestCommands:
    def test_launch_never_spawns_a_duplicate(self, api: HttpApi) -> None:
        first = api.post("/apps/notes/launch").body
        second = api.post("/apps/notes/launch").body
        assert (first["spawned"], second["spawned"]) == (True, False)
        assert first["pid"] == second["pid"] and alive(first["pid"])
        assert [h["to"] for h in api.app("notes")["history"]].count("launching") == 1

    def test_stop_ends_the_process(self, api: HttpApi) -> None:
        pid = api.post("/apps/notes/launch").body["pid"]
        api.wait_state("notes", "ready")
        assert api.post("/apps/notes/stop").body["state"] == "stopping"
        api.wait_state("notes", "stopped")
        assert not alive(pid)

    def test_restart_gives_a_new_process(self, api: HttpApi) -> None:
        old = api.post("/apps/notes/launch").body["pid"]
        api.wait_state("notes", "ready")
        restarted = api.post("/apps/notes/restart").body
        new = api.wait_state("notes", "ready")["pid"]
        assert restarted["status"] == "ok" and new not in (None, old)
        assert not alive(old) and alive(new)

    def test_a_launch_that_cannot_spawn_is_500_launch_failed(self, api: HttpApi) -> None:
        reply = api.post("/apps/broken/launch")
        assert (reply.status, reply.body["code"]) == (500, "launch_failed")
        assert "/nonexistent/dir" in reply.body["error"]
        assert api.app("broken")["state"] == "failed"

    def test_trigger_with_a_chord_launches_that_app(self, api: HttpApi) -> None:
        reply = api.post("/trigger", {"chord": "X"})
        assert (reply.status, reply.body["app"], reply.body["spawned"]) == (200, "extra", True)
        assert alive(reply.body["pid"])

    def test_trigger_with_an_unknown_chord_is_404(self, api: HttpApi) -> None:
        reply = api.post("/trigger", {"chord": "q"})
        assert (reply.status, reply.body["code"]) == (404, "not_found")

    def test_trigger_without_a_chord_is_503_without_hotkeys(self, api: HttpApi) -> None:
        reply = api.post("/trigger")
        assert (reply.status, reply.body["code"]) == (503, "unavailable")


class TestReload:
    def test_reload_answers_the_new_registry(self, api: HttpApi, config_dir: Path) -> None:
        write_config(config_dir, CONFIG + "  - name: added\n    command: sleep 60\n")
        reply = api.post("/reload")
        assert reply.status == 200 and reply.body["status"] == "ok"
        assert "added" in [a["name"] for a in reply.body["apps"]]
        assert "added" in [a["name"] for a in api.get("/apps").body]

    def test_an_invalid_config_is_400_listing_every_error_and_changes_nothing(
        self, api: HttpApi, config_dir: Path
    ) -> None:
        before = api.get("/apps").body
        write_config(config_dir, "apps:\n  - name: bad/name\n    command: x\n  - chord: q\n")
        reply = api.post("/reload")
        assert (reply.status, reply.body["code"]) == (400, "invalid_config")
        assert reply.body["errors"] == [
            "config.yml: apps[0] (bad/name): name: 'bad/name' must be 1 to 128 characters, "
            "without '/', '\\', control characters or space around it, and not '.' or '..'",
            "config.yml: apps[1]: name: required field missing",
            "config.yml: apps[1]: command: required field missing"]
        assert api.get("/apps").body == before

    def test_openapi_describes_every_route(self, api: HttpApi) -> None:
        """Every (method, path) the router serves is documented, and nothing else is."""
        assert api.doc["openapi"].startswith("3.1")
        served = {(method.lower(), template) for method, template, _ in
                  Api(None, None, None, dict).routes}  # type: ignore[arg-type]
        documented = {(method, path) for path, item in api.doc["paths"].items()
                      for method in item if method != "parameters"}
        assert documented == served
