"""The HTTP server: the standard library's, one thread per connection, HTTP/1.1 keep-alive.

Every request goes guard -> route -> body -> handler -> JSON, and is logged once with its
method, path, status and duration, including the ones http.server refuses itself (a garbled
request line, HTTP/2, headers too large, too slow). Errors always answer ``{"error", "code"}``;
an unexpected exception is logged with its traceback and answered with a bare 500. The limits
on slow and numerous clients are in ``transport``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog

from orchestratr import __version__
from orchestratr.api import guard
from orchestratr.api.errors import MAX_ECHO, STATUS, ApiError, error_body, status_of
from orchestratr.api.routes import Api, Request, Response, encode
from orchestratr.api.sse import EventStream
from orchestratr.api.transport import (
    DeadlineReader,
    HeadTooLarge,
    Limits,
    declared_length,
    linger,
    settle,
    turn_away,
)
from orchestratr.api.wire import decode_json
from orchestratr.errors import OrchestratrError, clip
from orchestratr.paths import write_atomically
from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.api")

MAX_BODY = 1024 * 1024
MAX_LINE = 65536  # bytes of a request line, as http.server allows
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
STREAM_SNDBUF = 64 * 1024
DISCARD_LIMIT_S = 2.0  # how long an oversized body is read and thrown away after a 413
IDLE_POLL_S = 3600.0  # serve_forever's wake-ups are idle CPU; stop() wakes it by connecting
ACCEPT_BACKOFF_S = 0.01  # the first pause when accept runs out of descriptors; doubled ...
MAX_ACCEPT_BACKOFF_S = 1.0  # ... up to this
MAX_PENDING_LOG_LINES = 10_000  # request lines waiting for their logger; more are dropped
CODE_OF = {status: code for code, status in reversed(STATUS.items())}  # the first code wins


def _canned(status: int, code: str, message: str) -> bytes:
    """A whole answer, sent without a handler (by the accepting thread)."""
    body = encode({"error": message, "code": code})
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\nCache-Control: no-store\r\nRetry-After: 1"
            "\r\nConnection: close\r\n\r\n").encode() + body


BUSY = _canned(503, "unavailable", "too many open connections; try again shortly")


class _Server(ThreadingHTTPServer):
    """The standard library's threading server, with the connection cap and a listen queue
    deep enough for a burst of clients (socketserver's 5 made the 6th wait for a SYN retry)."""

    daemon_threads = True
    request_queue_size = max(socket.SOMAXCONN, 1024)  # the kernel caps it at net.core.somaxconn
    api: Api

    def __init__(self, address: tuple[str, int], limits: Limits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.connections)
        self._turned_away = 0
        self._accept_backoff = 0.0  # while accept fails for lack of descriptors
        self.hangups = Hangups()
        self.requests = RequestLog()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        """Accept, backing off while the daemon is out of file descriptors: the listening
        socket stays readable, and retrying at once spun a whole core (issue 16)."""
        try:
            request = super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._out_of_descriptors(exc)
            raise
        if self._accept_backoff:
            log.warning("http_accept_resumed")
            self._accept_backoff = 0.0
        return request

    def _out_of_descriptors(self, exc: OSError) -> None:
        if not self._accept_backoff:
            log.error("http_accept_failed", error=exc.strerror,
                      hint="out of file descriptors: new connections wait until some "
                           "close; stop apps or raise the hard limit (ulimit -Hn)")
        self._accept_backoff = min(max(self._accept_backoff * 2, ACCEPT_BACKOFF_S),
                                   MAX_ACCEPT_BACKOFF_S)
        time.sleep(self._accept_backoff)  # this thread only accepts: nothing else waits

    def server_bind(self) -> None:
        """Bind without HTTPServer's ``socket.getfqdn``: a reverse DNS lookup of 127.0.0.1 at
        start-up, which can stall on a broken resolver, for a name nothing here uses."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a new thread, or answer 503 at once when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            self._turn_away(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: nobody else would release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints an escaped exception to stderr; ours goes to the log."""
        log.exception("http_connection_error", peer=client_address[0])

    def _turn_away(self, request: socket.socket, client_address: Any) -> None:
        self._turned_away += 1
        if self._turned_away == 1 or self._turned_away % 100 == 0:
            log.warning("http_too_many_connections", limit=self.limits.connections,
                        turned_away=self._turned_away, peer=client_address[0])
        turn_away(request, BUSY)


class RequestLog:
    """The ``http_request`` lines, logged on a thread of their own: a request's thread only
    queues its line (a tuple), so formatting a log line per request is no longer paid by
    the next request on the connection (GET /apps p99 2.27 ms with it, 0.44 ms without)."""

    def __init__(self) -> None:
        self._lines: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._logger = logging.getLogger("orchestratr.api")

    def add(self, **fields: Any) -> None:
        if not self._logger.isEnabledFor(logging.INFO) or \
                len(self._lines) >= MAX_PENDING_LOG_LINES:
            return
        self._lines.append(fields)
        if self._thread is None:
            self._thread = supervised("api-request-log", self._run)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._lines:
                log.info("http_request", **self._lines.popleft())


class Hangups:
    """The open streams: one thread notices their clients hanging up, so their handler
    threads end at once instead of at their next write (a keep-alive may be 15 s away), and
    ``close`` ends every one of them when the server stops."""

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
            open_streams = [key.data for key in self._selector.get_map().values() if key.data]
        for end in open_streams:
            end()
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
    """One connection's requests: each read under a deadline, answered in JSON and logged once,
    whatever goes wrong (a garbled request line, a timeout, an endpoint's exception)."""

    protocol_version = "HTTP/1.1"
    server_version = f"orchestratr/{__version__}"
    sys_version = ""
    disable_nagle_algorithm = True  # answers are small; never wait for the peer's ACK
    server: _Server
    _headers_buffer: list[bytes]  # http.server's own, written to directly for one-write sends
    _unread = 0  # bytes of this request's body still on the socket; -1 when unknown
    _path: str | None = None  # the routed path, once the target has been checked
    _started = 0.0
    _linger = False  # refused before the request was read to its end: see transport.linger

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain socket file: replaced by one that keeps deadlines
        self._reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def finish(self) -> None:
        super().finish()
        if self._linger:
            linger(self.connection)

    def handle_one_request(self) -> None:
        """Read one request within the header deadline, then answer it.

        Replaces http.server's, which times each read on its own (a client sending a header
        line every few seconds was never cut off) and leaves some failures unanswered.
        """
        limits = self.server.limits
        self._begin()
        received = self._reader.received
        self._reader.expect(limits.header_s, limits.head_bytes)
        try:
            if self._read_request_line() and self.parse_request():
                self._handle()
        except TimeoutError:
            self.close_connection = True
            if self.raw_requestline or self._reader.received > received:
                self.send_error(408, "the request line and headers did not arrive within "
                                     f"{limits.header_s:g} s")
            # else a quiet keep-alive connection: an answer nobody asked for would be read as
            # the answer to the client's next request, so it is closed without a word
        except HeadTooLarge:
            self.send_error(431, f"request line and headers are over {limits.head_bytes} bytes")
        except ConnectionError:
            self.close_connection = True  # the client went away mid-request

    def _begin(self) -> None:
        """Forget the previous request on this connection."""
        self._started = time.perf_counter()
        self.raw_requestline = b""
        self.requestline = self.command = self.path = ""
        self.request_version = self.default_request_version
        self._path = None
        self._unread = 0

    def _read_request_line(self) -> bool:
        """Read the request line; False when there is none to parse (the client closed, or
        the line was too long and has been answered)."""
        line = self.rfile.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):  # RFC 9112 2.2: one empty line before a request is allowed
            line = self.rfile.readline(MAX_LINE + 1)
        self.raw_requestline = line
        self._started = time.perf_counter()
        if not line:
            self.close_connection = True
            return False
        if len(line) > MAX_LINE:
            self.send_error(414, f"the request line is over {MAX_LINE} bytes")
            return False
        return True

    def parse_request(self) -> bool:
        """http.server's parsing, minus its silences: an empty line and HTTP/0.9 are refused."""
        if not self.raw_requestline.split():
            self.send_error(400, "empty request line")
            return False
        if not super().parse_request():
            return False  # answered through send_error
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "HTTP/0.9 requests are not supported; end the line with "
                                 "HTTP/1.1")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a garbled request line, oversized headers, HTTP/2) in our
        JSON envelope, sent and logged like any other answer."""
        if self.request_version == "HTTP/0.9":  # no version known yet: http.server would
            self.request_version = ""  # send a bare body, or crash on our one-write send
        self.close_connection = self._linger = True
        code = int(code)  # http.server passes HTTPStatus members
        body = {"error": clip(message or HTTPStatus(code).phrase, MAX_ECHO),
                "code": CODE_OF.get(code, "bad_request")}
        self._answer(Response(code, body))

    def _handle(self) -> None:
        """Answer a request whose line and headers parsed; every failure is an error body."""
        headers: dict[str, str] = {}
        self._unread = declared_length(self.headers)
        try:
            response = self._respond()
        except OrchestratrError as exc:
            headers = exc.headers if isinstance(exc, ApiError) else {}
            response = Response(status_of(exc), error_body(exc))
        except Exception:
            log.exception("http_internal_error", method=self.command, path=self._path)
            response = Response(500, {"error": "internal error (see the daemon log)",
                                      "code": "internal_error"})
        if self._unread:  # a refusal before the body was read: it must never pass for a request
            self.close_connection = True
        if isinstance(response.body, EventStream):
            self._stream(response.body)
            self._log(response.status)
        else:
            self._answer(response, headers)
        self._discard_unread_body()

    def _respond(self) -> Response:
        path, query = guard.admit(self.client_address[0], self.path, self.headers,
                                  self.server.server_port,
                                  host_required=self.request_version != "HTTP/1.0")
        self._path = path
        handler, params = self.server.api.route(self.command, path)
        body = self._read_body() if self.command in BODY_METHODS else None
        return handler(Request(self.command, params, body,
                               parse_qs(query, keep_blank_values=True), self.headers))

    def _read_body(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError("bad_request", "chunked bodies are not supported; send Content-Length")
        if self._unread < 0:
            raise ApiError("bad_request", "invalid Content-Length")
        if self._unread > MAX_BODY:
            raise ApiError("payload_too_large", f"body is over {MAX_BODY} bytes")
        raw = self._receive(self._unread) if self._unread else b""
        if not raw.strip():
            return None
        media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise ApiError("unsupported_media_type", "request bodies must be application/json")
        return decode_json(raw)

    def _receive(self, length: int) -> bytes:
        """The body, which must arrive whole within the body deadline (a client trickling a
        byte every few seconds held its thread for as long as it liked)."""
        limit_s = self.server.limits.body_s
        self._reader.expect(limit_s)
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self._unread = -1  # the rest may still come: the connection cannot be reused
            raise ApiError("request_timeout",
                           f"the body did not arrive within {limit_s:g} s") from None
        except ConnectionError:  # the client went away mid-body: no bug of ours to log
            self._unread = -1
            raise ApiError("bad_request", "the connection broke during the body") from None
        self._unread = 0
        if len(raw) < length:
            self.close_connection = True
            raise ApiError("bad_request", "the body is shorter than its Content-Length")
        return raw

    def _discard_unread_body(self) -> None:
        """Read and drop the rest of a refused body, in small chunks and for a bounded time.

        Closing a socket with unread data makes the kernel answer with a reset, which can
        destroy the answer before a client that is still sending has read it.
        """
        remaining, self._unread = self._unread, 0
        self._reader.expect(DISCARD_LIMIT_S)
        with contextlib.suppress(OSError):  # TimeoutError included: the time is up
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)

    def _answer(self, response: Response, headers: dict[str, str] | None = None) -> None:
        """Send an answer and log the request. A client that has gone, or stopped reading for
        longer than the write limit, just loses its connection."""
        try:
            self._send(response, headers)
        except OSError:
            self.close_connection = True
        self._log(response.status)

    def _send(self, response: Response, headers: dict[str, str] | None = None) -> None:
        body = response.body
        payload = body if isinstance(body, bytes) else encode(body)
        settle(self.connection, self.server.limits.write_s)
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
        try:
            settle(self.connection, self.server.limits.write_s)
            self.send_response(200)
            self.send_header("Content-Type", stream.content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            # Little kernel buffering: a reader that stops reading overflows its own bounded
            # queue soon, instead of after megabytes sit in the socket.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self.server.hangups.watch(self.connection, stream.close)
            for chunk in stream:
                self.wfile.write(chunk)
        except OSError:
            pass  # the client went away mid-write, or stalled for longer than the timeout
        finally:
            self.server.hangups.forget(self.connection)
            stream.close()

    def _log(self, status: int) -> None:
        """The one ``http_request`` line of every request, answered or refused (logged on
        the request log's thread)."""
        path = self._path if self._path is not None else (self.path or None)
        self.server.requests.add(method=self.command or None,
                                 path=path and clip(path, MAX_ECHO), status=status,
                                 duration_ms=round((time.perf_counter() - self._started) * 1000,
                                                   3))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Nothing: ``_log`` logs every request once, with its duration."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Anything else http.server says goes to structlog."""
        log.debug("http_server_message", message=format % args, peer=self.client_address[0])


class ApiServer:
    """Binds 127.0.0.1, serves in its own threads, and keeps the port file."""

    def __init__(
        self, api: Api, port: int, port_file: Path | None = None, limits: Limits = Limits()
    ) -> None:
        self._api = api
        self._limits = limits
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
        self.write_port_file()
        log.info("api_listening", host="127.0.0.1", port=self.port)
        return self.port

    def write_port_file(self) -> None:
        """Clients find the port here (written again if the config dir was re-created)."""
        if self._port_file is not None:
            write_atomically(self._port_file, f"{self.port}\n", mode=0o644)

    def stop(self) -> None:
        if self._server is None:
            return
        if self._port_file is not None and _read_port(self._port_file) == self.port:
            self._port_file.unlink(missing_ok=True)
        self._server.hangups.close()  # ends every open stream
        stopper = threading.Thread(target=self._server.shutdown)
        stopper.start()
        with contextlib.suppress(OSError):  # wake the idle select so shutdown is seen now
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        stopper.join()
        self._server.server_close()
        self._server = None

    def _bind(self) -> _Server:
        try:
            return _Server(("127.0.0.1", self._requested_port), self._limits)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self._requested_port == 0:
                raise
        server = _Server(("127.0.0.1", 0), self._limits)
        log.warning("api_port_taken", wanted=self._requested_port, using=server.server_port,
                    hint="clients find the port in the port file")
        return server


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
