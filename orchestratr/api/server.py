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
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog

from orchestratr import __version__
from orchestratr.api import guard
from orchestratr.api.dispatch import Dispatcher, Workers
from orchestratr.api.errors import MAX_ECHO, STATUS, ApiError, error_body, status_of
from orchestratr.api.routes import Api, Request, Response, encode
from orchestratr.api.sse import Stream
from orchestratr.api.transport import (
    ChunkedError,
    DeadlineReader,
    HeadTooLarge,
    Limits,
    declared_length,
    linger,
    read_chunked,
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
MAX_PENDING_LOG_LINES = 10_000  # request lines waiting for their logger; more are dropped
DISCARD_LIMIT_S = 2.0  # how long an oversized body is read and thrown away after a 413
CODE_OF = {status: code for code, status in reversed(STATUS.items())}  # the first code wins


def _canned(status: int, code: str, message: str) -> bytes:
    """A whole answer, sent without a handler (by the accepting thread)."""
    body = encode({"error": message, "code": code})
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\nCache-Control: no-store\r\nRetry-After: 1"
            "\r\nConnection: close\r\n\r\n").encode() + body


BUSY = _canned(503, "unavailable", "too many open connections; try again shortly")


class _Server(HTTPServer):
    """The listening socket, the connection and stream budgets, and the threads that serve
    them (see ``dispatch``): an idle keep-alive connection costs no thread, a request waits
    only for the requests ahead of it, and event streams have a budget of their own, so
    readers can never take the room ``/health`` and commands need (item 8 of issue 12)."""

    request_queue_size = max(socket.SOMAXCONN, 1024)  # the kernel caps it at net.core.somaxconn
    api: Api

    def __init__(self, address: tuple[str, int], limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._open = 0  # connections being served or kept alive, streams not included
        self._streams: dict[_Handler, Stream] = {}
        self._turned_away = 0
        super().__init__(address, _Handler)
        self.requests = RequestLog()
        self.workers = Workers(limits.connections)
        self.dispatcher = Dispatcher(self.socket, self._admit, self._submit, self._close,
                                     idle_s=limits.header_s)
        self.dispatcher.pool = self.workers

    def server_bind(self) -> None:
        """Bind without HTTPServer's ``socket.getfqdn``: a reverse DNS lookup of 127.0.0.1 at
        start-up, which can stall on a broken resolver, for a name nothing here uses."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def _admit(self, sock: socket.socket, peer: Any) -> _Handler | None:
        """A new connection's handler; over the cap, the connection idle the longest is
        closed to make room, and only when none is idle is the new one answered 503."""
        with self._lock:
            full = self._open >= self.limits.connections
        if full and not self.dispatcher.shed_idle():
            self._turn_away(sock, peer)
            return None
        with self._lock:
            self._open += 1
        return _Handler(sock, peer, self)

    def _submit(self, handler: _Handler) -> None:
        self.workers.submit(lambda: self._serve(handler))

    def _serve(self, handler: _Handler) -> None:
        """On a worker: answer what the connection sent, then park it, close it, or leave it
        to its stream's thread."""
        try:
            keep = handler.serve()
        except Exception:
            log.exception("http_connection_error", peer=handler.client_address[0])
            keep = False
        if keep:
            self.dispatcher.park(handler, handler.connection)
        elif not handler.streaming:
            self._close(handler)

    def _close(self, handler: _Handler) -> None:
        with self._lock:
            self._open -= 1
        self._end(handler)

    @staticmethod
    def _end(handler: _Handler) -> None:
        try:
            handler.finish()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_WR)
            handler.connection.close()

    def stream(self, handler: _Handler, stream: Stream) -> None:
        """Move a connection from the connection budget to the stream budget and give it a
        thread; at the stream budget, the reader that was sent nothing for the longest (a
        filter that lets little through, or a reader that stopped reading) is let go: it
        reconnects with Last-Event-ID, losing nothing."""
        with self._lock:
            self._open -= 1
            shed = None
            if len(self._streams) >= self.limits.streams:
                shed = min(self._streams, key=lambda h: self._streams[h].delivered_at)
                del self._streams[shed]  # ending: it no longer counts
            self._streams[handler] = stream
        if shed is not None:
            log.info("sse_reader_shed", peer=shed.client_address[0],
                     streams=self.limits.streams)
            shed.end_stream()
        threading.Thread(target=self._run_stream, args=(handler, stream),
                         name="api-stream", daemon=True).start()

    def _run_stream(self, handler: _Handler, stream: Stream) -> None:
        try:
            handler.run_stream(stream)
        except Exception:
            log.exception("http_connection_error", peer=handler.client_address[0])
        finally:
            with self._lock:
                self._streams.pop(handler, None)
            self._end(handler)

    def _turn_away(self, sock: socket.socket, peer: Any) -> None:
        """Over the cap with every connection busy: 503 at once, logged like any answer."""
        self._turned_away += 1
        log.info("http_request", method=None, path=None, status=503, duration_ms=0.0,
                 reason="too many connections")
        if self._turned_away == 1 or self._turned_away % 100 == 0:
            log.warning("http_too_many_connections", limit=self.limits.connections,
                        turned_away=self._turned_away, peer=peer[0])
        turn_away(sock, BUSY)


