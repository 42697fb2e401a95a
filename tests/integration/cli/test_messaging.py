"""``publish``, ``send``, ``inbox``, ``services``, ``resolve``, ``browse``, their pipe requests,
doctor's service check and client.py's resuming inbox, against real daemons (issue 15)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestratr.client import Client
from tests.conftest import PYTHON, DaemonProcess, wait_for, write_config
from tests.integration.cli.conftest import ORCHESTRATR, Shared, clean_env, serving

WEB = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from orchestratr import client
server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
client.notify_launched("web", pid=os.getpid(), services=[
    {"name": "web-api", "type": "_http._tcp", "port": server.server_port, "txt": {"v": "2"}}])
server.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(tmp: Path, quiet_port: int) -> str:
    (tmp / "web.py").write_text(WEB)
    return f"""\
apps:
  - name: espansr
    command: exec sleep 60
  - name: notes
    command: exec sleep 60
  - name: web
    command: exec {PYTHON} {tmp / "web.py"}
  - name: quiet
    command: exec sleep 60
    services: [{{name: quiet-api, type: _http._tcp, port: {quiet_port}}}]
"""


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One daemon for the module; tests that need a clean inbox use their own app."""
    tmp = tmp_path_factory.mktemp("talk")
    with serving(tmp / "config", config(tmp, free_port())) as shared:
        yield shared


def client_of(shared: Shared) -> Client:
    return Client(config_dir=shared.config_dir)


def running(shared: Shared, name: str) -> None:
    shared.cli("launch", name)
    wait_for(lambda: client_of(shared).app(name)["state"] == "ready", what=f"{name} ready")


