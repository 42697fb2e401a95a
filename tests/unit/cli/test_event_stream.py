"""The client's SSE reader and its resume logic, over real sockets to a scripted server.

The server plays the daemon's side of ``GET /events/stream`` exactly as far as the client
depends on it: ``id:``/``event:``/``data:`` fields, ``Last-Event-ID`` on reconnect, and a
connection that can drop. The real daemon is exercised in tests/integration/cli/test_events.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestratr.client import Client, Event, NotRunningError
from tests.conftest import wait_for

HOLD = "<hold the connection open until released>"


class Script:
    """What each successive connection is sent: a list of raw SSE chunks, then a close."""

    def __init__(self, *connections: list[str]) -> None:
        self.connections = list(connections)
        self.requests: list[tuple[str, str | None]] = []  # (path, Last-Event-ID)
        self.lock = threading.Lock()
        self.release = threading.Event()


def serve(script: Script) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with script.lock:
                script.requests.append((self.path, self.headers.get("Last-Event-ID")))
                chunks = script.connections.pop(0) if script.connections else []
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for chunk in chunks:
                if chunk == HOLD:
                    script.release.wait(10)
                    continue
                self.wfile.write(chunk.encode())
                self.wfile.flush()
            self.close_connection = True  # the stream "drops" after its chunks

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    return server


def sse(event_id: int, data: dict[str, object], kind: str = "state") -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


@pytest.fixture
def daemon_dir(tmp_path: Path) -> Iterator[tuple[Path, list[ThreadingHTTPServer]]]:
    servers: list[ThreadingHTTPServer] = []
    yield tmp_path, servers
    for server in servers:
        server.shutdown()
        server.server_close()


def point_at(config_dir: Path, server: ThreadingHTTPServer, pid: int) -> None:
    (config_dir / "port").write_text(f"{server.server_address[1]}\n")
    (config_dir / "orchestratr.pid").write_text(str(pid))


def test_fields_comments_and_multi_line_data(daemon_dir: tuple[Path, list]) -> None:
    config_dir, servers = daemon_dir
    script = Script([": keep-alive\n\n", "id: 7\nevent: state\ndata: {\"app\":\ndata: \"a\"}\n\n",
                     "data: plain text\n\n", "id: x\nevent: custom\r\ndata: {}\r\n\r\n"])
    servers.append(server := serve(script))
    point_at(config_dir, server, 1)
    with Client(config_dir=config_dir).open_events(apps=["a", "b"], types=["state"],
                                                   idle_for=5) as stream:
        events = list(stream)
    assert events == [Event(7, "state", {"app": "a"}), Event(None, "message", "plain text"),
                      Event(None, "custom", {})]
    assert script.requests == [("/events/stream?app=a&app=b&type=state&idle_for=5", None)]
    assert events[0].record() == {"id": 7, "type": "state", "app": "a"}


def test_a_dropped_stream_resumes_after_the_last_id_seen(daemon_dir: tuple[Path, list]) -> None:
    config_dir, servers = daemon_dir
    script = Script([sse(1, {"n": 1}), sse(2, {"n": 2})], [sse(3, {"n": 3})], [],
                    [sse(4, {"n": 4})])
    servers.append(server := serve(script))
    point_at(config_dir, server, 1)
    events = Client(config_dir=config_dir).follow_events(since=0)
    assert [next(events).id for _ in range(4)] == [1, 2, 3, 4]
    events.close()
    assert [last for _, last in script.requests] == ["0", "2", "3", "3"]
    assert all("idle_for=0" in path for path, _ in script.requests)  # never closed for idling


def test_a_new_daemon_is_read_from_its_first_event(daemon_dir: tuple[Path, list]) -> None:
    config_dir, servers = daemon_dir
    old = Script([sse(41, {"old": True}), sse(42, {"old": True})])
    new = Script([sse(1, {"new": True}), sse(2, {"new": True})])
    servers += [first := serve(old), second := serve(new)]
    point_at(config_dir, first, 100)
    waits: list[str] = []

    def waiting(why: str) -> None:
        waits.append(why)
        point_at(config_dir, second, 200)  # ... and once the client waits, a new one comes

    events = Client(config_dir=config_dir).follow_events(since=40, on_wait=waiting,
                                                         retry_s=0.01)
    assert [next(events).id for _ in range(2)] == [41, 42]
    (config_dir / "port").unlink()  # the old daemon is gone ...
    (config_dir / "orchestratr.pid").unlink()
    assert [next(events).id for _ in range(2)] == [1, 2]
    events.close()
    assert old.requests[0][1] == "40"
    assert new.requests[0][1] == "0"  # not 42: the new daemon's ids start again
    assert len(waits) == 1 and "no " in waits[0]


def test_no_daemon_at_the_start_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(NotRunningError):
        next(Client(config_dir=tmp_path).follow_events())


def test_close_from_another_thread_ends_a_blocked_read(daemon_dir: tuple[Path, list]) -> None:
    config_dir, servers = daemon_dir
    script = Script([sse(1, {}), HOLD])
    servers.append(server := serve(script))
    point_at(config_dir, server, 1)
    stream = Client(config_dir=config_dir).open_events()
    seen: list[Event] = []
    reader = threading.Thread(target=lambda: seen.extend(stream))
    reader.start()
    wait_for(lambda: seen, what="the first event")
    stream.close()  # the server still holds the connection open
    reader.join(timeout=5)
    script.release.set()
    assert not reader.is_alive() and stream.closed
    assert [e.id for e in seen] == [1]
