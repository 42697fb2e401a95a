"""The local service registry (issue 15, Koi's model without multicast), against a real daemon
with real app processes: services live only while their app runs, found by browse and
resolve, withdrawn the moment the app stops or dies."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, DaemonProcess, wait_for, write_config
from tests.integration.api.conftest import HttpApi, SseClient, json_lines

# ``web`` serves HTTP on a port of its own and offers it in its ``launched`` notification.
WEB = """\
import os, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from orchestratr import client

class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Ok)
client.notify_launched("web", pid=os.getpid(), services=[
    {"name": "web-api", "type": "_http._tcp", "port": server.server_port,
     "txt": {"path": "/"}}])
server.serve_forever()
"""
# ``finder`` browses for HTTP services and writes each change to $FOUND_OUT.
FINDER = """\
import json, os
from orchestratr import client
with open(os.environ["FOUND_OUT"], "a") as out, client.browse("_http._tcp", idle_for=0) as s:
    for event in s:
        out.write(json.dumps({event.type: event.data}) + "\\n")
        out.flush()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def quiet_port() -> int:
    """A port nothing listens on (as far as the test can know)."""
    return free_port()


@pytest.fixture
def setup(serve: Callable[..., tuple[HttpApi, DaemonProcess]], tmp_path: Path,
          quiet_port: int) -> tuple[HttpApi, DaemonProcess]:
    (tmp_path / "web.py").write_text(WEB)
    (tmp_path / "finder.py").write_text(FINDER)
    return serve(f"""\
apps:
  - name: static
    command: exec sleep 60
    services:
      - {{name: Static-API, type: _http._tcp, port: {quiet_port}, txt: {{version: 1}}}}
  - name: other
    command: exec sleep 60
    services: [{{name: other-ssh, type: _ssh._tcp, port: 2222}}]
  - name: web
    command: exec {PYTHON} {tmp_path / "web.py"}
  - name: finder
    command: exec {PYTHON} {tmp_path / "finder.py"}
    env: {{FOUND_OUT: {tmp_path / "found.jsonl"}}}
  - name: plain
    command: exec sleep 60
""")


@pytest.fixture
def api(setup: tuple[HttpApi, DaemonProcess]) -> HttpApi:
    return setup[0]


def live(api: HttpApi, query: str = "") -> list[str]:
    return [r["name"] for r in api.get(f"/services{query}").body]


def launch(api: HttpApi, name: str) -> dict[str, Any]:
    api.post(f"/apps/{name}/launch")
    return api.wait_state(name, "ready")


def static_record(port: int) -> dict[str, Any]:
    return {"name": "Static-API", "type": "_http._tcp", "app": "static", "host": "127.0.0.1",
            "port": port, "txt": {"version": "1"}}


