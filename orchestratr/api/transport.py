"""The transport's defences against slow, oversized and too many clients.

http.server times each socket read on its own, so a client sending one header line (or one
body byte) every few seconds was never cut off, and a few hundred such clients held a thread
each. Here a request has deadlines over all its reads, and the number of connections (event
streams included) is capped: beyond the cap a connection is answered 503 at once and closed.
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
    connections: int = 256  # open at once; one thread each


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
