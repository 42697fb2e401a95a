"""The transport's defences against slow, oversized and too many clients.

http.server times each socket read on its own, so a client sending one header line (or one
body byte) every few seconds was never cut off, and a few hundred such clients held a thread
each. Here a request has deadlines over all its reads, and the number of connections and of
event streams is capped (see ``server`` for what happens at each cap).
"""

from __future__ import annotations

import contextlib
import io
import math
import socket
import time
from email.message import Message

import attrs

LINGER_S = 0.5  # how long a refused request's remaining bytes are read and dropped
SLACK_S = 0.05  # how far a socket's timeout may be from the time left before it is reset
MAX_CHUNK_LINE = 4096  # bytes of a chunk-size line (with extensions) or a trailer field
MAX_TRAILERS = 100  # trailer fields after a chunked body, as http.client allows header lines


@attrs.frozen
class Limits:
    """How long a request may take to arrive, and how many connections may be open.

    The header deadline also bounds a keep-alive connection's wait for its next request.
    Tests shorten the times so that a slow client is cut off in a fraction of a second.
    """

    header_s: float = 5.0  # request line and headers, in total
    body_s: float = 5.0  # the whole body (up to 1 MiB), in total
    write_s: float = 5.0  # each answer; each write of an event stream
    head_bytes: int = 128 * 1024  # request line and headers together
    connections: int = 256  # open at once, idle keep-alive ones included; streams not
    streams: int = 256  # event streams open at once, one thread each; past it the quietest goes


class HeadTooLarge(Exception):
    """The request line and headers together passed ``Limits.head_bytes``."""


class DeadlineReader(io.RawIOBase):
    """The socket as the request parser reads it: every read shares one deadline and one
    byte budget, set per phase (head, body) with ``expect``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = math.inf
        self.budget = math.inf
        self.received = 0  # bytes so far, over the connection's life

    def expect(self, seconds: float, budget: float = math.inf) -> None:
        """Start a phase: at most ``budget`` bytes, all within ``seconds`` from now."""
        self.deadline = time.monotonic() + seconds
        self.budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Raises TimeoutError once the deadline has passed, HeadTooLarge past the budget."""
        if self.budget <= 0:
            raise HeadTooLarge
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        settle(self._sock, left)
        count = self._sock.recv_into(buffer)
        self.received += count
        self.budget -= count
        return count


def settle(sock: socket.socket, seconds: float) -> None:
    """Give ``sock`` a timeout of about ``seconds`` (within SLACK_S).

    Setting a timeout is a system call that lets go of the GIL; a keep-alive client's
    requests would pay two of them each for a timeout that is already right.
    """
    current = sock.gettimeout()
    if current is None or abs(current - seconds) > SLACK_S:
        sock.settimeout(seconds)


class ChunkedError(Exception):
    """A chunked body that is malformed (``bad_request``) or too large."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_chunked(rfile: io.BufferedIOBase, limit: int) -> bytes:
    """A chunked body's data (RFC 9112 7.1), at most ``limit`` bytes; extensions and trailer
    fields are read and dropped. Reads go through ``rfile``, so its deadline holds."""
    body = bytearray()
    while True:
        line = rfile.readline(MAX_CHUNK_LINE + 1)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not size_text or not _is_hex(size_text):
            raise ChunkedError("bad_request", "malformed chunked body (chunk size line)")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise ChunkedError("payload_too_large", f"body is over {limit} bytes")
        data = rfile.read(size)
        if len(data) < size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise ChunkedError("bad_request", "malformed chunked body (chunk data)")
        body += data
    for _ in range(MAX_TRAILERS + 1):
        line = rfile.readline(MAX_CHUNK_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return bytes(body)
        if not line.endswith(b"\n"):
            break
    raise ChunkedError("bad_request", "malformed chunked body (trailer section)")


def _is_hex(text: bytes) -> bool:
    return len(text) <= 16 and all(c in b"0123456789abcdefABCDEF" for c in text)


def declared_length(headers: Message) -> int:
    """The body's length from its headers: 0 for none, -1 when it cannot be known (chunked,
    repeated, or not plain digits: ``int()`` would take ``+5`` and ``1_0``)."""
    if headers.get("Transfer-Encoding"):
        return -1
    values = headers.get_all("Content-Length") or []
    if not values:
        return 0
    value = values[0].strip()
    if len(values) > 1 or not (value.isascii() and value.isdigit()):
        return -1
    return int(value)


def linger(sock: socket.socket) -> None:
    """After answering a request that was not read to its end: say we are done, then read and
    drop what the client still sends, for a moment.

    Closing on unread data makes the kernel send a reset, which can destroy the answer (a 414,
    a 431) before the client has read it.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_S
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break


def turn_away(sock: socket.socket, answer: bytes) -> None:
    """Answer a connection over the cap and close it, from the accepting thread: so without
    blocking, and dropping only what the client has already sent (see ``linger``)."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(answer)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass  # BlockingIOError (nothing more yet) ends it
    sock.close()