class TestLiveness:
    def test_a_service_is_live_only_while_its_app_runs(self, api: HttpApi,
                                                       quiet_port: int) -> None:
        assert api.get("/services").body == []
        assert api.get("/services/resolve?name=static-api").status == 404
        launch(api, "static")
        assert api.get("/services").body == [static_record(quiet_port)]
        resolved = api.get("/services/resolve?name=STATIC-api")  # case-insensitive
        assert (resolved.status, resolved.body) == (200, static_record(quiet_port))
        api.post("/apps/static/stop")
        api.wait_state("static", "stopped")
        assert live(api) == []
        missing = api.get("/services/resolve?name=static-api")
        assert (missing.status, missing.body["code"]) == (404, "not_found")
        assert "no live service named 'static-api'" in missing.body["error"]
        launch(api, "static")
        assert live(api) == ["Static-API"]

    def test_services_filter_by_type(self, api: HttpApi) -> None:
        launch(api, "static")
        launch(api, "other")
        assert live(api) == ["other-ssh", "Static-API"]
        assert live(api, "?type=_http._tcp") == ["Static-API"]
        assert live(api, "?type=_SSH._tcp") == ["other-ssh"]
        assert live(api, "?type=_ipp._tcp") == []

    def test_kill_9_withdraws_the_record_within_50_ms(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        events = open_stream("/events/stream", "type=service_removed")
        pid = launch(api, "static")["pid"]
        assert live(api) == ["Static-API"]
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        removed = events.events(1)[0]
        arrived = time.time()
        withdrawn = datetime.fromisoformat(removed.data["at"].replace("Z", "+00:00"))
        assert removed.data["name"] == "Static-API"
        assert withdrawn.timestamp() - killed < 0.05, withdrawn.timestamp() - killed
        assert arrived - killed < 0.5  # and a reader hears of it at once (a loose bound)
        assert live(api) == []
        assert api.app("static")["state"] == "failed"

    def test_changes_are_events_on_the_event_stream(
        self, api: HttpApi, open_stream: Callable[..., SseClient], quiet_port: int
    ) -> None:
        events = open_stream("/events/stream", "type=service_found&type=service_removed&app=static")
        launch(api, "other")  # another app's: filtered out by app=
        launch(api, "static")
        api.post("/apps/static/stop")
        found, removed = events.events(2)
        assert (found.type, removed.type) == ("service_found", "service_removed")
        for event in (found, removed):
            assert {k: v for k, v in event.data.items() if k != "at"} == static_record(
                quiet_port)


class TestBrowse:
    def test_an_app_registering_on_launch_is_found_by_another_through_browse(
        self, api: HttpApi, tmp_path: Path
    ) -> None:
        """Two real apps: ``web`` offers a service in its launched notification, ``finder``
        browses with client.py and sees it come and go."""
        out = tmp_path / "found.jsonl"
        launch(api, "finder")
        launch(api, "web")
        found = wait_for(lambda: json_lines(out), 10, what="the finder to see web-api")[0]["found"]
        assert (found["name"], found["app"], found["txt"]) == ("web-api", "web", {"path": "/"})
        with urllib.request.urlopen(f"http://127.0.0.1:{found['port']}/") as answer:
            assert answer.read() == b"ok"  # the port it found is the one web serves
        api.post("/apps/web/stop")
        lines = wait_for(lambda: (got := json_lines(out)) and len(got) == 2 and got, 10,
                         what="the finder to see web-api go")
        assert lines[1] == {"removed": found}

    def test_a_browse_starts_with_the_live_records_then_follows_changes(
        self, api: HttpApi, open_stream: Callable[..., SseClient], quiet_port: int
    ) -> None:
        launch(api, "static")
        browse = open_stream("/services/browse", "type=_http._tcp&idle_for=0")
        first = browse.events(1)[0]
        assert (first.type, first.data) == ("found", static_record(quiet_port))
        launch(api, "other")  # _ssh._tcp: not this browse's type
        api.post("/apps/static/stop")
        removed = browse.events(1)[0]
        assert (removed.type, removed.data) == ("removed", static_record(quiet_port))
        api.wait_state("static", "stopped")
        launch(api, "static")
        assert browse.events(1)[0].type == "found"

    def test_idle_for(self, api: HttpApi, open_stream: Callable[..., SseClient]) -> None:
        started = time.monotonic()
        short = open_stream("/services/browse", "type=_http._tcp&idle_for=0.3")
        assert short.next() is None
        assert 0.25 <= time.monotonic() - started < 3

    def test_a_browse_without_idle_for_closes_after_five_quiet_seconds(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        started = time.monotonic()
        default = open_stream("/services/browse", "type=_http._tcp")
        forever = open_stream("/services/browse", "type=_http._tcp&idle_for=0")
        assert default.next(timeout=15) is None
        assert 4.9 <= time.monotonic() - started < 10
        with pytest.raises(TimeoutError):
            forever.next(timeout=0.5)  # a window past 5 s in which idle_for=0 stays open

    @pytest.mark.parametrize(("path", "fragment"), [
        ("/services?type=http", "is no service type"),
        ("/services?kind=x", "unknown query parameter"),
        ("/services/browse?type=_http", "is no service type"),
        ("/services/browse?idle_for=-1", "idle_for"),
        ("/services/resolve", "name: give the service's name"),
        ("/services/resolve?name=", "name: give the service's name"),
        ("/services/resolve?name=a&name=b", "name: give the service's name"),
    ])
    def test_bad_queries_are_400(self, api: HttpApi, path: str, fragment: str) -> None:
        reply = api.get(path)
        assert reply.status == 400 and fragment in reply.body["error"], reply.body


class TestDeclaring:
    def test_put_replaces_the_list_at_once_and_it_outlives_a_restart(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        launch(api, "other")
        browse = open_stream("/services/browse", "idle_for=0")
        assert [e.data["name"] for e in browse.events(1)] == ["other-ssh"]
        reply = api.call("PUT", "/apps/other/services", {"services": [
            {"name": "other-web", "type": "_http._tcp", "port": 8081}]})
        assert reply.status == 200
        assert reply.body["services"] == [
            {"name": "other-web", "type": "_http._tcp", "port": 8081, "txt": {}}]
        assert [r["name"] for r in reply.body["live"]] == ["other-web"]
        assert [(e.type, e.data["name"]) for e in browse.events(2)] == [
            ("removed", "other-ssh"), ("found", "other-web")]
        api.post("/apps/other/restart")
        assert [(e.type, e.data["name"]) for e in browse.events(2)] == [
            ("removed", "other-web"), ("found", "other-web")]
        bare = api.call("PUT", "/apps/other/services", [])  # a bare list is the list
        assert (bare.status, bare.body["live"]) == (200, [])
        assert live(api) == []

    def test_a_stopped_app_declares_for_its_next_run(self, api: HttpApi) -> None:
        reply = api.call("PUT", "/apps/plain/services",
                         [{"name": "plain-api", "type": "_http._tcp", "port": 9999}])
        assert (reply.status, reply.body["live"]) == (200, [])
        assert live(api) == []
        launch(api, "plain")
        assert live(api) == ["plain-api"]
        assert api.get("/apps/plain/services").body["live"][0]["port"] == 9999

    def test_the_launched_notification_declares_services(self, api: HttpApi) -> None:
        reply = api.post("/apps/plain/launched", {"services": [
            {"name": "plain-api", "type": "_http._tcp", "port": 9998}]})
        assert (reply.status, reply.body["state"]) == (200, "launched")
        assert live(api) == ["plain-api"]

    @pytest.mark.parametrize(("body", "status", "fragment"), [
        ([{"name": "static-api", "type": "_http._tcp", "port": 1}], 409,
         "service name 'static-api' is taken by app 'static'"),
        ([{"name": "x", "type": "_http._tcp", "port": 0}], 400, "0 is not a port (1-65535)"),
        ([{"name": "x", "type": "_http._tcp", "port": 65536}], 400, "65536 is not a port"),
        ([{"name": "x", "type": "_http._tcp", "port": "80"}], 400, "expected an integer"),
        ([{"name": "x", "type": "http", "port": 80}], 400, "must look like _http._tcp"),
        ([{"name": "", "type": "_http._tcp", "port": 80}], 400, "must be 1 to 63"),
        ([{"name": "x", "type": "_http._tcp", "port": 80}] * 2, 400, "in the list twice"),
        ([{"name": "x", "type": "_http._tcp"}], 400, "port: required field missing"),
        ([{"name": "x", "type": "_http._tcp", "port": 80, "ttl": 1}], 400, "unknown field"),
        ([{"name": "x", "type": "_http._tcp", "port": 80, "txt": {"a=b": "c"}}], 400,
         "without '='"),
        ({"services": "x"}, 400, "services"),
        ("x", 400, "expected a JSON object"),
    ])
    def test_errors_change_nothing(self, api: HttpApi, body: Any, status: int,
                                   fragment: str) -> None:
        launch(api, "plain")
        reply = api.call("PUT", "/apps/plain/services", body)
        assert reply.status == status and fragment in reply.body["error"], reply.body
        launched = api.post("/apps/plain/launched", {"services": body} if isinstance(
            body, list) else {"services": [body]})
        assert launched.status == status if isinstance(body, list) else launched.status == 400
        assert api.get("/apps/plain/services").body == {"app": "plain", "services": [],
                                                        "live": []}
        assert live(api) == []

    def test_a_name_live_elsewhere_is_409(self, api: HttpApi) -> None:
        launch(api, "web")
        wait_for(lambda: live(api) == ["web-api"], what="web to offer web-api")
        reply = api.call("PUT", "/apps/plain/services",
                         [{"name": "WEB-api", "type": "_http._tcp", "port": 1}])
        assert (reply.status, reply.body["code"]) == (409, "conflict")
        assert "taken by app 'web'" in reply.body["error"]

    def test_a_reload_that_changes_a_manifest_changes_the_live_record(
        self, api: HttpApi, config_dir: Path, open_stream: Callable[..., SseClient]
    ) -> None:
        launch(api, "other")
        events = open_stream("/events/stream", "type=service_found&type=service_removed")
        text = (config_dir / "config.yml").read_text()
        write_config(config_dir, text.replace("port: 2222", "port: 2223"))
        assert api.post("/reload").status == 200
        removed, found = events.events(2)
        assert (removed.type, removed.data["port"]) == ("service_removed", 2222)
        assert (found.type, found.data["port"]) == ("service_found", 2223)
        assert api.get("/services/resolve?name=other-ssh").body["port"] == 2223

    def test_unknown_apps_are_404(self, api: HttpApi) -> None:
        assert api.get("/apps/ghost/services").status == 404
        assert api.call("PUT", "/apps/ghost/services", []).status == 404
