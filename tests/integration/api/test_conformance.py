"""What RFC 9110/9112, a generated client and the Go orchestratr's manifests expect of the API
(issue 12, items 10 and 11), against a real daemon."""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import write_config
from tests.integration.api.conftest import HttpApi, exchange

GO_NAMES = ["Firefox", "My Notes", "x" * 100, "Ünïcode app", "v1.2 (beta)"]
GO_CONFIG = "apps:\n" + "".join(
    f"  - name: {json.dumps(name)}\n    command: sleep 60\n" for name in GO_NAMES)


class TestGoEraNames:
    def test_every_name_loads_and_is_found_in_any_case(self, serve: Any) -> None:
        """Item 10: ``name: Firefox``, ``"My Notes"`` and names over 64 characters were
        refused, and a config.yml with one of them started with no apps."""
        api, _ = serve(GO_CONFIG)
        assert sorted(a["name"] for a in api.get("/apps").body) == sorted(
            [*GO_NAMES, "extra"])
        for name in GO_NAMES:
            for spelling in (name, name.upper(), name.lower()):
                reply = api.get(f"/apps/{quote(spelling, safe='')}/state")
                assert (reply.status, reply.body["name"]) == (200, name), spelling
        reply = api.post(f"/apps/{quote('my notes')}/launch")
        assert (reply.status, reply.body["app"]) == (200, "My Notes")
        api.wait_state("My Notes", "ready")
        assert api.post("/apps/MY%20NOTES/stop").status == 200

    def test_a_stream_filter_takes_any_case(self, serve: Any) -> None:
        api, _ = serve(GO_CONFIG)
        api.post("/apps/firefox/launch")
        api.wait_state("Firefox", "ready")
        events = api.get("/events?app=FIREFOX&type=state").body
        assert [e["data"]["to"] for e in events] == ["launching", "launched", "ready"]

    def test_names_differing_only_in_case_clash_naming_both(
        self, api: HttpApi, config_dir: Path
    ) -> None:
        write_config(config_dir, "apps:\n  - {name: Notes, command: sleep 60}\n"
                                 "  - {name: notes, command: sleep 60}\n")
        reply = api.post("/reload")
        assert (reply.status, reply.body["code"]) == (400, "invalid_config")
        [clash] = [e for e in reply.body["errors"] if "duplicate name" in e]
        assert "(Notes)" in clash and "(notes)" in clash

    def test_a_registration_in_another_case_is_a_conflict(self, api: HttpApi) -> None:
        reply = api.post("/apps", {"name": "NOTES", "command": "sleep 60"})
        assert (reply.status, reply.body["code"]) == (409, "conflict")

    @pytest.mark.parametrize("name", ["a/b", "a\\b", " lead", "trail ", "tab\there", ".", "..",
                                      "x" * 129, ""])
    def test_names_no_url_or_file_can_carry_are_refused(self, api: HttpApi, name: str) -> None:
        reply = api.post("/apps", {"name": name, "command": "sleep 60"})
        assert reply.status == 400
        assert len(json.dumps(reply.body)) < 800  # the name quoted twice, 40 characters each


class TestRfc:
    def test_http_09_is_refused_at_once(self, api: HttpApi) -> None:
        """Item 11: an HTTP/0.9 request line (no headers follow) waited 5 s for them: 408."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
            sock.sendall(b"GET /health\r\n")
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert time.monotonic() - started < 1

    def test_options_asterisk_is_answered(self, api: HttpApi) -> None:
        reply = exchange(api.port, b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   b"Connection: close\r\n\r\n")
        assert reply.status == 200

    @pytest.mark.parametrize("method", ["FOO", "PROPFIND", "QUERY"])
    def test_an_unknown_method_is_501(self, api: HttpApi, method: str) -> None:
        reply = api.call(method, "/health", check=False)
        assert (reply.status, reply.body["code"]) == (501, "not_implemented")

    def test_the_server_header_has_no_trailing_space(self, api: HttpApi) -> None:
        server = api.get("/health").headers["server"]
        assert server == server.strip() and server.startswith("orchestratr/")

    def test_a_null_body_is_not_an_object(self, api: HttpApi) -> None:
        reply = api.post("/apps/notes/launch", raw=b"null",
                         headers={"Content-Type": "application/json"})
        assert (reply.status, reply.body["code"]) == (400, "bad_request")
        assert api.app("notes")["state"] == "stopped"

    def test_pid_1_is_400_for_a_running_app_too(self, api: HttpApi) -> None:
        """The README says 400; a running app answered 409 (its state was checked first)."""
        api.post("/apps/notes/launch")
        api.wait_state("notes", "ready")
        reply = api.post("/apps/notes/launched", {"pid": 1})
        assert (reply.status, reply.body["code"]) == (400, "bad_request")

    def test_a_validation_error_quotes_a_few_dozen_characters(self, api: HttpApi) -> None:
        reply = api.post("/apps", {"name": "/" + "n" * 5000, "command": "x"})
        assert reply.status == 400
        assert "n" * 41 not in json.dumps(reply.body)


class TestGeneratedClient:
    def test_openapi_python_client_parses_real_answers(
        self, api: HttpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Item 11: the component AppState collided with the generator's name for App.state,
        so the generated client could not parse GET /apps, POST /apps, GET /apps/{name} or
        POST /reload."""
        spec = tmp_path / "openapi.json"
        spec.write_text(json.dumps(api.doc))
        subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path",
                        str(spec), "--output-path", str(tmp_path / "generated"),
                        "--meta", "none"], check=True, capture_output=True, timeout=120)
        monkeypatch.syspath_prepend(str(tmp_path))
        generated = importlib.import_module("generated")
        client = generated.Client(base_url=api.base_url)
        ops = importlib.import_module("generated.api.default")
        apps = importlib.import_module("generated.api.default.get_apps").sync(client=client)
        assert sorted(a.name for a in apps) == ["broken", "extra", "notes", "sleeper",
                                                "stubborn"]
        detail = importlib.import_module("generated.api.default.get_apps_name").sync(
            "notes", client=client)
        assert detail.name == "notes" and detail.history == []
        reloaded = importlib.import_module("generated.api.default.post_reload").sync(
            client=client, body=importlib.import_module("generated.models").Empty())
        assert len(reloaded.apps) == 5
        assert ops is not None
