"""The lifecycle event stream (SSE) and its polling twin, over real sockets.

Most tests talk to a real daemon. Keep-alive, overflow and buffer eviction need settings no
user would pick (a keep-alive every 0.2 s, a 5-event queue, a 5-event buffer), so those run an
ApiServer in this process over a real supervisor, still through real sockets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestratr.api.openapi import document
from orchestratr.api.routes import Api
from orchestratr.api.server import ApiServer
from orchestratr.api.sse import StreamSettings
from orchestratr.registry.model import AppSpec
from orchestratr.supervisor.bus import EventBus
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.states import Cause
from tests.conftest import DaemonProcess, wait_for
from tests.integration.api.conftest import HttpApi, NoConfig, SseClient, SseEvent, port_of


@pytest.fixture
def sse(api: HttpApi) -> Iterator[Callable[..., SseClient]]:
    clients: list[SseClient] = []

    def connect(query: str = "", **headers: str) -> SseClient:
        client = SseClient(api.port, query, {k.replace("_", "-"): v for k, v in headers.items()})
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


class TestStream:
    def test_every_transition_arrives_with_its_fields(
        self, api: HttpApi, sse: Callable[..., SseClient]
    ) -> None:
        stream = sse("app=notes")
        assert (stream.status, stream.headers["content-type"]) == (200, "text/event-stream")
        assert not any(h.startswith("access-control-") for h in stream.headers)
        api.post("/apps/notes/launch")
        events = stream.events(3)
        assert [(e.type, e.data["from"], e.data["to"]) for e in events] == [
            ("state", "stopped", "launching"), ("state", "launching", "launched"),
            ("state", "launched", "ready")]
        first = events[0].data
        assert (first["app"], first["trigger"], first["source"]) == ("notes", "launch", "api")
        assert first["at"].endswith("Z") and isinstance(first["detail"], dict)
        assert events[1].data["detail"]["pid"] == api.app("notes")["pid"]
        ids = [e.id for e in events]
        assert ids == sorted(ids) and len(set(ids)) == 3

    def test_filters_by_app_and_type(self, api: HttpApi, sse: Callable[..., SseClient]) -> None:
        failures = sse("type=launch_failed&type=registered")
        two_apps = sse("app=notes&app=SLEEPER")  # names are case-insensitive, as in paths
        for name in ("broken", "sleeper", "notes"):
            api.post(f"/apps/{name}/launch")
        failed = failures.events(1)[0]
        assert (failed.type, failed.data["app"]) == ("launch_failed", "broken")
        assert "nonexistent" in failed.data["error"]
        seen = {e.data["app"] for e in two_apps.events(6)}
        assert seen == {"notes", "sleeper"}
        api.post("/apps", {"name": "late", "command": "sleep 60"})
        assert failures.events(1)[0].type == "registered"  # nothing else came in between

    @pytest.mark.parametrize("how", ["header", "query"])
    def test_resuming_replays_what_was_missed_then_goes_live(
        self, api: HttpApi, sse: Callable[..., SseClient], how: str
    ) -> None:
        api.post("/apps/notes/launch")
        api.wait_state("notes", "ready")
        buffered = api.get("/events").body
        middle = buffered[len(buffered) // 2]["id"]
        expected = [e["id"] for e in buffered if e["id"] > middle]
        stream = sse(Last_Event_ID=str(middle)) if how == "header" else sse(f"since={middle}")
        assert [e.id for e in stream.events(len(expected))] == expected
        api.post("/apps/notes/stop")
        assert stream.events(1)[0].data["to"] == "stopping"

    def test_idle_for_closes_a_quiet_stream(self, sse: Callable[..., SseClient]) -> None:
        started = time.monotonic()
        stream = sse("idle_for=0.3")
        assert stream.next() is None
        assert 0.25 <= time.monotonic() - started < 2

    @pytest.mark.parametrize(("query", "fragment"), [
        ("type=bogus", "unknown event type 'bogus'"), ("idle_for=-1", "idle_for"),
        ("since=abc", "since: expected a number"), ("app=Bad%2FName", "invalid app name"),
        ("limit=5", "unknown query parameter"), ("since=1&since=2", "since: give it once"),
    ])
    def test_bad_parameters_are_400(self, api: HttpApi, query: str, fragment: str) -> None:
        reply = api.get(f"/events/stream?{query}")
        assert (reply.status, reply.body["code"]) == (400, "bad_request")
        assert fragment in reply.body["error"]

    def test_connecting_and_leaving_leaves_nothing_behind(self, serve: Any) -> None:
        """200 readers come and go; the daemon's threads and descriptors return to where they
        were (a reader that hangs up is noticed at once, not at the next keep-alive)."""
        api, daemon = serve()
        pid = daemon.proc.pid
        first = SseClient(api.port, "since=0")  # the hang-up watcher starts with the first
        assert first.events(1)[0].type == "reloaded"  # reader: it streams, so it runs now
        streaming = _threads(pid)
        first.close()
        wait_for(lambda: _threads(pid) < streaming, what="the first reader's thread to end")
        threads, fds = _threads(pid), _fds(pid)
        for _ in range(200):
            client = SseClient(api.port, "since=0")
            assert client.events(1)[0].type == "reloaded"
            client.close()
        wait_for(lambda: _threads(pid) <= threads and _fds(pid) <= fds, timeout=5,
                 what=f"threads {threads} and fds {fds} again")

    def test_shutdown_ends_every_stream(self, serve: Any) -> None:
        api, daemon = serve()
        readers = [SseClient(api.port) for _ in range(3)]
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 2
        assert all(reader.next() is None for reader in readers)


class TestResume:
    def test_an_id_from_an_earlier_daemon_means_reset(
        self, serve: Any, start_daemon: Callable[..., DaemonProcess], config_dir: Path
    ) -> None:
        """Ids keep growing across restarts, so a reader of the old daemon is told that it
        missed everything in between, then gets every event of the new daemon. The reset
        carries an id, so a reconnection resumes after it: a bare reset left an EventSource
        with the stale id, and each reconnection was another bare reset (events were lost)."""
        api, daemon = serve()
        old = api.get("/events").body[-1]["id"]
        daemon.stop()
        start_daemon("--no-hotkeys")
        api = HttpApi(port_of(config_dir))
        buffered = [e["id"] for e in api.get("/events").body]
        assert buffered[0] > old
        polled = api.get(f"/events?since={old}").body
        assert (polled[0]["type"], polled[0]["id"]) == ("reset", None)
        assert [e["id"] for e in polled[1:]] == buffered
        stream = SseClient(api.port, headers={"Last-Event-ID": str(old)})
        reset, *rest = stream.events(1 + len(buffered))
        assert (reset.type, reset.data["since"]) == ("reset", old)
        assert reset.id is not None and reset.id < buffered[0]
        assert [e.id for e in rest] == buffered
        api.post("/apps/notes/launch")
        assert stream.events(1)[0].data["to"] == "launching"  # then live
        stream.close()
        resumed = SseClient(api.port, headers={"Last-Event-ID": str(reset.id)})
        first = resumed.events(1)[0]
        assert (first.type, first.id) == (rest[0].type, buffered[0])  # no second reset
        resumed.close()

    def test_poll_lists_events_after_an_id(self, api: HttpApi) -> None:
        api.post("/apps/notes/launch")
        api.wait_state("notes", "ready")
        everything = api.get("/events?app=notes&type=state").body
        assert [e["data"]["to"] for e in everything] == ["launching", "launched", "ready"]
        after = api.get(f"/events?since={everything[0]['id']}&limit=1&app=notes").body
        assert [e["id"] for e in after] == [everything[1]["id"]]


class TestInProcess:
    def test_keep_alive_comments_hold_a_quiet_stream_open(self, server: Served) -> None:
        stream = SseClient(server.port)
        keep_alive = SseEvent("comment", None, "keep-alive")
        assert [stream.next(timeout=2) for _ in range(2)] == [keep_alive] * 2
        stream.close()

    def test_a_reader_that_falls_behind_gets_overflow_and_is_cut_off(
        self, server: Served
    ) -> None:
        """The stalled reader never slows publishing, nor a reader that keeps up."""
        stalled = SseClient(server.port, rcvbuf=4096)
        keeping_up = SseClient(server.port, "type=state")
        # both are subscribed: a stream subscribes before it sends its response head
        started = time.monotonic()
        for n in range(20_000):
            server.bus.publish("hotkey", action="armed", n=n)
        assert time.monotonic() - started < 2
        server.supervisor.notify_ready("a", Cause.api)
        assert keeping_up.events(1)[0].data["to"] == "ready"
        received = []
        while (event := stalled.next()) is not None:
            received.append(event)
        assert received[-1].type == "overflow" and "fell too far behind" in \
            received[-1].data["error"]
        assert 0 < len(received) < 20_000
        stalled.close()
        keeping_up.close()

    def test_a_reader_too_far_behind_the_buffer_is_told_to_reset(
        self, server: Served
    ) -> None:
        for _ in range(10):
            server.bus.publish("hotkey", action="armed")
        last = server.bus.last_id
        stream = SseClient(server.port, f"since={last - 7}")  # the buffer holds the last 5
        assert stream.events(1)[0].type == "reset"
        stream.close()
        stream = SseClient(server.port, f"since={last - 5}")
        assert [e.id for e in stream.events(5)] == list(range(last - 4, last + 1))
        stream.close()


class Served:
    def __init__(self, port: int, supervisor: Supervisor) -> None:
        self.port = port
        self.supervisor = supervisor
        self.bus = supervisor.bus


@pytest.fixture
def server(make_supervisor: Callable[..., Supervisor]) -> Iterator[Served]:
    supervisor = make_supervisor(AppSpec("a", "sleep 60"))
    supervisor.bus = EventBus(capacity=5)
    api = Api(supervisor, NoConfig(), None, document,  # type: ignore[arg-type]
              streams=StreamSettings(keepalive_s=0.2, queue_size=5))
    server = ApiServer(api, 0)
    server.start()
    yield Served(server.port, supervisor)
    server.stop()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
