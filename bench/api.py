"""HTTP API figures: per-request latency of /health, /apps and /apps/{name}/ready, and throughput.

Run with `make bench` (or `.venv/bin/python bench/api.py [--requests N] [--seconds S]`). The
daemon is the real one, run as a subprocess with 100 stopped apps and its request log on, so the
figures include everything a client pays. Each series reuses one keep-alive connection, as a
client library would; the throughput clients are processes, so our GIL is not the bottleneck.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from supervisor import report  # bench/ is on sys.path when this script runs

APPS = 100
WARMUP = 200
CLIENTS = 8


@contextmanager
def daemon(config_dir: Path) -> Iterator[int]:
    """A daemon with APPS stopped apps, each with a lease (events.py heartbeats them: a
    heartbeat for an app without one is refused); yields its port once it listens."""
    lines = ["apps:"] + [f"  - {{name: app{i:03}, command: sleep 600, lease_secs: 90}}"
                         for i in range(APPS)]
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.yml").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestratr", "daemon", "--config-dir", str(config_dir),
         "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = config_dir / "port"
    deadline = time.monotonic() + 30
    try:
        while not port_file.exists():  # written atomically, so it is whole once it exists
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start (exit code {proc.poll()})")
            time.sleep(0.01)
        yield int(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def request(conn: http.client.HTTPConnection, method: str, path: str) -> bool:
    """One request on a keep-alive connection, body read fully; True when it answered 2xx."""
    try:
        if method == "POST":
            conn.request(method, path, body=b"{}", headers={"Content-Type": "application/json"})
        else:
            conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return 200 <= response.status < 300
    except (OSError, http.client.HTTPException):
        conn.close()  # http.client reconnects on the next request
        return False


def series(port: int, method: str, paths: list[str], n: int) -> tuple[list[float], int]:
    """Latencies (ms) of n requests cycling through paths, after WARMUP unmeasured ones."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples, errors = [], 0
    for i in range(WARMUP + n):
        started = time.perf_counter()
        ok = request(conn, method, paths[i % len(paths)])
        if i >= WARMUP:
            samples.append((time.perf_counter() - started) * 1000)
            errors += not ok
    conn.close()
    return samples, errors


def hammer(port: int, seconds: float) -> tuple[int, int]:
    """One throughput client: GET /apps on one connection until time is up; (done, errors)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        errors += not request(conn, "GET", "/apps")
        done += 1
    conn.close()
    return done, errors


def throughput(port: int, seconds: float) -> tuple[float, int]:
    """Requests per second of CLIENTS concurrent client processes, and their error count."""
    with multiprocessing.Pool(CLIENTS) as pool:
        started = time.monotonic()
        results = pool.starmap(hammer, [(port, seconds)] * CLIENTS)
        elapsed = time.monotonic() - started
    return sum(d for d, _ in results) / elapsed, sum(e for _, e in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"orchestratr API bench: {os.cpu_count()} cores, Python {sys.version.split()[0]},"
          f" {datetime.now().isoformat(timespec='seconds')}")
    names = [f"app{i:03}" for i in range(APPS)]
    errors = 0
    with tempfile.TemporaryDirectory() as tmp, daemon(Path(tmp)) as port:
        for label, method, paths, target in [
            ("GET /health", "GET", ["/health"], "p99 << 50 ms"),
            (f"GET /apps ({APPS} apps)", "GET", ["/apps"], "p99 <= 2 ms"),
            ("POST /apps/{name}/ready (round robin)", "POST",
             [f"/apps/{n}/ready" for n in names], "p99 << 50 ms"),
        ]:
            samples, failed = series(port, method, paths, args.requests)
            report(label, samples, f"{target}; {failed} errors")
            errors += failed
        rate, failed = throughput(port, args.seconds)
        errors += failed
        print(f"{f'GET /apps, {CLIENTS} client processes, {args.seconds:g} s':<46} {rate:8.0f} "
              f"req/s   ({failed} errors; target >= 2000 req/s, 0 errors)")
    if errors:
        sys.exit(f"{errors} requests failed")


if __name__ == "__main__":
    main()
