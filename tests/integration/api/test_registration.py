"""Runtime registration (POST /apps, DELETE /apps/{name}) and the lease endpoints, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, alive, wait_for, write_config
from tests.integration.api.conftest import CONFIG, HttpApi, port_of

SCRIPT = {"name": "script", "chord": "k", "command": "sleep 60", "lease_secs": 30}


class TestRegister:
    def test_a_registered_app_is_listed_with_source_api(self, api: HttpApi) -> None:
        reply = api.post("/apps", {**SCRIPT, "chrod": "k"})
        assert reply.status == 201
        body = reply.body
        assert (body["name"], body["source"], body["state"], body["lease_secs"]) == (
            "script", "api", "stopped", 30)
        assert body["warnings"] == [
            "app (script): chrod: unknown field, ignored; did you mean 'chord'?"]
        assert "script" in [a["name"] for a in api.get("/apps").body]
        launched = api.post("/apps/script/launch").body
        assert launched["state"] == "ready" and alive(launched["pid"])

    @pytest.mark.parametrize(("fields", "fragment"), [
        ({"name": "notes", "command": "x"}, "name 'notes' is taken by app 'notes' (config)"),
        ({"name": "other", "chord": "N", "command": "x"}, "chord 'N' is taken by app 'notes'"),
        ({"name": "other", "chord": "x", "command": "x"}, "by app 'extra' (apps.d/extra.yml)"),
    ])
    def test_a_taken_name_or_chord_is_409(
        self, api: HttpApi, fields: dict[str, Any], fragment: str
    ) -> None:
        reply = api.post("/apps", fields)
        assert (reply.status, reply.body["code"]) == (409, "conflict")
        assert fragment in reply.body["error"]

    def test_every_validation_error_is_listed(self, api: HttpApi) -> None:
        reply = api.post("/apps", {"name": "bad/name", "chord": "?", "lease_secs": -1,
                                   "restart": "sometimes", "env": {"A=B": "x"}})
        assert (reply.status, reply.body["code"]) == (400, "invalid_config")
        errors = "\n".join(reply.body["errors"])
        for fragment in ("command: required field missing", "restart: expected one of",
                         "env.A=B: a variable name must be non-empty, without '='",
                         "name: 'bad/name' must be 1 to 128 characters, without '/'",
                         "chord: chord '?' is reserved",
                         "lease_secs: must be more than 0"):
            assert fragment in errors
        assert "bad/name" not in [a["name"] for a in api.get("/apps").body]

    def test_an_autostart_registration_launches_at_once(self, api: HttpApi) -> None:
        api.post("/apps", {"name": "auto", "command": "sleep 60", "autostart": True})
        assert api.wait_state("auto", "ready")["pid"]

    def test_registrations_survive_a_reload_and_a_restart(
        self, serve: Any, start_daemon: Callable[..., DaemonProcess], config_dir: Path
    ) -> None:
        api, daemon = serve()
        api.post("/apps", SCRIPT)
        write_config(config_dir, CONFIG + "  - name: added\n    command: sleep 60\n")
        assert api.post("/reload").status == 200
        assert api.app("script")["source"] == "api"
        saved = json.loads((config_dir / "registered.json").read_text())
        assert [entry["name"] for entry in saved] == ["script"] and "source" not in saved[0]
        daemon.stop()
        start_daemon("--no-hotkeys")
        api = HttpApi(port_of(config_dir))
        assert (api.app("script")["source"], api.app("script")["chord"]) == ("api", "k")

    def test_a_config_file_taking_its_name_shadows_the_registration(
        self, api: HttpApi, config_dir: Path
    ) -> None:
        """The files own their names: the registration steps aside, and comes back."""
        api.post("/apps", SCRIPT)
        write_config(config_dir, CONFIG + "  - name: script\n    command: sleep 61\n")
        reply = api.post("/reload")
        assert any("registered.json (script)" in w for w in reply.body["warnings"])
        assert api.app("script")["source"] == "config"
        write_config(config_dir, CONFIG)
        api.post("/reload")
        assert api.app("script")["source"] == "api"

    def test_a_registration_shadowed_by_name_can_be_unregistered(
        self, api: HttpApi, config_dir: Path
    ) -> None:
        """DELETE answered 409 "comes from config.yml": the stale registration stayed for good,
        and came back the moment the file's app went."""
        api.post("/apps", SCRIPT)
        write_config(config_dir, CONFIG + "  - name: script\n    command: sleep 61\n")
        api.post("/reload")
        pid = api.post("/apps/script/launch").body["pid"]
        reply = api.call("DELETE", "/apps/script")
        assert reply.status == 200 and reply.body["unregistered"] == "script"
        assert json.loads((config_dir / "registered.json").read_text()) == []
        assert api.app("script")["source"] == "config" and api.app("script")["pid"] == pid
        assert api.call("DELETE", "/apps/script").status == 409  # the file's app is not ours
        api.post("/apps/script/stop")
        wait_for(lambda: not alive(pid), what="the file's app to stop")
        write_config(config_dir, CONFIG)
        api.post("/reload")
        assert api.get("/apps/script").status == 404  # the registration did not come back


