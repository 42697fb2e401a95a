"""Event stream and lease figures: delivery latency to many SSE readers, and GET /apps under load.

Run with `make bench` (or `.venv/bin/python bench/events.py [--transitions N]`). The daemon is
the real one (see bench/api.py). Delivery latency runs from a transition's own timestamp (the
`at` of its event) to the moment a reader has the whole event; all readers are read by one
thread with a selector, so reading costs little and never holds the daemon back. For the load
figure, 100 readers and the heartbeat senders run in other processes, so this process only
times its own GET /apps requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from api import daemon, request, series  # bench/ is on sys.path when this script runs
from supervisor import report

READERS = 50
LOADED_READERS = 100
HEARTBEATS_PER_S = 1000
HEARTBEAT_APPS = 50
SENDERS = 4


def subscribe(port: int, query: str = "", path: str = "/events/stream") -> socket.socket:
    """An SSE reader of ``path`` (the event stream, an inbox), its response head consumed."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode())
    return sock


class Readers:
    """Many readers drained by one thread; the arrival of each `data:` line is timed."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.latencies_ms: list[float] = []
        self._selector = selectors.DefaultSelector()
        self._buffers = {}
        for sock in socks:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
            self._buffers[sock] = b""
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                chunk = sock.recv(65536)
                arrived = time.time()
                buffer = self._buffers[sock] + chunk
                *lines, self._buffers[sock] = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(b"data: "):
                        at = json.loads(line[6:])["at"]
                        sent = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
                        self.latencies_ms.append((arrived - sent) * 1000)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def delivery(port: int, transitions: int) -> list[float]:
    """Transitions driven over HTTP, each timed to its arrival at every one of READERS."""
    readers = Readers([subscribe(port, "type=state&app=app000") for _ in range(READERS)])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(transitions):
        request(conn, "POST", f"/apps/app000/{'ready' if i % 2 == 0 else 'stopped'}")
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while len(readers.latencies_ms) < transitions * READERS and time.monotonic() < deadline:
        time.sleep(0.01)
    readers.close()
    conn.close()
    if len(readers.latencies_ms) != transitions * READERS:
        raise RuntimeError(f"{len(readers.latencies_ms)} of {transitions * READERS} delivered")
    return readers.latencies_ms


def drain(port: int, count: int, seconds: float, ready: multiprocessing.Event) -> None:
    """``count`` readers that read everything, for ``seconds``."""
    socks = [subscribe(port) for _ in range(count)]
    ready.set()
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            key.fileobj.recv(65536)  # type: ignore[union-attr]


def heartbeats(port: int, rate: float, seconds: float, offset: int) -> tuple[int, int]:
    """Heartbeats at ``rate`` per second, round robin over the apps; (sent, failed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = failed = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        app = f"app{(offset + sent * SENDERS) % HEARTBEAT_APPS:03}"
        failed += not request(conn, "POST", f"/apps/{app}/heartbeat")
        sent += 1
        ahead = sent / rate - elapsed
        if ahead > 0:
            time.sleep(ahead)
    conn.close()
    return sent, failed


def under_load(port: int, requests: int, seconds: float) -> tuple[list[float], float, int]:
    """GET /apps latencies with LOADED_READERS readers and HEARTBEATS_PER_S heartbeats."""
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    reader = context.Process(target=drain, args=(port, LOADED_READERS, seconds + 5, ready))
    reader.start()
    ready.wait(30)
    with context.Pool(SENDERS) as pool:
        load = pool.starmap_async(heartbeats, [(port, HEARTBEATS_PER_S / SENDERS, seconds, i)
                                               for i in range(SENDERS)])
        time.sleep(1)  # the senders are up to speed
        samples, errors = series(port, "GET", ["/apps"], requests)
        results = load.get()
    reader.join()
    sent = sum(s for s, _ in results)
    return samples, sent / seconds, errors + sum(f for _, f in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transitions", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"orchestratr event bench: {os.cpu_count()} cores, Python {sys.version.split()[0]},"
          f" {datetime.now().isoformat(timespec='seconds')}")
    with tempfile.TemporaryDirectory() as tmp, daemon(Path(tmp)) as port:
        report(f"transition -> SSE delivery, {READERS} readers", delivery(port, args.transitions),
               "p99 <= 10 ms")
        idle, _ = series(port, "GET", ["/apps"], args.requests)
        report("GET /apps, no readers, no heartbeats", idle, "reference")
        loaded, rate, errors = under_load(port, args.requests, args.seconds)
        report(f"GET /apps, {LOADED_READERS} readers, {rate:.0f} heartbeats/s", loaded,
               f"p99 <= 5 ms; {errors} errors")
    if errors:
        sys.exit(f"{errors} requests failed")


if __name__ == "__main__":
    main()
