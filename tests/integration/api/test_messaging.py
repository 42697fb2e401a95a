"""Apps talking through a real daemon (issue 15): published events and messages to an app's
inbox, with real sockets and real app processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestratr.api.openapi import document
from orchestratr.api.routes import Api
from orchestratr.api.server import ApiServer
from orchestratr.api.sse import StreamSettings
from orchestratr.registry.model import AppSpec
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.states import Cause
from tests.conftest import PYTHON, DaemonProcess, wait_for
from tests.integration.api.conftest import HttpApi, NoConfig, SseClient, SseEvent, json_lines

# ``reader`` is a real app: it reads its inbox with client.py and writes each message it gets
# to the file named by $INBOX_OUT (one JSON line each).
READER = """\
import json, os, sys
from orchestratr import client
with open(os.environ["INBOX_OUT"], "a") as out:
    for message in client.inbox("reader"):
        out.write(json.dumps(message) + "\\n")
        out.flush()
"""


def config(tmp_path: Path) -> str:
    script = tmp_path / "reader.py"
    script.write_text(READER)
    return f"""\
apps:
  - name: espansr
    command: sleep 60
  - name: notes
    command: sleep 60
  - name: reader
    command: {PYTHON} {script}
    env: {{INBOX_OUT: {tmp_path / "inbox.jsonl"}}}
