"""Clients nobody here wrote, against a real daemon: node's WHATWG ``eventsource``, curl, ab,
h11, httpx and httpx-sse. Each test is a defect of issue 12 that one of them found.

The node client lives in tests/clients (``npm ci`` there, which `make test` and .ci/run do).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import httpx_sse
import pytest

from tests.conftest import DaemonProcess, wait_for
from tests.integration.api.conftest import HttpApi, port_of

CLIENTS = Path(__file__).parents[2] / "clients"
NOTES_ONLY = "apps:\n  - name: notes\n    chord: n\n    command: sleep 60\n"


class Follower:
    """``node follow.mjs URL``: an EventSource whose messages are collected as they come."""

    def __init__(self, url: str) -> None:
        if not (CLIENTS / "node_modules" / "eventsource").is_dir():
            pytest.fail("run `npm ci --prefix tests/clients` (make test does) for eventsource")
        self.lines: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(["node", str(CLIENTS / "follow.mjs"), url],
                                     stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def events(self) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line["kind"] == "event"]

    def ids(self) -> list[int]:
        return [int(e["id"]) for e in self.events() if e["type"] != "reset"]

    def opens(self) -> int:
        return sum(line["kind"] == "open" for line in list(self.lines))

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)


@pytest.fixture
def follow() -> Iterator[Callable[[str], Follower]]:
    followers: list[Follower] = []

    def start(url: str) -> Follower:
        followers.append(Follower(url))
        return followers[-1]

    yield start
    for follower in followers:
        follower.close()


class TestEventSource:
    def test_a_restart_loses_no_event(
        self, serve: Any, start_daemon: Callable[..., DaemonProcess], config_dir: Path,
        follow: Callable[[str], Follower],
    ) -> None:
        """Item 3: resuming with an earlier daemon's id got a bare reset and none of the new
        daemon's buffered events, and the client kept its stale id."""
        api, daemon = serve(NOTES_ONLY)
        port = api.port
        reader = follow(f"{api.base_url}/events/stream")
        wait_for(lambda: reader.opens() == 1, timeout=10, what="the EventSource open")
        api.post("/apps/notes/launch")
        wait_for(lambda: len(reader.events()) >= 3, what="the first daemon's events")
        daemon.stop()
        start_daemon("--no-hotkeys", port=port)  # the new daemon publishes before it listens
        api = HttpApi(port_of(config_dir))
        assert api.port == port
        for _ in range(3):
            api.post("/apps/notes/launch")
            api.wait_state("notes", "ready")
            api.post("/apps/notes/stop")
            api.wait_state("notes", "stopped")
        new = [e["id"] for e in api.get("/events").body]
        assert len(new) >= 12
        wait_for(lambda: set(new) <= set(reader.ids()), timeout=10,
                 what=f"every event of the new daemon; got {reader.events()[-3:]}")
        resets = [e for e in reader.events() if e["type"] == "reset"]
        assert len(resets) == 1 and resets[0]["id"] != ""  # the reset carries an id
        assert len(reader.ids()) == len(set(reader.ids()))  # nothing twice

    def test_last_event_id_wins_over_since(
        self, api: HttpApi, follow: Callable[[str], Follower]
    ) -> None:
        """Item 4: an EventSource opened with ?since=N got the same events again on every
        reconnection (idle_for ends the stream after a quiet half second, so it reconnects)."""
        api.post("/apps/notes/launch")
        api.wait_state("notes", "ready")
        first = api.get("/events").body[0]["id"]
        reader = follow(f"{api.base_url}/events/stream?since={first}&idle_for=0.5")
        wait_for(lambda: reader.opens() >= 3, timeout=15, what="two reconnections")
        ids = reader.ids()
        assert ids and len(ids) == len(set(ids)), ids
        assert ids == sorted(ids) and ids[0] > first


class TestCurl:
    def test_chunked_and_form_labelled_json_from_curl(self, api: HttpApi) -> None:
        """Items 5 and 10: curl's chunked upload was 400, and its default form content type 415
        (a script is no browser: no Origin, no Sec-Fetch-*)."""
        result = subprocess.run(
            ["curl", "-sS", "-X", "POST", "-H", "Transfer-Encoding: chunked",
             "--data-binary", '{"chord": "n"}', f"{api.base_url}/trigger"],
            capture_output=True, text=True, timeout=10, check=True)
        assert json.loads(result.stdout)["app"] == "notes"
        api.wait_state("notes", "ready")
        result = subprocess.run(["curl", "-sS", "-d", "{}", f"{api.base_url}/apps/notes/stop"],
                                capture_output=True, text=True, timeout=10, check=True)
        assert json.loads(result.stdout)["state"] in ("stopping", "stopped")

    @pytest.mark.parametrize(("path", "headers", "status"), [
        ("/apps/notes/ready", {}, 413),  # too large
        ("/apps/notes/ready", {"Origin": "http://evil.example"}, 403),
        ("/nowhere", {}, 404),
    ])
    def test_100_continue_only_after_the_checks(
        self, api: HttpApi, path: str, headers: dict[str, str], status: int, tmp_path: Path
    ) -> None:
        """Item 7: curl uploaded 1.5 MiB, then got 413 (or 403, 404): the interim 100 came
        before any check. curl says in its trace whether it got one and what it sent."""
        body = tmp_path / "body.json"
        body.write_bytes(b'{"a": "' + b"x" * (3 * 1024 * 1024 // 2) + b'"}')
        trace = tmp_path / "trace"
        extra = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
        started = time.monotonic()
        result = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
             "--trace-ascii", str(trace), "-H", "Content-Type: application/json",
             "-H", "Expect: 100-continue", "--expect100-timeout", "5", *extra,
             "--data-binary", f"@{body}", f"{api.base_url}{path}"],
            capture_output=True, text=True, timeout=20)
        code, uploaded = result.stdout.split()
        assert int(code) == status
        assert float(uploaded) < 100_000, "the body was sent"
        assert "HTTP/1.1 100" not in trace.read_text(errors="replace")
        assert time.monotonic() - started < 4  # no wait for a 100 that never comes

    def test_100_continue_before_an_accepted_body(self, api: HttpApi, tmp_path: Path) -> None:
        trace = tmp_path / "trace"
        result = subprocess.run(
            ["curl", "-sS", "--trace-ascii", str(trace), "-H", "Expect: 100-continue",
             "-H", "Content-Type: application/json", "--data-binary", '{"chord": "n"}',
             f"{api.base_url}/trigger"], capture_output=True, text=True, timeout=10, check=True)
        assert json.loads(result.stdout)["app"] == "notes"
        assert "HTTP/1.1 100 Continue" in trace.read_text()


