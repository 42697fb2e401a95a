"""Apps talking through orchestratr (issue 15): a message into another app's open inbox, and
published events fanned out to many stream readers.

Run with `.venv/bin/python bench/messaging.py [--messages N] [--events N]` (also in `make
bench`). The daemon is the real one (see bench/api.py). The receiving app and the readers are
other processes, reading real sockets; times are CLOCK_MONOTONIC, which every process on the
machine shares, so a message's latency runs from just before the sender's POST to the moment
the receiver has the whole event.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import selectors
import sys
import tempfile
import time
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path

from api import daemon, series  # bench/ is on sys.path when this script runs
from events import subscribe
from supervisor import report

READERS = 50
SENDER, RECEIVER = "app000", "app001"


def post(conn: http.client.HTTPConnection, path: str, body: dict[str, object]) -> dict[str, object]:
    conn.request("POST", path, body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    if response.status != 202:
        raise RuntimeError(answer)
    return answer


# ------------------------------------------------------------------ messages


def receive(port: int, out: Connection) -> None:
    """The receiving app: reads its inbox and reports ``(id, when)`` for each message."""
    sock = subscribe(port, "since=0", path=f"/apps/{RECEIVER}/messages")
    out.send(("ready", 0.0))
    buffer = b""
    while chunk := sock.recv(65536):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        now = time.monotonic()
        for line in lines:
            if line.startswith(b"id: "):
                out.send((int(line[4:]), now))


def messages(port: int, count: int) -> tuple[list[float], list[float]]:
    """Latency (ms) of ``count`` messages, one at a time, from the sender's POST to the
    receiver's read; and the POSTs' own round trips."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    reader = context.Process(target=receive, args=(port, theirs), daemon=True)
    reader.start()
    ours.recv()  # connected
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, posts = [], []
    for n in range(count + 50):  # the first 50 warm up
        started = time.monotonic()
        sent = post(conn, f"/apps/{RECEIVER}/message", {"from": SENDER, "data": {"n": n}})
        answered = time.monotonic()
        if sent["delivered"] != 1:
            raise RuntimeError(f"message {n} reached {sent['delivered']} readers")
        ident, arrived = ours.recv()
        if ident != sent["id"]:
            raise RuntimeError(f"got {ident}, sent {sent['id']}")
        if n >= 50:
            latencies.append((arrived - started) * 1000)
            posts.append((answered - started) * 1000)
    conn.close()
    reader.kill()
    return latencies, posts


# ------------------------------------------------------------------ publish


def read_all(port: int, expected: int, out: Connection) -> None:
    """READERS stream readers in one process; reports when each has ``expected`` events."""
    socks = [subscribe(port, "type=load") for _ in range(READERS)]
    selector = selectors.DefaultSelector()
    counts = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        counts[sock] = 0
    out.send(("ready", 0.0))
    done = 0
    while done < READERS:
        for key, _ in selector.select(timeout=10):
            sock = key.fileobj
            chunk = sock.recv(262144)  # type: ignore[union-attr]
            before = counts[sock] >= expected
            counts[sock] += chunk.count(b"event: load\n")
            if not before and counts[sock] >= expected:
                done += 1
    out.send(("all", time.monotonic()))


def publish_some(port: int, first: int, count: int) -> list[float]:
    """One client publishing ``count`` events, one after another: their POST latencies."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    for n in range(first, first + count):
        before = time.monotonic()
        post(conn, "/events", {"source": SENDER, "type": "load", "data": {"n": n}})
        latencies.append((time.monotonic() - before) * 1000)
    conn.close()
    return latencies


def publish(port: int, count: int, clients: int) -> tuple[float, float, list[float]]:
    """``count`` events published by ``clients`` processes while READERS follow the stream:
    (events/s accepted, seconds until every reader had every event, POST latencies)."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    readers = context.Process(target=read_all, args=(port, count, theirs), daemon=True)
    readers.start()
    ours.recv()
    share = count // clients
    with context.Pool(clients) as pool:
        started = time.monotonic()
        parts = pool.starmap(publish_some, [(port, i * share, share) for i in range(clients)])
        accepted = time.monotonic() - started
    _, finished = ours.recv()
    readers.join(10)
    return count / accepted, finished - started, [x for part in parts for x in part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--events", type=int, default=4000)
    args = parser.parse_args()
    print(f"orchestratr messaging bench: {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}, {datetime.now().isoformat(timespec='seconds')}")
    with tempfile.TemporaryDirectory() as tmp, daemon(Path(tmp)) as port:
        series(port, "GET", ["/health"], 10)  # the daemon answers
        latencies, posts = messages(port, args.messages)
        report(f"message -> open inbox, {args.messages} messages", latencies, "p99 <= 5 ms")
        report("  the POST /apps/{name}/message alone", posts, "reference")
        for clients in (1, 4):
            rate, all_in, publishes = publish(port, args.events, clients)
            report(f"POST /events, {clients} client(s), {READERS} readers", publishes,
                   "reference")
            print(f"  {rate:.0f} events/s accepted; all {READERS} readers had all "
                  f"{args.events} events {all_in:.2f} s after the first "
                  f"({args.events * READERS / all_in:.0f} deliveries/s)")

if __name__ == "__main__":
    main()