class TestUnregister:
    def test_a_running_app_is_stopped_then_forgotten(self, api: HttpApi) -> None:
        api.post("/apps", SCRIPT)
        pid = api.post("/apps/script/launch").body["pid"]
        reply = api.call("DELETE", "/apps/script")
        assert reply.status == 200 and reply.body["unregistered"] == "script"
        assert reply.body["state"] in ("stopping", "stopped")
        wait_for(lambda: not alive(pid), what="the app to be stopped")
        wait_for(lambda: api.get("/apps/script").status == 404)
        assert api.call("DELETE", "/apps/script").status == 404

    def test_keep_running_leaves_it_tracked_until_it_exits(self, api: HttpApi) -> None:
        api.post("/apps", SCRIPT)
        pid = api.post("/apps/script/launch").body["pid"]
        reply = api.call("DELETE", "/apps/script?keep_running=true")
        assert reply.body["state"] == "ready" and alive(pid)
        assert api.app("script")["removed"] is True
        assert api.post("/apps/script/launch").status == 404  # not launchable any more
        api.post("/apps/script/stop")
        wait_for(lambda: api.get("/apps/script").status == 404)

    @pytest.mark.parametrize("name", ["notes", "extra"])
    def test_apps_owned_by_files_are_409(self, api: HttpApi, name: str) -> None:
        reply = api.call("DELETE", f"/apps/{name}")
        assert (reply.status, reply.body["code"]) == (409, "conflict")
        assert "remove it from that file" in reply.body["error"]

    def test_a_bad_flag_is_400(self, api: HttpApi) -> None:
        api.post("/apps", SCRIPT)
        reply = api.call("DELETE", "/apps/script?keep_running=perhaps")
        assert (reply.status, reply.body["code"]) == (400, "bad_request")


class TestLeaseEndpoints:
    @pytest.mark.parametrize("method", ["POST", "PUT"])
    def test_heartbeat_renews(self, api: HttpApi, method: str) -> None:
        api.post("/apps", SCRIPT)
        api.post("/apps/script/launch")
        reply = api.call(method, "/apps/script/heartbeat")
        assert reply.status == 200
        assert reply.body == {"renewed": "script", "expires_in_secs": 30, "state": "ready"}
        lease = api.app("script")["lease"]
        assert (lease["lease_secs"], lease["in_grace"]) == (30, False)
        assert 29 < lease["expires_in_secs"] <= 30

    def test_launched_with_a_lease_then_missed(self, api: HttpApi) -> None:
        reply = api.post("/apps/notes/launched", {"lease_secs": 0.3})
        assert reply.body["state"] == "launched"
        detail = api.wait_state("notes", "unresponsive")
        assert detail["history"][-1]["trigger"] == "lease_expired"
        assert detail["lease"]["in_grace"] is True
        assert api.post("/apps/notes/heartbeat").body["state"] == "ready"

    def test_drain_then_revive(self, api: HttpApi) -> None:
        api.post("/apps/notes/launch")
        api.wait_state("notes", "ready")
        drained = api.post("/apps/notes/drain").body
        assert drained["state"] == "unresponsive"
        assert api.app("notes")["history"][-1]["source"] == "api"
        assert api.post("/apps/notes/revive").body["state"] == "ready"
        reply = api.post("/apps/sleeper/revive")
        assert (reply.status, reply.body["code"]) == (409, "invalid_transition")
        assert "is stopped; cannot revive" in reply.body["error"]

    def test_a_heartbeat_for_an_unknown_app_is_404(self, api: HttpApi) -> None:
        assert api.post("/apps/nosuch/heartbeat").status == 404