def follow(shared: Shared, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*ORCHESTRATR, "--config-dir", str(shared.config_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())


def ended(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=10)


class TestPublish:
    def test_publish_and_read_it_back(self, talk: Shared) -> None:
        run = talk.cli("publish", "espansr", "sync_complete", '{"files": 2}')
        assert run.code == 0, run.err
        event_id = int(run.out.split("#")[1].rstrip(")\n"))
        assert run.out == f"published sync_complete from espansr (#{event_id})\n"
        as_json = talk.cli("--json", "publish", "espansr", "sync_complete")
        assert set(as_json.json) == {"id"}
        listed = talk.cli("--json", "events", "--source", "espansr", "--type", "sync_complete")
        records = [json.loads(line) for line in listed.lines]
        assert [(r["id"], r["source"], r["data"]) for r in records] == [
            (event_id, "espansr", {"files": 2}), (as_json.json["id"], "espansr", {})]
        text = talk.cli("events", "--source", "espansr")
        assert "sync_complete  espansr  {\"files\": 2}" in text.out

    @pytest.mark.parametrize(("args", "code", "fragment"), [
        (("espansr", "t", "{nope"), 2, "DATA is not JSON"),
        (("espansr", "t", "[1]"), 2, "DATA must be a JSON object"),
        (("ghost", "t"), 1, "no app 'ghost' is registered"),
        (("espansr", "state"), 1, "one of orchestratr's own event types"),
        (("espansr", "Bad Type"), 1, "must match"),
    ])
    def test_errors(self, talk: Shared, args: tuple[str, ...], code: int, fragment: str) -> None:
        run = talk.cli("publish", *args)
        assert run.code == code and fragment in run.err, run


class TestMessages:
    def test_send_and_read_the_inbox(self, talk: Shared) -> None:
        run = talk.cli("send", "notes", '{"text": "hi"}', "--from", "espansr")
        assert run.code == 0, run.err
        assert run.out.startswith("sent to notes (#") and "kept in its inbox" in run.out
        sent = talk.cli("--json", "send", "notes", '"second"')
        assert sent.json == {"id": sent.json["id"], "delivered": 0}
        listed = talk.cli("inbox", "notes")
        assert "from espansr  {\"text\": \"hi\"}" in listed.lines[0]
        assert "from -  \"second\"" in listed.lines[1]
        as_json = [json.loads(line) for line in talk.cli("--json", "inbox", "notes").lines]
        assert as_json[1] == {"id": sent.json["id"], "from": None, "data": "second",
                              "at": as_json[1]["at"]}
        after = talk.cli("--json", "inbox", "notes", "--since", str(as_json[0]["id"]))
        assert [json.loads(line)["id"] for line in after.lines] == [sent.json["id"]]

    def test_send_launch_starts_the_receiver(self, talk: Shared) -> None:
        run = talk.cli("send", "espansr", "{}", "--from", "notes", "--launch")
        assert run.code == 0, run.err
        assert run.out.rstrip().endswith("; espansr launched")
        assert client_of(talk).app("espansr")["state"] in ("launched", "ready")
        talk.cli("stop", "espansr", "--wait")

    def test_inbox_follow_prints_new_messages(self, talk: Shared) -> None:
        client = client_of(talk)
        client.register({"name": "followed", "command": "sleep 60"})
        first = client.send("followed", {"n": 1})["id"]
        proc = follow(talk, "--json", "inbox", "followed", "-f")
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["id"] == first
            wait_for(lambda: client.send("followed", {"n": 2})["delivered"] == 1,
                     what="the follower to be connected")
            assert json.loads(proc.stdout.readline())["data"] == {"n": 2}
        finally:
            ended(proc)
            client.unregister("followed")

    @pytest.mark.parametrize(("args", "code", "fragment"), [
        (("send", "ghost", "{}"), 1, "app 'ghost' not found"),
        (("send", "notes", "{}", "--from", "ghost"), 1, "from: no app 'ghost'"),
        (("send", "notes", "{oops"), 2, "DATA is not JSON"),
        (("inbox", "ghost"), 1, "app 'ghost' not found"),
    ])
    def test_errors(self, talk: Shared, args: tuple[str, ...], code: int, fragment: str) -> None:
        run = talk.cli(*args)
        assert run.code == code and fragment in run.err, run


class TestServices:
    def test_services_resolve_and_browse(self, talk: Shared) -> None:
        assert talk.cli("services").out == "no live services\n"
        running(talk, "web")
        wait_for(lambda: client_of(talk).services(), what="web-api to be live")
        record = client_of(talk).resolve("web-api")
        table = talk.cli("services", "--type", "_http._tcp").lines
        assert table[0].split() == ["NAME", "TYPE", "APP", "ADDRESS", "TXT"]
        assert table[1].split() == ["web-api", "_http._tcp", "web",
                                    f"127.0.0.1:{record['port']}", "v=2"]
        assert talk.cli("--json", "services").json == [record]
        assert talk.cli("services", "--type", "_ipp._tcp").out == (
            "no live services of type _ipp._tcp\n")
        assert talk.cli("--json", "resolve", "WEB-API").json == record
        assert talk.cli("resolve", "web-api").out == (
            f"web-api  _http._tcp  127.0.0.1:{record['port']}  app web  v=2\n")
        missing = talk.cli("resolve", "nope")
        assert missing.code == 1 and "no live service named 'nope'" in missing.err
        browsed = talk.cli("--json", "browse", "_http._tcp")
        assert [json.loads(line) for line in browsed.lines] == [{"found": record}]
        assert talk.cli("browse", "_http._tcp").out.split()[0] == "found"
        bad = talk.cli("browse", "http")
        assert bad.code == 1 and "is no service type" in bad.err

    def test_browse_follow_sees_services_come_and_go(self, talk: Shared) -> None:
        proc = follow(talk, "--json", "browse", "_http._tcp", "-f")
        try:
            assert proc.stdout is not None
            talk.cli("stop", "quiet", "--wait")
            running(talk, "quiet")
            found = json.loads(proc.stdout.readline())
            while found["found"]["name"] != "quiet-api":  # web-api, if it runs already
                found = json.loads(proc.stdout.readline())
            talk.cli("stop", "quiet")
            assert json.loads(proc.stdout.readline()) == {"removed": found["found"]}
        finally:
            ended(proc)

    def test_doctor_warns_of_a_service_nothing_listens_on(self, talk: Shared) -> None:
        running(talk, "web")
        running(talk, "quiet")
        wait_for(lambda: len(client_of(talk).services()) == 2, what="both services live")
        run = talk.cli("--json", "doctor")
        verdicts = {c["name"]: (c["status"], c["message"]) for c in run.json["checks"]}
        port = client_of(talk).resolve("quiet-api")["port"]
        assert verdicts["service quiet-api"] == (
            "WARN", f"nothing listens on 127.0.0.1:{port}, which app quiet offers as "
                    "_http._tcp")
        status, message = verdicts["service web-api"]
        assert status == "PASS" and message.startswith("app web listens on 127.0.0.1:")
        talk.cli("stop", "quiet", "--wait")
        assert "service quiet-api" not in {c["name"] for c in talk.cli(
            "--json", "doctor").json["checks"]}


class TestPipe:
    def pipe(self, shared: Shared, *requests: Any) -> list[dict[str, Any]]:
        run = shared.cli("pipe", input="".join(json.dumps(r) + "\n" for r in requests))
        assert run.code == 0 and run.err == "", run
        return [json.loads(line) for line in run.lines]

    def test_publish_send_inbox_resolve(self, talk: Shared) -> None:
        client = client_of(talk)
        client.register({"name": "piped", "command": "sleep 60"})
        try:
            replies = self.pipe(
                talk,
                {"publish": {"source": "espansr", "type": "sync_complete", "data": {"a": 1}}},
                {"send": {"to": "piped", "from": "espansr", "data": {"n": 1}}},
                {"send": {"name": "piped", "data": 2}},
                {"inbox": "piped"},
                {"resolve": "nope"},
                {"publish": "x"},
            )
        finally:
            client.unregister("piped")
        published, sent, sent2, *rest = replies
        assert set(published) == {"published"} and set(published["published"]) == {"id"}
        assert sent == {"sent": {"id": sent["sent"]["id"], "delivered": 0}}
        messages = [r for r in rest if isinstance(r.get("message"), dict)]
        assert [(m["message"]["id"], m["message"]["data"], m["status"]) for m in messages] == [
            (sent["sent"]["id"], {"n": 1}, "ongoing"), (sent2["sent"]["id"], 2, "ongoing")]
        others = [r for r in rest if r not in messages]
        assert {"inbox": "piped", "status": "finished"} in others
        assert any(r.get("error") == "not_found" and "nope" in r["message"] for r in others)
        assert any(r.get("error") == "bad_request" and "publish" in r["message"]
                   for r in others)

    def test_subscribe_filters_by_source_and_keeps_each_event_type(self, talk: Shared) -> None:
        """A service record's own ``type`` once replaced the event's (``service_found`` read
        ``_http._tcp``), in the pipe and in ``events``; ``source`` was ignored by the pipe."""
        talk.cli("stop", "quiet", "--wait")
        replies = self.pipe(
            talk,
            {"subscribe": "*", "type": "sync_complete", "source": ["espansr"], "idle_for": 1},
            {"subscribe": "*", "type": ["service_found"], "idle_for": 1},
            {"publish": {"source": "notes", "type": "sync_complete", "data": {"n": 1}}},
            {"publish": {"source": "espansr", "type": "sync_complete", "data": {"n": 2}}},
            {"launch": "quiet"},
        )
        events = [r["event"] for r in replies if "event" in r]
        assert [(e["type"], e["source"]) for e in events if e["type"] == "sync_complete"] == [
            ("sync_complete", "espansr")]
        [found] = [e for e in events if e["type"] == "service_found"]
        assert (found["name"], found["data_type"]) == ("quiet-api", "_http._tcp")
        printed = talk.cli("--json", "events", "--type", "service_found")
        assert printed.lines and {json.loads(line)["type"] for line in printed.lines} == {
            "service_found"}

    def test_browse_streams_with_koi_status(self, talk: Shared) -> None:
        running(talk, "web")
        wait_for(lambda: client_of(talk).services("_http._tcp"), what="web-api to be live")
        record = client_of(talk).resolve("web-api")
        replies = self.pipe(talk, {"browse": "_http._tcp", "idle_for": 0.3},
                            {"resolve": "web-api"})
        assert {"resolved": record} in replies
        assert {"found": record, "status": "ongoing"} in replies
        assert replies[-1] == {"browsed": "_http._tcp", "status": "finished"}
        assert all("status" not in r for r in replies if "resolved" in r)


def test_the_client_inbox_resumes_after_a_dropped_connection(
    config_dir: Path, start_daemon: Any
) -> None:
    """client.inbox() reconnects with the last id it got: across a daemon restart (the
    connection drops; the new daemon's inbox starts empty), it goes on with what comes next."""
    write_config(config_dir, "apps:\n  - name: notes\n    command: sleep 60\n")
    daemon: DaemonProcess = start_daemon("--no-hotkeys")
    client = Client(config_dir=config_dir)
    got: list[dict[str, Any]] = []
    messages = client.inbox("notes", retry_s=0.05)

    def read() -> None:
        for message in messages:
            got.append(message)
            if message["data"] == "two":
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: client.send("notes", "one")["delivered"] == 1, what="the reader")
    wait_for(lambda: got, what="the first message")
    daemon.stop()
    start_daemon("--no-hotkeys")
    wait_for(lambda: client.send("notes", "two")["delivered"] == 1, 10,
             what="the reader to reconnect")
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert {m["data"] for m in got} == {"one", "two"} and got[-1]["data"] == "two"