class TestHttp10KeepAlive:
    def test_ab_keep_alive_is_announced_and_fast(self, api: HttpApi) -> None:
        """Item 6: ``ab -k -n 4`` took 20 s (each reply held the socket to the 5 s timeout)."""
        if shutil.which("ab") is None:
            pytest.fail("ab is missing: .ci/run installs apache2-utils")
        started = time.monotonic()
        result = subprocess.run(["ab", "-k", "-n", "4", f"{api.base_url}/health"],
                                capture_output=True, text=True, timeout=30, check=True)
        assert time.monotonic() - started < 3
        assert "Keep-Alive requests:    4" in result.stdout
        assert "Failed requests:        0" in result.stdout

    def test_an_http_10_request_is_answered_keep_alive_or_closed(self, api: HttpApi) -> None:
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            first = sock.recv(65536)
            assert b"\r\nConnection: keep-alive\r\n" in first
            sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")  # no keep-alive: closed after
            second = b""
            while chunk := sock.recv(65536):
                second += chunk
            assert second.startswith(b"HTTP/1.1 200") and b"Connection: close" in second


class TestChunkedBodies:
    def test_httpx_generator_body(self, api: HttpApi) -> None:
        """Item 5: requests and httpx send a generator's body chunked."""
        def body() -> Iterator[bytes]:
            yield b'{"chord"'
            yield b': "n"}'

        response = httpx.post(f"{api.base_url}/trigger", content=body(),
                              headers={"Content-Type": "application/json"})
        assert (response.status_code, response.json()["app"]) == (200, "notes")

    def test_h11_chunked_with_trailers_then_keep_alive(self, api: HttpApi) -> None:
        client = h11.Connection(h11.CLIENT)
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            for _ in range(2):  # the connection stays usable after a chunked body
                sock.sendall(client.send(h11.Request(
                    method="POST", target="/apps/notes/ready",
                    headers=[("Host", "127.0.0.1"), ("Transfer-Encoding", "chunked"),
                             ("Content-Type", "application/json")])))
                for piece in (b"{", b"}"):
                    sock.sendall(client.send(h11.Data(data=piece)))
                sock.sendall(client.send(h11.EndOfMessage(headers=[("X-Trailer", "yes")])))
                response = _h11_response(client, sock)
                assert response.status_code == 200, response
                while not isinstance(event := client.next_event(), h11.EndOfMessage):
                    if event is h11.NEED_DATA:
                        client.receive_data(sock.recv(65536))
                client.start_next_cycle()

    def test_a_chunk_extension_is_read_past(self, api: HttpApi) -> None:
        reply = api.raw(b"POST /apps/notes/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        b"1;name=value\r\n{\r\n1\r\n}\r\n0\r\n\r\n")
        assert reply.status == 200

    @pytest.mark.parametrize(("chunks", "status", "code"), [
        (b"zz\r\n{}\r\n0\r\n\r\n", 400, "bad_request"),
        (b"2\r\n{}XX0\r\n\r\n", 400, "bad_request"),
        (b"%x\r\n" % (1024 * 1024 + 1) + b" " * (1024 * 1024 + 1) + b"\r\n0\r\n\r\n", 413,
         "payload_too_large"),
    ])
    def test_a_bad_or_oversized_chunked_body_is_refused(
        self, api: HttpApi, chunks: bytes, status: int, code: str
    ) -> None:
        reply = api.raw(b"POST /apps/notes/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + chunks)
        assert (reply.status, reply.body["code"]) == (status, code)
        assert reply.headers["connection"] == "close"


def _h11_response(client: h11.Connection, sock: socket.socket) -> h11.Response:
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            return event


class TestHttpxSse:
    def test_httpx_sse_reads_the_stream(self, api: HttpApi) -> None:
        with httpx.Client(base_url=api.base_url, timeout=10) as client, \
                httpx_sse.connect_sse(client, "GET", "/events/stream?since=0") as source:
            first = next(e for e in source.iter_sse() if e.data)  # not the retry hint
            assert first.event == "reloaded" and int(first.id) > 0
            assert json.loads(first.data)["at"].endswith("Z")
