"""A real daemon on port 0 and an HTTP helper that checks every answer against /openapi.json."""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import jsonschema
import pytest
import structlog

from orchestratr.api.routes import Api, Request, Response
from orchestratr.api.server import ApiServer
from orchestratr.api.transport import Limits
from orchestratr.logs import configure_logging
from tests.conftest import DaemonProcess, wait_for, write_config

CONFIG = """\
apps:
  - name: notes
    chord: n
    command: sleep 60
    description: a note pad
  - name: sleeper
    chord: s
    command: sleep 60
  - name: stubborn
    command: trap '' TERM; sleep 60
    stop_timeout_ms: 3000
  - name: broken
    command: sleep 60
    cwd: /nonexistent/dir
"""
EXTRA = "name: extra\nchord: x\ncommand: sleep 60\n"
UNSET = object()


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: Any


class HttpApi:
    """Requests to one daemon. Every JSON answer must match the daemon's own OpenAPI document:
    a documented status for that operation, and a body valid against that status's schema."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.doc: dict[str, Any] = self.call("GET", "/openapi.json", check=False).body
        self._templates = [
            (re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", t) + "$"), t) for t in self.doc["paths"]
        ]

    def call(
        self,
        method: str,
        path: str,
        body: Any = UNSET,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        check: bool = True,
    ) -> Reply:
        """One request on a fresh connection; ``body`` is sent as JSON, ``raw`` as is."""
        headers = dict(headers or {})
        payload = raw
        if body is not UNSET:
            payload = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                      json.loads(data) if data else None)
        if check and method != "HEAD":
            self.conforms(method, path, reply)
        return reply

    def raw(self, data: bytes) -> Reply:
        """Bytes as sent, for what http.client will not send; an error must be an Error."""
        reply = exchange(self.port, data)
        if reply.status >= 400:
            jsonschema.validate(reply.body, {"$ref": "#/components/schemas/Error",
                                             "components": self.doc["components"]})
        return reply

    def conforms(self, method: str, path: str, reply: Reply) -> None:
        assert reply.headers["content-type"] == "application/json"
        schema = self._response_schema(method, path.split("?")[0], reply.status)
        jsonschema.validate(reply.body, {**schema, "components": self.doc["components"]})

    def _response_schema(self, method: str, path: str, status: int) -> dict[str, Any]:
        error = {"$ref": "#/components/schemas/Error"}
        template = next((t for pattern, t in self._templates if pattern.match(path)), None)
        if template is None or method.lower() not in self.doc["paths"][template]:
            assert status in (400, 403, 404, 405), f"{method} {path}: undocumented {status}"
            return error
        responses = self.doc["paths"][template][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {template}: undocumented status {status}"
        return responses[str(status)]["content"]["application/json"]["schema"]

    # shorthands
    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = UNSET, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def app(self, name: str) -> dict[str, Any]:
        reply = self.get(f"/apps/{quote(name, safe='')}")
        assert reply.status == 200, reply
        return reply.body

    def wait_state(self, name: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        wait_for(lambda: self.app(name)["state"] == state, timeout, what=f"{name} {state}")
        return self.app(name)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> Reply:
    """Send raw bytes on a new connection and read the one answer, to the server's close
    (every test that uses this expects ``Connection: close`` or sends it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return parse_answer(read_to_close(sock))


def read_to_close(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def parse_answer(answer: bytes) -> Reply:
    """One HTTP/1.1 answer with a JSON body (or none), as a Reply."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), answer[:200]
    headers = {name.lower(): value for name, _, value in (x.partition(": ") for x in lines)}
    return Reply(int(status_line.split()[1]), headers, json.loads(body) if body else None)


class NoConfig:
    """A server with no config files: nothing is rejected (GET /health asks)."""

    def config_errors(self) -> list[str]:
        return []


class StandIn(Api):
    """An Api over no supervisor with two routes a daemon lacks: one that fails, one that echoes
    its body. For what only an in-process server can show: a 500, and short limits."""

    def __init__(self) -> None:
        super().__init__(None, NoConfig(), None, dict)  # type: ignore[arg-type]
        self.routes += [("GET", "/explode", self.explode), ("POST", "/echo", self.echo)]

    def explode(self, _: Request) -> Response:
        raise RuntimeError("secret detail")

    def echo(self, req: Request) -> Response:
        return Response(200, {"body": req.body})


@contextmanager
def daemon_logging(log_file: Path) -> Iterator[io.StringIO]:
    """The daemon's own logging (``configure_logging``: a JSON file and a console, yielded) for
    an in-process server; flushed at the end, then the test's logging is put back."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    console = io.StringIO()
    stop = configure_logging("info", log_file, console)
    try:
        yield console
    finally:
        stop()
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def logged(log_file: Path, event: str) -> list[dict[str, Any]]:
    """The events of that name in a JSON log file."""
    lines = log_file.read_text().split("\n")[:-1]  # the last may be half-written
    return [e for e in map(json.loads, lines) if e["event"] == event]


@pytest.fixture
def make_server() -> Iterator[Callable[..., ApiServer]]:
    """``make_server(header_s=0.5, ...)``: a started in-process ApiServer with those limits."""
    started: list[ApiServer] = []

    def make(**limits: Any) -> ApiServer:
        server = ApiServer(StandIn(), 0, limits=Limits(**limits))
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def api_server(make_server: Callable[..., ApiServer]) -> ApiServer:
    return make_server()


def port_of(config_dir: Path) -> int:
    return int((config_dir / "port").read_text())


@pytest.fixture
def serve(
    config_dir: Path, start_daemon: Callable[..., DaemonProcess]
) -> Iterator[Callable[..., tuple[HttpApi, DaemonProcess]]]:
    """Start a daemon with the given config.yml (and apps.d/extra.yml) and talk HTTP to it."""

    def start(config: str = CONFIG, *args: str) -> tuple[HttpApi, DaemonProcess]:
        write_config(config_dir, config)
        (config_dir / "apps.d" / "extra.yml").write_text(EXTRA)
        daemon = start_daemon("--no-hotkeys", *args)
        return HttpApi(port_of(config_dir)), daemon

    return start


@pytest.fixture
def api(serve: Callable[..., tuple[HttpApi, DaemonProcess]]) -> HttpApi:
    return serve()[0]


@attrs.frozen
class SseEvent:
    type: str  # "comment" for a `:` line, else the `event:` field
    id: int | None
    data: Any  # the parsed `data:` JSON, or the comment's text


class SseClient:
    """A raw-socket reader of ``GET /events/stream``: what an EventSource would see."""

    def __init__(self, port: int, query: str = "", headers: dict[str, str] | None = None,
                 rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connecting, so the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET /events/stream{'?' + query if query else ''} HTTP/1.1\r\n"
                          f"Host: 127.0.0.1\r\n{extra}\r\n".encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode().strip()):
            key, _, value = line.partition(":")
            self.headers[key.strip().lower()] = value.strip()

    def next(self, timeout: float = 5.0) -> SseEvent | None:
        """The next event or comment; None when the server closed the stream."""
        self.sock.settimeout(timeout)
        fields: dict[str, str] = {}
        while True:
            raw = self.file.readline()
            if not raw:
                return None
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                return SseEvent("comment", None, line[1:].strip())
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
            elif "event" in fields:
                event_id = int(fields["id"]) if "id" in fields else None
                return SseEvent(fields["event"], event_id, json.loads(fields["data"]))
            else:
                fields = {}  # a frame without an event (the retry hint)

    def events(self, count: int, timeout: float = 5.0) -> list[SseEvent]:
        """The next ``count`` events, skipping comments."""
        got: list[SseEvent] = []
        while len(got) < count:
            event = self.next(timeout)
            assert event is not None, f"stream ended after {got}"
            if event.type != "comment":
                got.append(event)
        return got

    def close(self) -> None:
        self.file.close()
        self.sock.close()
