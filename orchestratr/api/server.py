"""The HTTP server: the standard library's, one thread per connection, HTTP/1.1 keep-alive.

Every request goes guard -> route -> body -> handler -> JSON, and is logged once with its
method, path, status and duration. Errors always answer ``{"error", "code"}``; an unexpected
exception is logged with its traceback and answered with a bare 500.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from orchestratr import __version__
from orchestratr.api import guard
from orchestratr.api.errors import STATUS, ApiError, error_body, status_of
from orchestratr.api.routes import Api, Request, Response, encode
from orchestratr.api.sse import EventStream
from orchestratr.errors import OrchestratrError
from orchestratr.paths import write_atomically

log = structlog.get_logger("orchestratr.api")

MAX_BODY = 1024 * 1024
HEADER_TIMEOUT_S = 5.0
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
STREAM_SNDBUF = 64 * 1024
DISCARD_LIMIT_S = 2.0  # how long an oversized body is read and thrown away after a 413
IDLE_POLL_S = 3600.0  # serve_forever's wake-ups are idle CPU; stop() wakes it by connecting


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: Api

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.streams: set[EventStream] = set()
        self.hangups = Hangups()


class Hangups:
    """One thread that notices streaming clients hanging up, so their handler threads end at
    once instead of at their next write (a keep-alive may be 15 s away)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, sock: socket.socket, on_hangup: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                on_hangup()
                return
            self._selector.register(sock, selectors.EVENT_READ, on_hangup)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="api-hangups",
                                                daemon=True)
                self._thread.start()
        self._wake()

    def forget(self, sock: socket.socket) -> None:
        with self._lock, contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        self._wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _loop(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select():
                if key.data is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                elif not self._read(key.fileobj):  # type: ignore[arg-type]
                    self.forget(key.fileobj)  # type: ignore[arg-type]
                    key.data()

    @staticmethod
    def _read(sock: socket.socket) -> bool:
        """Drop what the client sent; False once it has hung up."""
        try:
            return bool(sock.recv(4096, getattr(socket, "MSG_DONTWAIT", 0)))
        except BlockingIOError:
            return True
        except OSError:
            return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"orchestratr/{__version__}"
    sys_version = ""
    timeout = HEADER_TIMEOUT_S  # a client that stalls is cut off
    disable_nagle_algorithm = True  # answers are small; never wait for the peer's ACK
    server: _Server
    _unread = 0  # bytes of this request's body still on the socket; -1 when unknown

    def __getattr__(self, name: str) -> Any:
        """``do_GET``, ``do_TRACE``, ``do_FOO``: every method is routed, so an unknown one
        gets our 405 rather than http.server's HTML 501."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a garbled request line, oversized headers) in our
        JSON envelope rather than its HTML page."""
        self.close_connection = True
        error_code = next((c for c, status in STATUS.items() if status == code), "bad_request")
        self._send(Response(code, {"error": message or HTTPStatus(code).phrase,
                                   "code": error_code}))

    def _handle(self) -> None:
        started = time.perf_counter()
        target = urlsplit(self.path)
        path = target.path
        self._query = parse_qs(target.query, keep_blank_values=True)
        headers: dict[str, str] = {}
        self._unread = _declared_length(self.headers)
        try:
            response = self._respond(path)
        except OrchestratrError as exc:
            headers = exc.headers if isinstance(exc, ApiError) else {}
            response = Response(status_of(exc), error_body(exc))
        except Exception:
            log.exception("http_internal_error", method=self.command, path=path)
            response = Response(500, {"error": "internal error (see the daemon log)",
                                      "code": "internal_error"})
        if self._unread:  # a refusal before the body was read: it must never pass for a request
            self.close_connection = True
        if isinstance(response.body, EventStream):
            self._stream(response.body)
        else:
            self._send(response, headers)
        self._discard_unread_body()
        log.info("http_request", method=self.command, path=path, status=response.status,
                 duration_ms=round((time.perf_counter() - started) * 1000, 3))

    def _respond(self, path: str) -> Response:
        api = self.server.api
        refusal = guard.refusal(self.client_address[0], self.headers, self.server.server_port)
        if refusal:
            raise ApiError("forbidden", refusal)
        handler, params = api.route(self.command, path)
        body = self._read_body() if self.command in BODY_METHODS else None
        return handler(Request(self.command, params, body, self._query, self.headers))

    def _read_body(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError("bad_request", "chunked bodies are not supported; send Content-Length")
        if self._unread < 0:
            raise ApiError("bad_request", "invalid Content-Length")
        if self._unread > MAX_BODY:
            raise ApiError("payload_too_large", f"body is over {MAX_BODY} bytes")
        raw = self.rfile.read(self._unread) if self._unread else b""
        self._unread = 0
        if not raw.strip():
            return None
        media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise ApiError("unsupported_media_type", "request bodies must be application/json")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError("bad_request", f"malformed JSON: {exc}") from None

    def _discard_unread_body(self) -> None:
        """Read and drop the rest of a refused body, in small chunks and for a bounded time.

        Closing a socket with unread data makes the kernel answer with a reset, which can
        destroy the answer before a client that is still sending has read it.
        """
        remaining, self._unread = self._unread, 0
        deadline = time.monotonic() + DISCARD_LIMIT_S
        with contextlib.suppress(OSError):
            while remaining > 0 and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _send(self, response: Response, headers: dict[str, str] | None = None) -> None:
        body = response.body
        payload = body if isinstance(body, bytes) else encode(body)
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(payload)  # one write: headers and body in one segment
        self.flush_headers()

    def _stream(self, stream: EventStream) -> None:
        """Send an event stream until it ends, the client leaves or the server stops.

        The response has no length: it ends when the connection closes.
        """
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", stream.content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            stream.close()
            return
        # Little kernel buffering: a reader that stops reading overflows its own bounded
        # queue soon, instead of after megabytes sit in the socket.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
        self.server.streams.add(stream)
        self.server.hangups.watch(self.connection, stream.close)
        try:
            for chunk in stream:
                self.wfile.write(chunk)
        except OSError:
            pass  # the client went away mid-write, or stalled for longer than the timeout
        finally:
            self.server.hangups.forget(self.connection)
            self.server.streams.discard(stream)
            stream.close()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Nothing: ``_handle`` logs every request once, with its duration."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """http.server's own messages (timeouts, malformed request lines) go to structlog."""
        log.debug("http_server_message", message=format % args, peer=self.client_address[0])


class ApiServer:
    """Binds 127.0.0.1, serves in its own threads, and keeps the port file."""

    def __init__(self, api: Api, port: int, port_file: Path | None = None) -> None:
        self._api = api
        self._requested_port = port
        self._port_file = port_file
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_port

    def start(self) -> int:
        """Bind (a free port if ours is taken), start serving, then write the port file."""
        self._server = self._bind()
        self._server.api = self._api
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        args=(IDLE_POLL_S,), name="api", daemon=True)
        self._thread.start()
        if self._port_file is not None:
            write_atomically(self._port_file, f"{self.port}\n", mode=0o644)
        log.info("api_listening", host="127.0.0.1", port=self.port)
        return self.port

    def stop(self) -> None:
        if self._server is None:
            return
        if self._port_file is not None and _read_port(self._port_file) == self.port:
            self._port_file.unlink(missing_ok=True)
        for stream in list(self._server.streams):
            stream.close()
        self._server.hangups.close()
        stopper = threading.Thread(target=self._server.shutdown)
        stopper.start()
        with contextlib.suppress(OSError):  # wake the idle select so shutdown is seen now
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        stopper.join()
        self._server.server_close()
        self._server = None

    def _bind(self) -> _Server:
        try:
            return _Server(("127.0.0.1", self._requested_port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self._requested_port == 0:
                raise
        server = _Server(("127.0.0.1", 0))
        log.warning("api_port_taken", wanted=self._requested_port, using=server.server_port,
                    hint="clients find the port in the port file")
        return server


def _declared_length(headers: Message) -> int:
    """The body's length from its headers: 0 for none, -1 when it cannot be known."""
    if headers.get("Transfer-Encoding"):
        return -1
    try:
        length = int(headers.get("Content-Length") or 0)
    except ValueError:
        return -1
    return length if length >= 0 else -1


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
