"""Crowd figures (issue 12): GET /apps under 8, 64 and 128 keep-alive clients (wrk), and waves
of event-stream readers hanging up together (/health p99 during and after, threads and
descriptors back to baseline, SIGTERM exit time).

Run with `.venv/bin/python bench/crowds.py` (wrk from Debian's package `wrk`). The daemon is
the real one with 100 stopped apps (see bench/api.py).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.integration.api.test_crowds import fds_of, open_readers, threads_of

APPS = 100


def start(config_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    lines = ["apps:"] + [f"  - {{name: app{i:03}, command: sleep 600, autostart: false}}"
                         for i in range(APPS)]
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.yml").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "orchestratr", "daemon", "--config-dir",
                             str(config_dir), "--port", "0", "--no-hotkeys"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = config_dir / "port"
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("daemon did not start")
        time.sleep(0.01)
    return proc, int(port_file.read_text())


def wrk(port: int, clients: int, seconds: int) -> str:
    out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency",
                          f"http://127.0.0.1:{port}/apps"], capture_output=True, text=True,
                         check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    latency = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    errors = re.search(r"Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)", out)
    return (f"{float(rate.group(1)) if rate else 0:8.0f} req/s  p99 {p99.group(1) if p99 else '?'}"
            f"  max {latency.group(1) if latency else '?'}  errors: "
            f"{errors.group(0) if errors else 'none'}")


def health_ms(port: int, samples: int = 50) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def waves(port: int, pid: int, count: int = 3, size: int = 256) -> None:
    [(first, _)] = open_readers(port, 1)
    first.close()
    time.sleep(1)  # a named pause: the first reader's leftovers settle before the baseline
    threads, fds = threads_of(pid), fds_of(pid)
    during: list[float] = []
    after: list[float] = []
    back: list[float] = []
    for _ in range(count):
        readers = open_readers(port, size)
        assert all(status == 200 for _, status in readers)
        during += health_ms(port, 20)
        for sock, _ in readers:
            sock.close()
        closed = time.monotonic()
        while threads_of(pid) > threads or fds_of(pid) > fds:
            if time.monotonic() - closed > 10:
                raise RuntimeError("threads or descriptors did not come back")
            time.sleep(0.01)
        back.append(time.monotonic() - closed)
        after += health_ms(port, 20)
    p99 = lambda v: sorted(v)[int(len(v) * 0.99)]  # noqa: E731
    print(f"{count} waves of {size} readers hanging up together: /health p99 during "
          f"{p99(during):.1f} ms, after {p99(after):.1f} ms; threads and fds back to "
          f"baseline ({threads}, {fds}) within {max(back) * 1000:.0f} ms")


def main() -> None:
    print(f"orchestratr crowd bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(Path(tmp))
        try:
            for clients in (8, 64, 128):
                print(f"GET /apps ({APPS} apps), wrk {clients:3} keep-alive clients, 8 s: "
                      + wrk(port, clients, 8))
            waves(port, proc.pid)
            # 500 readers: over the stream budget, the quietest are let go
            readers = open_readers(port, 500)
            print(f"500 readers at once: {sum(s == 200 for _, s in readers)} answered 200, "
                  f"/health p99 {sorted(health_ms(port, 20))[-1]:.1f} ms")
            for sock, _ in readers:
                sock.close()
        finally:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            print(f"SIGTERM -> exit {code} in {(time.monotonic() - started) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