class RequestLog:
    """The ``http_request`` lines, logged on a thread of their own: a request's thread only
    queues its fields, so the structlog processing of a line per request is not paid between
    a connection's requests (GET /apps p99 was 2.27 ms with request logs at info, 0.44 ms at
    warning: issue 16). Bounded: lines that find it full are dropped."""

    def __init__(self) -> None:
        self._lines: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._logger = logging.getLogger("orchestratr.api")
        self._closed = False
        # started with the server, so a request never adds a thread (tests count them)
        self._thread = supervised("api-request-log", self._run)

    def add(self, **fields: Any) -> None:
        if not self._logger.isEnabledFor(logging.INFO) or \
                len(self._lines) >= MAX_PENDING_LOG_LINES:
            return
        self._lines.append(fields)
        self._wake.set()

    def close(self) -> None:
        """Log what is queued, then end the thread (a server stopped in a running process,
        as tests do, left it waiting for good)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while self._lines:
                log.info("http_request", **self._lines.popleft())


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
    _continue = False  # the client waits for "100 Continue" before it sends the body
    _head_sent = False  # of an event stream's response
    streaming = False  # the connection now carries an event stream, on a thread of its own

    def __init__(self, request: socket.socket, client_address: Any, server: _Server) -> None:
        """Set up only: the dispatcher calls ``serve`` each time the client has sent bytes
        (socketserver's handlers serve the whole connection from their constructor)."""
        self.request, self.client_address, self.server = request, client_address, server
        self.setup()

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain socket file: replaced by one that keeps deadlines
        self._reader = DeadlineReader(self.connection)
        self.rfile = self._buffer = io.BufferedReader(self._reader)

    def finish(self) -> None:
        super().finish()
        if self._linger:
            linger(self.connection)

    def serve(self) -> bool:
        """Answer every request that has arrived; True when the connection is to wait for the
        next one, False when it is done (closed, or handed to a stream)."""
        while True:
            self.handle_one_request()
            if self.close_connection or self.streaming:
                return False
            if not self._buffered():
                return True

    def _buffered(self) -> bool:
        """Whether the next request is already read into our buffer (pipelined), where the
        selector cannot see it."""
        self._reader.expect(0)  # a read from the socket now raises instead of waiting
        try:
            return bool(self._buffer.peek(1))
        except (TimeoutError, OSError):
            return False

    def version_string(self) -> str:
        """``Server: orchestratr/X`` (http.server appends a space and its own versions)."""
        return self.server_version

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
        self.close_connection = True  # until a request line and headers say otherwise
        self._path = None
        self._unread = 0
        self._continue = False

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
        """http.server's parsing, minus its silences: an empty line and HTTP/0.9 are refused
        at once (http.server went on to wait for headers an HTTP/0.9 client never sends)."""
        words = self.raw_requestline.split()
        if not words:
            self.send_error(400, "empty request line")
            return False
        if len(words) == 2:
            self.send_error(400, "HTTP/0.9 requests are not supported; end the line with "
                                 "HTTP/1.1")
            return False
        return super().parse_request()  # False: answered through send_error

    def handle_expect_100(self) -> bool:
        """Note the wish; ``_read_body`` sends "100 Continue" once the request has passed
        every check that could refuse it (http.server sent it before any: curl then uploaded
        a body only to be told 413, 403 or 404)."""
        self._continue = True
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
            self.close_connection = self._linger = True
            if self._continue:
                self._unread = 0  # the client was told no instead of 100: it sends no body
        if isinstance(response.body, Stream):
            self.streaming = True
            self._stream_body = response.body
            self.server.stream(self, response.body)
            return  # the stream's thread answers, logs and closes
        self._answer(response, headers)
        self._discard_unread_body()

    def _respond(self) -> Response:
        if self.path == "*" and self.command == "OPTIONS":  # RFC 9110 9.3.7: the server itself
            return Response(200, {"status": "ok"})
        path, query = guard.admit(self.client_address[0], self.path, self.headers,
                                  self.server.server_port,
                                  host_required=self.request_version != "HTTP/1.0")
        self._path = path
        handler, params = self.server.api.route(self.command, path)
        body = self._read_body() if self.command in BODY_METHODS else None
        return handler(Request(self.command, params, body,
                               parse_qs(query, keep_blank_values=True), self.headers))

    def _read_body(self) -> Any:
        """The request's JSON body (None when it has none), checked before a byte of it is
        read: framing, size and media type. Only then is "100 Continue" sent."""
        chunked = self._chunked()
        if not chunked and self._unread < 0:
            raise ApiError("bad_request", "invalid Content-Length")
        if self._unread > MAX_BODY:
            raise ApiError("payload_too_large", f"body is over {MAX_BODY} bytes")
        if chunked or self._unread:
            self._check_media_type()
        if self._continue and (chunked or self._unread):
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw = self._receive_chunked() if chunked else self._receive(self._unread)
        if not raw.strip():
            return None
        value = decode_json(raw)
        if value is None:
            raise ApiError("bad_request", "the body must be a JSON object, not null")
        return value

    def _chunked(self) -> bool:
        """Whether the body is chunked (RFC 9112 6.1). Another transfer coding is 501; with a
        Content-Length as well, the connection closes after the request (the two could be
        read two ways by something between us and the client)."""
        codings = self.headers.get_all("Transfer-Encoding") or []
        if not codings:
            return False
        if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
            raise ApiError("not_implemented", "the only transfer coding understood is chunked")
        if self.request_version == "HTTP/1.0" or "Content-Length" in self.headers:
            self.close_connection = True
        return True

    def _check_media_type(self) -> None:
        """JSON only, from a browser: any other type is a form or text a page can send
        cross-site without asking. Scripts (no Origin, no Sec-Fetch-* header) may label JSON
        as they like: curl's default is a form type, and the Go orchestratr took it."""
        media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "application/json" and guard.from_browser(self.headers):
            raise ApiError("unsupported_media_type", "request bodies must be application/json")

    def _receive(self, length: int) -> bytes:
        """The body, which must arrive whole within the body deadline (a client trickling a
        byte every few seconds held its thread for as long as it liked)."""
        if not length:
            return b""
        with self._body_deadline():
            raw = self.rfile.read(length)
        self._unread = 0
        if len(raw) < length:
            self.close_connection = True
            raise ApiError("bad_request", "the body is shorter than its Content-Length")
        return raw

    def _receive_chunked(self) -> bytes:
        """A chunked body (RFC 9112 7.1), within the same size and time limits. A body
        framed this way cannot be skipped if refused, so the connection closes after it."""
        with self._body_deadline():
            try:
                raw = read_chunked(self.rfile, MAX_BODY)
            except ChunkedError as exc:
                raise ApiError(exc.code, str(exc)) from None
        self._unread = 0
        return raw

    @contextlib.contextmanager
    def _body_deadline(self) -> Iterator[None]:
        limit_s = self.server.limits.body_s
        self._reader.expect(limit_s)
        try:
            yield
        except TimeoutError:
            self._unread = -1  # the rest may still come: the connection cannot be reused
            raise ApiError("request_timeout",
                           f"the body did not arrive within {limit_s:g} s") from None
        except ConnectionError:  # the client went away mid-body: no bug of ours to log
            self._unread = -1
            raise ApiError("bad_request", "the connection broke during the body") from None

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
        elif self.request_version == "HTTP/1.0":  # kept open only if it says so (RFC 9112 9.3)
            self.send_header("Connection", "keep-alive")
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(payload)  # one write: headers and body in one segment
        self.flush_headers()

    def end_stream(self) -> None:
        """End this connection's stream from any thread, even one stalled mid-write; one not
        yet begun still sends its head, so its reader sees a 200 that ends (and reconnects),
        not a connection closed without an answer."""
        self._stream_body.close()
        if self._head_sent:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def run_stream(self, stream: Stream) -> None:
        """Send an event stream until it ends, the client leaves or the server stops, then
        log the request. The response has no length: it ends when the connection closes."""
        self._send_stream(stream)
        self._log(200)

    def _send_stream(self, stream: Stream) -> None:
        self.close_connection = True
        dispatcher = self.server.dispatcher
        try:
            settle(self.connection, self.server.limits.write_s)
            self.send_response(200)
            self.send_header("Content-Type", stream.content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self._head_sent = True
            if self.command == "HEAD":
                return
            # Little kernel buffering: a reader that stops reading overflows its own bounded
            # queue soon, instead of after megabytes sit in the socket.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            dispatcher.watch(self.connection, self.end_stream)
            for chunk in stream:
                self.wfile.write(chunk)
        except OSError:
            pass  # the client went away mid-write, or stalled for longer than the timeout
        finally:
            dispatcher.forget(self.connection)
            stream.close()

    def _log(self, status: int) -> None:
        """The one ``http_request`` line of every request, answered or refused (formatted
        and logged on the request log's thread)."""
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
        self._server.workers.start()
        # "api": it accepts, hands requests to the workers and watches streams for hang-ups
        self._thread = supervised("api", self._server.dispatcher.run)
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
        self._server.dispatcher.stop()  # closes idle connections, ends every open stream
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server.requests.close()
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