"""


@pytest.fixture
def talk(serve: Callable[..., tuple[HttpApi, DaemonProcess]],
         tmp_path: Path) -> tuple[HttpApi, DaemonProcess]:
    return serve(config(tmp_path))


@pytest.fixture
def api(talk: tuple[HttpApi, DaemonProcess]) -> HttpApi:
    return talk[0]


def publish(api: HttpApi, source: str, type_: str, data: Any = None) -> Any:
    body: dict[str, Any] = {"source": source, "type": type_}
    if data is not None:
        body["data"] = data
    return api.post("/events", body)


def message(api: HttpApi, to: str, data: Any, sender: str | None = "espansr",
            launch: bool | None = None) -> Any:
    body: dict[str, Any] = {"data": data}
    if sender is not None:
        body["from"] = sender
    if launch is not None:
        body["launch"] = launch
    return api.post(f"/apps/{to}/message", body)


class TestPublishedEvents:
    def test_an_event_goes_out_on_the_stream_and_the_poll_with_source_and_data(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        stream = open_stream(query="type=sync_complete")
        reply = publish(api, "espansr", "sync_complete", {"files": 3})
        assert reply.status == 202 and set(reply.body) == {"id"}
        event = stream.events(1)[0]
        assert (event.type, event.id) == ("sync_complete", reply.body["id"])
        assert event.data["source"] == "espansr" and event.data["data"] == {"files": 3}
        assert event.data["at"].endswith("Z")
        polled = api.get("/events?type=sync_complete").body
        assert [(e["id"], e["data"]["source"], e["data"]["data"]) for e in polled] == [
            (reply.body["id"], "espansr", {"files": 3})]

    def test_a_type_filter_gets_every_apps_event_and_source_repeats(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        by_type = open_stream(query="type=sync_complete")
        both = open_stream(query="source=notes&source=espansr")
        one = open_stream(query="source=Notes")  # app names are case-insensitive
        first = publish(api, "espansr", "sync_complete").body["id"]
        second = publish(api, "notes", "sync_complete", {}).body["id"]
        publish(api, "notes", "saved")
        assert [(e.id, e.data["source"]) for e in by_type.events(2)] == [
            (first, "espansr"), (second, "notes")]
        assert [e.type for e in both.events(3)] == ["sync_complete", "sync_complete", "saved"]
        assert [(e.id, e.type) for e in one.events(2)] == [(second, "sync_complete"),
                                                            (second + 1, "saved")]
        polled = api.get("/events?source=notes&type=sync_complete").body
        assert [e["id"] for e in polled] == [second]
        polled = api.get("/events?source=espansr&source=notes").body
        assert [e["type"] for e in polled] == ["sync_complete", "sync_complete", "saved"]

    def test_an_event_may_carry_nearly_a_mebibyte(self, api: HttpApi) -> None:
        reply = publish(api, "espansr", "big", {"blob": "x" * 1_000_000})
        assert reply.status == 202
        assert len(api.get("/events?type=big").body[0]["data"]["data"]["blob"]) == 1_000_000

    @pytest.mark.parametrize(("body", "status", "fragment"), [
        ({"source": "espansr", "type": "state"}, 400, "one of orchestratr's own event types"),
        ({"source": "espansr", "type": "service_found"}, 400, "reload_failed"),
        ({"source": "espansr", "type": "reset"}, 400, "own event types"),
        ({"source": "espansr", "type": "Sync Complete"}, 400, "must match"),
        ({"source": "espansr", "type": "x" * 65}, 400, "must match"),
        ({"source": "espansr", "type": "_x"}, 400, "must match"),
        ({"source": "espansr", "type": "a", "data": [1]}, 400, "data: expected a JSON object"),
        ({"source": "espansr", "type": "a", "data": "text"}, 400, "data: expected a JSON object"),
        ({"source": "espansr"}, 400, "type: required field missing"),
        ({"type": "a"}, 400, "source: required field missing"),
        ({"source": "espansr", "type": "a", "extra": 1}, 400, "unknown field"),
        ({"source": "ghost", "type": "sync_complete"}, 404, "no app 'ghost' is registered"),
    ])
    def test_errors(self, api: HttpApi, body: Any, status: int, fragment: str) -> None:
        reply = api.post("/events", body)
        assert reply.status == status and fragment in reply.body["error"], reply.body
        assert api.get("/events?source=espansr&source=ghost").body == []  # nothing published

    def test_a_body_over_the_limit_is_413(self, api: HttpApi) -> None:
        reply = publish(api, "espansr", "big", {"blob": "x" * (1024 * 1024)})
        assert (reply.status, reply.body["code"]) == (413, "payload_too_large")

    def test_a_stream_filter_on_a_type_that_cannot_be_is_400(self, api: HttpApi) -> None:
        for path in ("/events/stream", "/events"):
            reply = api.get(f"{path}?type=Not%20A%20Type")
            assert reply.status == 400 and "is no event type" in reply.body["error"]
            reply = api.get(f"{path}?source=a%2Fb")
            assert reply.status == 400 and "source: invalid app name" in reply.body["error"]


class TestMessages:
    def test_a_message_reaches_an_open_inbox(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        inbox = open_stream("/apps/notes/messages")
        assert (inbox.status, inbox.headers["content-type"]) == (200, "text/event-stream")
        reply = message(api, "notes", {"text": "hi"})
        assert reply.status == 202 and reply.body == {"id": reply.body["id"], "delivered": 1}
        got = inbox.events(1)[0]
        assert (got.type, got.id) == ("message", reply.body["id"])
        assert set(got.data) == {"id", "from", "data", "at"}
        assert (got.data["id"], got.data["from"], got.data["data"]) == (
            reply.body["id"], "espansr", {"text": "hi"})
        assert api.app("notes")["state"] == "stopped"  # a message launches nothing by itself

    def test_delivered_counts_the_readers_connected_now(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        assert message(api, "notes", 1).body["delivered"] == 0
        readers = [open_stream("/apps/notes/messages", "since=0") for _ in range(3)]
        for reader in readers:
            reader.events(1)  # each is subscribed once it has the backlog
        assert message(api, "notes", 2).body["delivered"] == 3

    def test_a_message_to_a_stopped_app_waits_until_it_is_read(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        """A reader without an id gets what no reader was sent yet, and only that."""
        ids = [message(api, "notes", n).body["id"] for n in range(3)]
        first = open_stream("/apps/notes/messages", "idle_for=0.5")
        assert [e.id for e in first.events(3)] == ids
        assert first.next() is None  # idle_for ended it
        later = message(api, "notes", "later").body["id"]
        second = open_stream("/apps/notes/messages", "idle_for=0.5")
        assert [e.id for e in second.events(1)] == [later]
        assert second.next() is None

    @pytest.mark.parametrize("how", ["header", "query"])
    def test_a_reader_resumes_after_its_last_id(
        self, api: HttpApi, open_stream: Callable[..., SseClient], how: str
    ) -> None:
        inbox = open_stream("/apps/notes/messages")
        ids = [message(api, "notes", n).body["id"] for n in range(3)]
        assert [e.id for e in inbox.events(3)] == ids
        inbox.close()
        ids += [message(api, "notes", n).body["id"] for n in (3, 4)]
        again = (open_stream("/apps/notes/messages", Last_Event_ID=str(ids[0])) if how == "header"
                 else open_stream("/apps/notes/messages", f"since={ids[0]}"))
        assert [(e.id, e.data["data"]) for e in again.events(4)] == list(
            zip(ids[1:], range(1, 5), strict=True))
        live = message(api, "notes", "live").body["id"]
        assert again.events(1)[0].id == live

    def test_poll_lists_the_messages_after_an_id(self, api: HttpApi) -> None:
        ids = [message(api, "notes", n).body["id"] for n in range(4)]
        polled = api.get(f"/apps/notes/messages?poll=true&since={ids[1]}")
        assert polled.status == 200
        assert [(m["id"], m["from"], m["data"]) for m in polled.body] == [
            (ids[2], "espansr", 2), (ids[3], "espansr", 3)]
        assert [m["id"] for m in api.get("/apps/notes/messages?poll=true&since=0").body] == ids
        assert api.get(f"/apps/notes/messages?poll=true&since={ids[-1]}").body == []
        # without an id: the unread ones, which are then read
        assert [m["id"] for m in api.get("/apps/notes/messages?poll=true").body] == ids
        assert api.get("/apps/notes/messages?poll=true").body == []

    def test_the_inbox_keeps_the_last_thousand(
        self, api: HttpApi, open_stream: Callable[..., SseClient]
    ) -> None:
        ids = [message(api, "notes", n).body["id"] for n in range(1005)]
        kept = api.get("/apps/notes/messages?poll=true&since=0&limit=10000").body
        assert [m["id"] for m in kept] == ids[5:]
        assert kept[0]["data"] == 5
        behind = open_stream("/apps/notes/messages", f"since={ids[0]}")
        reset = behind.events(1)[0]
        assert reset.type == "reset" and "no longer in the inbox" in reset.data["error"]
        assert behind.events(1)[0].id == ids[5]

    def test_the_inbox_outlives_the_receivers_restart(self, api: HttpApi) -> None:
        sent = message(api, "notes", "before").body["id"]
        api.post("/apps/notes/launch")
        api.wait_state("notes", "ready")
        api.post("/apps/notes/restart")
        api.wait_state("notes", "ready")
        during = message(api, "notes", "running").body["id"]
        api.post("/apps/notes/stop")
        api.wait_state("notes", "stopped")
        kept = api.get("/apps/notes/messages?poll=true&since=0").body
        assert [m["id"] for m in kept] == [sent, during]

    def test_a_message_from_nobody_is_allowed(self, api: HttpApi) -> None:
        reply = message(api, "notes", {"x": 1}, sender=None)
        assert reply.status == 202
        assert api.get("/apps/notes/messages?poll=true&since=0").body[0]["from"] is None

    @pytest.mark.parametrize(("path", "body", "status", "fragment"), [
        ("/apps/ghost/message", {"from": "espansr", "data": 1}, 404, "app 'ghost' not found"),
        ("/apps/notes/message", {"from": "ghost", "data": 1}, 404,
         "from: no app 'ghost' is registered"),
        ("/apps/notes/message", {"from": 3}, 400, "from: expected a string"),
        ("/apps/notes/message", {"launch": "yes"}, 400, "launch: expected true or false"),
        ("/apps/notes/message", {"to": "x"}, 400, "unknown field"),
        ("/apps/notes/message", [1], 400, "expected a JSON object"),
        ("/apps/a%2Fb/message", {}, 400, "invalid app name"),
    ])
    def test_errors(self, api: HttpApi, path: str, body: Any, status: int,
                    fragment: str) -> None:
        reply = api.post(path, body)
        assert reply.status == status and fragment in reply.body["error"], reply.body
        assert api.get("/apps/notes/messages?poll=true&since=0").body == []

    @pytest.mark.parametrize(("query", "status", "fragment"), [
        ("", 404, "app 'ghost' not found"),
        ("?poll=true", 404, "app 'ghost' not found"),
    ])
    def test_the_inbox_of_an_unknown_app_is_404(
        self, api: HttpApi, query: str, status: int, fragment: str
    ) -> None:
        reply = api.get(f"/apps/ghost/messages{query}")
        assert reply.status == status and fragment in reply.body["error"]

    @pytest.mark.parametrize(("query", "fragment"), [
        ("poll=maybe", "poll: expected true or false"), ("since=x", "since: expected a number"),
        ("type=state", "unknown query parameter"), ("poll=true&idle_for=1", "unknown query"),
        ("limit=5", "unknown query parameter"),
    ])
    def test_bad_inbox_parameters_are_400(self, api: HttpApi, query: str, fragment: str) -> None:
        reply = api.get(f"/apps/notes/messages?{query}")
        assert reply.status == 400 and fragment in reply.body["error"]

    def test_sender_and_receiver_are_in_the_log(self, talk: tuple[HttpApi, DaemonProcess]
                                                ) -> None:
        api, daemon = talk
        sent = message(api, "Notes", "hello").body["id"]
        logged = daemon.wait_event("message_sent", sender="espansr", receiver="notes")
        assert (logged["id"], logged["delivered"], logged["launched"]) == (sent, 0, False)

    def test_a_refused_message_names_sender_and_receiver_in_the_log_too(
        self, talk: tuple[HttpApi, DaemonProcess]
    ) -> None:
        api, daemon = talk
        assert api.post("/apps/notes/message", {"from": "stranger", "data": 1}).status == 404
        refused = daemon.wait_event("message_refused", sender="stranger", receiver="notes")
        assert "stranger" in str(refused["error"])
        assert api.post("/apps/nowhere/message", {"from": "espansr", "data": 1}).status == 404
        daemon.wait_event("message_refused", sender="espansr", receiver="nowhere")


class TestActivation:
    def test_launch_true_starts_a_stopped_receiver_which_reads_the_message(
        self, api: HttpApi, tmp_path: Path
    ) -> None:
        """The receiver is a real Python app reading its inbox with client.py."""
        assert api.app("reader")["state"] == "stopped"
        reply = message(api, "reader", {"task": "sync"}, launch=True)
        assert reply.status == 202
        assert reply.body == {"id": reply.body["id"], "delivered": 0, "launched": True}
        out = tmp_path / "inbox.jsonl"
        got = wait_for(lambda: json_lines(out), 10, what="the reader to write its message")
        assert got == [{"id": reply.body["id"], "from": "espansr", "data": {"task": "sync"},
                        "at": got[0]["at"]}]
        assert api.app("reader")["state"] == "ready"
        # once running, launch: true launches nothing more; the app reads it live
        again = message(api, "reader", "more", launch=True)
        assert again.body == {"id": again.body["id"], "delivered": 1}
        wait_for(lambda: len(json_lines(out)) == 2, 10, what="the second message")

    def test_without_launch_a_stopped_receiver_stays_stopped(self, api: HttpApi) -> None:
        reply = message(api, "reader", "later", launch=False)
        assert reply.body == {"id": reply.body["id"], "delivered": 0}
        time.sleep(0.3)  # a window in which nothing may launch it
        assert api.app("reader")["state"] == "stopped"



def test_a_quiet_inbox_gets_keep_alive_comments(
    make_supervisor: Callable[..., Supervisor]
) -> None:
    """The inbox is the event stream's machinery: keep-alive included (0.2 s here, in-process,
    as test_events does for the event stream)."""
    supervisor = make_supervisor(AppSpec("a", "sleep 60"))
    server = ApiServer(Api(supervisor, NoConfig(), None, document, None,  # type: ignore[arg-type]
                           streams=StreamSettings(keepalive_s=0.2)), 0)
    server.start()
    try:
        reader = SseClient(server.port, path="/apps/a/messages")
        keep_alive = SseEvent("comment", None, "keep-alive")
        assert [reader.next(timeout=2) for _ in range(2)] == [keep_alive] * 2
        supervisor.send("a", "a", {"n": 1}, launch=False, cause=Cause.api)
        assert reader.events(1)[0].data["data"] == {"n": 1}
        reader.close()
    finally:
        server.stop()
