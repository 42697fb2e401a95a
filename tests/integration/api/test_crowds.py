"""Crowds of event-stream readers against a real daemon: hanging up together, and more of them
than the stream budget (issue 12, items 1 and 8)."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import threading
import time
from typing import Any

from tests.conftest import DaemonProcess, wait_for
from tests.integration.api.conftest import HttpApi, SseClient

WAVE = 256


def crowd_daemon(serve: Any) -> tuple[HttpApi, DaemonProcess]:
    """A daemon whose console output is read as it comes: hundreds of requests logged at info
    would fill the stderr pipe (which the fixture reads only at the end) and stall its log."""
    api, daemon = serve()
    threading.Thread(target=daemon.proc.stderr.read, daemon=True).start()  # type: ignore[union-attr]
    return api, daemon


def open_readers(port: int, count: int) -> list[tuple[socket.socket, int]]:
    """``count`` readers of /events/stream, each with its status once its head has arrived
    (connected all at once, heads read with one selector)."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        socks.append(sock)
    heads: dict[socket.socket, bytes] = dict.fromkeys(socks, b"")
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            chunk = sock.recv(4096)  # type: ignore[union-attr]
            heads[sock] += chunk  # type: ignore[index]
            if b"\r\n\r\n" in heads[sock] or not chunk:  # type: ignore[index]
                selector.unregister(sock)
    selector.close()
    return [(sock, int(heads[sock].split(b" ", 2)[1]) if heads[sock] else 0) for sock in socks]


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_waves_of_readers_hanging_up_together_wedge_nothing(serve: Any) -> None:
    """Item 1: 160-256 readers closing at once blocked the hang-up watcher on its own wake-up
    pipe, then every stream thread behind it: /health answered 503 for good, new readers got
    no events, SIGTERM did not stop the daemon."""
    api, daemon = crowd_daemon(serve)
    pid = daemon.proc.pid
    [(first, _)] = open_readers(api.port, 1)
    first.close()
    wait_for(lambda: api.get("/health").status == 200)
    threads, fds = threads_of(pid), fds_of(pid)
    for wave in range(3):
        # a wave fills the connection budget (256): the last one's must be let go first, which
        # under two CPU hogs took longer than the client's close (its 256th reader got 503)
        wait_for(lambda: fds_of(pid) <= fds, timeout=10, what="the last wave's streams to end")
        readers = open_readers(api.port, WAVE)
        assert [status for _, status in readers] == [200] * WAVE, f"wave {wave}"
        for sock, _ in readers:
            sock.close()
        started = time.monotonic()
        assert api.get("/health").status == 200
        assert time.monotonic() - started < 2, f"/health after wave {wave}"
    wait_for(lambda: threads_of(pid) <= threads and fds_of(pid) <= fds, timeout=3,
             what=f"threads {threads} and fds {fds} again")
    reader = SseClient(api.port)
    api.post("/apps/notes/launch")
    assert reader.events(1)[0].data["to"] == "launching"  # a new reader gets events
    reader.close()
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 3


def test_more_readers_than_the_stream_budget_never_lock_anybody_out(serve: Any) -> None:
    """Item 8: at 256 connections a reader got 503, which an EventSource never retries, and
    /health got it too. Now streams have a budget of their own; past it the quietest reader is
    let go (it reconnects with Last-Event-ID and loses nothing), and requests always have
    room. The readers come in three waves of 100, so the connection budget (256 requests in
    flight, which a burst of 300 can fill before the workers catch up) is not what is tested."""
    api, _ = crowd_daemon(serve)
    readers = [reader for _ in range(3) for reader in open_readers(api.port, 100)]
    try:
        assert [status for _, status in readers] == [200] * 300
        assert api.get("/health").status == 200
        assert api.post("/apps/notes/launch").status == 200
        ended = 0
        for sock, _ in readers:  # each either was let go (its stream ended) or got the event
            sock.settimeout(5)
            ended += b"launching" not in _read_until(sock, b"launching")
        assert ended == 300 - 256
    finally:
        for sock, _ in readers:
            sock.close()


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What ``sock`` receives up to ``marker``, or to its end."""
    data = b""
    while marker not in data and (chunk := sock.recv(65536)):
        data += chunk
    return data


def test_a_health_check_is_answered_during_a_wave(serve: Any) -> None:
    """/health during a wave of readers stays quick (the figures are in bench/crowds.py)."""
    api, _ = crowd_daemon(serve)
    readers = open_readers(api.port, WAVE)
    try:
        started = time.monotonic()
        assert api.get("/health").status == 200
        assert time.monotonic() - started < 1
    finally:
        for sock, _ in readers:
            sock.close()
