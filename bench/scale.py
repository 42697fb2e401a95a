"""Figures at scale, from 1 app to 1,000 (issues 11 and 16), each against a real daemon.

Run with `make bench` (or `.venv/bin/python bench/scale.py [--quick]`). Every timing starts at
an instant this script takes (a Popen, a signal, a kill) and ends at what a user would observe:
a line in the daemon's log (its own timestamp), an event read from the SSE stream, an HTTP
answer, the daemon's exit. The machine's load average is printed first: the figures mean
little on a busy machine.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import psutil

from orchestratr.processes import proctable

LOG = ("logs", "orchestratr.log")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def line(label: str, value: str, target: str) -> None:
    print(f"{label:<58} {value:<28} target {target}", flush=True)


def dist(values: list[float]) -> str:
    return f"p50 {pct(values, 50):7.2f} ms  p99 {pct(values, 99):7.2f} ms"


def wait(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.002)


def write_config(config_dir: Path, apps: int, *, autostart: bool, extra: str = "",
                 restart: str = "never") -> None:
    (config_dir / "apps.d").mkdir(parents=True, exist_ok=True)
    flag = "true" if autostart else "false"
    lines = [extra, "apps:"] + [
        f"  - {{name: app{i:04d}, command: sleep 600, autostart: {flag}, restart: {restart}, "
        "restart_delay_ms: 0}" for i in range(apps)]
    (config_dir / "config.yml").write_text("\n".join(lines) + "\n")


def start(config_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return ended_at_exit(subprocess.Popen(
        [sys.executable, "-m", "orchestratr", "daemon", "--config-dir", str(config_dir),
         "--port", "0", "--no-hotkeys", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), config_dir)


_STARTED: list[tuple[subprocess.Popen[bytes], Path | None]] = []


def ended_at_exit(
    proc: subprocess.Popen[bytes], config_dir: Path | None = None
) -> subprocess.Popen[bytes]:
    """End ``proc`` (and the apps of ``config_dir``) when the bench exits, however it exits:
    a bench that failed half-way once left a daemon and 1,000 apps running."""
    _STARTED.append((proc, config_dir))
    return proc


@atexit.register
def _end_everything() -> None:
    for proc, config_dir in _STARTED:
        with contextlib.suppress(Exception):
            if proc.poll() is None:
                proc.terminate()  # supervisord stops its own programs on SIGTERM
                proc.wait(timeout=30)
        with contextlib.suppress(Exception):
            proc.kill()
        if config_dir is not None:
            kill_apps(config_dir)


class Log:
    """The daemon's log as it grows, each line parsed once: polling with ``events`` re-read
    the whole file every 2 ms, a core of this 2-core machine taken from the daemon it timed
    (4,000 lines by the end of a 1,000-app start)."""

    def __init__(self, config_dir: Path, whole: bool = False) -> None:
        """From now on (``whole``: from the file's start)."""
        self._path = config_dir.joinpath(*LOG)
        self._offset = self._path.stat().st_size if self._path.exists() and not whole else 0
        self._partial = b""
        self.events: list[dict[str, object]] = []

    def read(self) -> list[dict[str, object]]:
        """Every event written since this reader was made."""
        with contextlib.suppress(FileNotFoundError), self._path.open("rb") as handle:
            handle.seek(self._offset)
            data = self._partial + handle.read()
            self._offset = handle.tell()
            *lines, self._partial = data.split(b"\n")
            self.events += [json.loads(line) for line in lines if line.strip()]
        return self.events

    def ready(self, apps: int) -> list[dict[str, object]]:
        """The ``ready`` transitions so far, once ``apps`` apps have one (else none)."""
        ready = [e for e in self.read()
                 if e.get("event") == "app_transition" and e.get("dst") == "ready"]
        return ready if len({e["app"] for e in ready}) >= apps else []


def stamp(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def port_of(config_dir: Path) -> int:
    return int((config_dir / "port").read_text())


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def kill_apps(config_dir: Path) -> None:
    for proc in proctable.scan():
        if proc.app and proctable.same_dir(proc.config_dir, str(config_dir)):
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGKILL)


def stop(daemon: subprocess.Popen[bytes], config_dir: Path) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    kill_apps(config_dir)


# ------------------------------------------------------------------------ figures

def cold_start(work: Path, apps: int, trials: int) -> list[float]:
    """Popen of the daemon -> the last app's ``ready`` line in its log."""
    samples = []
    for trial in range(trials):
        config_dir = work / f"cold{apps}-{trial}"
        write_config(config_dir, apps, autostart=True)
        log = Log(config_dir)
        began = time.time()
        daemon = start(config_dir)
        wait(lambda: log.ready(apps))  # noqa: B023
        samples.append((max(map(stamp, log.ready(apps))) - began) * 1000)
        stop(daemon, config_dir)
    return samples


def restart_adopt(work: Path, apps: int, trials: int) -> tuple[list[float], list[float]]:
    """With ``apps`` running, kill -9 the daemon and start another: Popen -> every app adopted
    (its last log line) and -> the first answer of GET /health."""
    config_dir = work / f"adopt{apps}"
    write_config(config_dir, apps, autostart=True)
    log = Log(config_dir, whole=True)
    daemon = start(config_dir)
    wait(lambda: log.ready(apps))
    adopted, answering = [], []
    for _ in range(trials):
        daemon.kill()
        daemon.wait()
        (config_dir / "port").unlink(missing_ok=True)
        log = Log(config_dir)
        began = time.time()
        daemon = start(config_dir)
        answering.append(first_answer(config_dir, began))
        wait(lambda: sum(1 for e in log.read() if e.get("resumed")) >= apps)  # noqa: B023
        assert not [e for e in log.events if e.get("trigger") == "spawned"]
        adopted.append((max(stamp(e) for e in log.events if e.get("resumed")) - began) * 1000)
    stop(daemon, config_dir)
    return adopted, answering


def first_answer(config_dir: Path, began: float) -> float:
    """ms from ``began`` (wall clock) to the first 200 of GET /health."""
    wait(lambda: (config_dir / "port").exists())
    conn = http.client.HTTPConnection("127.0.0.1", port_of(config_dir), timeout=10)
    while True:
        with contextlib.suppress(OSError):
            if get(conn, "/health") == 200:
                break
        conn.close()
    conn.close()
    return (time.time() - began) * 1000


def startup_floor(work: Path, trials: int) -> list[float]:
    """Popen -> the first answer of GET /health with no app at all: the interpreter, the
    imports and the parts starting, under every start-up figure above."""
    samples = []
    for trial in range(trials):
        config_dir = work / f"empty-{trial}"
        write_config(config_dir, 0, autostart=False)
        began = time.time()
        daemon = start(config_dir)
        samples.append(first_answer(config_dir, began))
        stop(daemon, config_dir)
    return samples


def shutdown(work: Path, apps: int, trials: int) -> list[float]:
    """SIGTERM -> the daemon's exit, with ``apps`` running (left running, as configured)."""
    samples = []
    config_dir = work / f"shutdown{apps}"
    write_config(config_dir, apps, autostart=True)
    for _ in range(trials):
        log = Log(config_dir)
        daemon = start(config_dir)
        wait(lambda: any(e.get("event") == "daemon_started" for e in log.read()))  # noqa: B023
        wait(lambda: log.ready(apps))  # noqa: B023
        began = time.perf_counter()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        samples.append((time.perf_counter() - began) * 1000)
    kill_apps(config_dir)
    return samples


class LogTail:
    """Wakes on every write to the daemon's log (inotify), so a line is seen when written."""

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        self._libc.inotify_add_watch(self._fd, os.fsencode(path), 0x2)  # IN_MODIFY
        self._file = path.open("rb")
        self._file.seek(0, os.SEEK_END)
        self._buffer = b""

    def wait_for(self, needle: bytes, timeout: float = 5.0) -> float:
        """Block until a line holding ``needle`` is written; the wall time it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            self._buffer += self._file.read()
            while b"\n" in self._buffer:
                text, self._buffer = self._buffer.split(b"\n", 1)
                if needle in text:
                    return time.time()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(needle)
            select.select([self._fd], [], [], left)
            with contextlib.suppress(BlockingIOError):
                os.read(self._fd, 4096)

    def close(self) -> None:
        os.close(self._fd)
        self._file.close()


class Stream:
    """The SSE stream of state events, read on a thread; ``wait_for`` a matching event."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._conn.request("GET", "/events/stream?type=state")
        self._response = self._conn.getresponse()
        self._seen: list[tuple[float, dict[str, object]]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for raw in self._response:
                if raw.startswith(b"data:"):
                    at = time.time()
                    with self._cond:
                        self._seen.append((at, json.loads(raw[5:])))
                        self._cond.notify_all()

    def wait_for(self, match: Callable[[dict[str, object]], bool], timeout: float = 5) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, data in self._seen:
                    if match(data):
                        self._seen.clear()
                        return at
                if not self._cond.wait(deadline - time.monotonic()):
                    raise TimeoutError

    def close(self) -> None:
        self._conn.close()


def exits(work: Path, apps: int, trials: int, restart: bool) -> tuple[list[float], list[float]]:
    """kill -9 of one app's process -> the ``exited`` line in the log, and the event on the
    SSE stream (or, with ``restart``, -> the app ``ready`` again, seen on the stream)."""
    config_dir = work / f"exits{apps}{restart}"
    write_config(config_dir, apps, autostart=True,
                 restart="on-failure" if restart else "never")
    log = Log(config_dir, whole=True)
    daemon = start(config_dir)
    wait(lambda: log.ready(apps))
    tail = LogTail(config_dir.joinpath(*LOG))
    stream = Stream(port_of(config_dir))
    in_log, on_stream = [], []
    conn = http.client.HTTPConnection("127.0.0.1", port_of(config_dir), timeout=10)
    for trial in range(trials):
        name = f"app{trial % apps:04d}"
        conn.request("GET", f"/apps/{name}")
        response = conn.getresponse()
        pid = json.loads(response.read())["pid"]
        time.sleep(0.02)  # the machine settles between trials (a pace, not a wait)
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        if restart:
            seen = stream.wait_for(lambda d, n=name: d["app"] == n and d["to"] == "ready")
            on_stream.append((seen - killed) * 1000)
            continue
        logged = tail.wait_for(f'"app": "{name}", "src": "ready", "dst": "failed"'.encode())
        seen = stream.wait_for(lambda d, n=name: d["app"] == n and d["trigger"] == "exited")
        in_log.append((logged - killed) * 1000)
        on_stream.append((seen - killed) * 1000)
        conn.request("POST", f"/apps/{name}/launch")
        conn.getresponse().read()
        stream.wait_for(lambda d, n=name: d["app"] == n and d["to"] == "ready")
    conn.close()
    stream.close()
    tail.close()
    stop(daemon, config_dir)
    return in_log, on_stream


_FLOOR = r"""
import json, os, select, subprocess, sys
log = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
apps = int(sys.argv[2])
procs = [subprocess.Popen(["sleep", "600"], start_new_session=True) for _ in range(apps)]
epoll, fds = select.epoll(), {}
for proc in procs:
    fd = os.pidfd_open(proc.pid)
    fds[fd] = proc
    epoll.register(fd, select.EPOLLIN)
print(" ".join(str(proc.pid) for proc in procs), flush=True)
while fds:
    for fd, _ in epoll.poll():
        proc = fds.pop(fd)
        epoll.unregister(fd)
        os.close(fd)
        line = {"event": "exited", "pid": proc.pid, "code": proc.wait()}
        os.write(log, (json.dumps(line) + "\n").encode())
"""


def exit_floor(work: Path, apps: int, trials: int) -> list[float]:
    """The same kill -> line in a log, from the least a Python supervisor can do: one thread
    waiting on ``apps`` pidfds and appending a line per exit. What the daemon adds is the rest."""
    path = work / "floor.log"
    path.write_text("")
    proc = ended_at_exit(subprocess.Popen([sys.executable, "-c", _FLOOR, str(path), str(apps)],
                                          stdout=subprocess.PIPE, text=True))
    assert proc.stdout is not None
    pids = [int(pid) for pid in proc.stdout.readline().split()]
    tail, samples = LogTail(path), []
    for pid in pids[:trials]:
        time.sleep(0.02)
        began = time.time()
        os.kill(pid, signal.SIGKILL)
        samples.append((tail.wait_for(f'"pid": {pid},'.encode()) - began) * 1000)
    tail.close()
    for pid in pids[trials:]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return samples


def requests(work: Path, apps: int, n: int, path: str) -> list[float]:
    """GET ``path`` on one keep-alive connection, request logging on at info."""
    config_dir = work / f"requests{apps}"
    write_config(config_dir, apps, autostart=False, extra="log_level: info")
    daemon = start(config_dir)
    wait(lambda: (config_dir / "port").exists())
    conn = http.client.HTTPConnection("127.0.0.1", port_of(config_dir), timeout=10)
    samples = []
    for i in range(n + 200):
        began = time.perf_counter()
        assert get(conn, path) == 200
        if i >= 200:  # warm-up first
            samples.append((time.perf_counter() - began) * 1000)
    conn.close()
    stop(daemon, config_dir)
    return samples


def at_1000(work: Path, apps: int, seconds: float) -> tuple[int, list[float], float]:
    """``apps`` running: launches that failed, GET /health latencies, idle CPU %."""
    config_dir = work / f"big{apps}"
    write_config(config_dir, apps, autostart=True)
    log = Log(config_dir, whole=True)
    daemon = start(config_dir)
    wait(lambda: len({e["app"] for e in log.read() if e.get("event") in
                      ("app_transition", "launch_failed") and e.get("dst") in ("ready", "failed")
                      }) >= apps, timeout=120)
    failed = sum(1 for e in log.events if e.get("event") == "launch_failed")
    conn = http.client.HTTPConnection("127.0.0.1", port_of(config_dir), timeout=10)
    health = []
    for _ in range(1000):
        began = time.perf_counter()
        get(conn, "/health")
        health.append((time.perf_counter() - began) * 1000)
    conn.close()
    time.sleep(1)
    proc = psutil.Process(daemon.pid)
    before, clock = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after = proc.cpu_times()
    cpu = ((after.user - before.user) + (after.system - before.system)) / (
        time.monotonic() - clock) * 100
    stop(daemon, config_dir)
    return failed, health, cpu


def launch_durable(work: Path, trials: int) -> list[float]:
    """In-process: Supervisor.launch -> pid known, with the durable record (fsync'd)."""
    from supervisor import bench_launch  # bench/ is on sys.path when this script runs

    from orchestratr.logs import configure_logging
    from orchestratr.processes.journal import Journal

    configure_logging("error")
    journal = Journal(work / "running.json", work / "running.journal")
    journal.open()
    try:
        return bench_launch(trials, work, record=journal)
    finally:
        journal.close()


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    # ignoring errors: the drain process of apps left running may still be writing their
    # logs while the directory goes (the bench once died there, after printing its figures)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    parser.add_argument("--only", choices=["exits"], help="one figure only")
    args = parser.parse_args()
    if args.only == "exits":
        with workdir() as work:
            in_log, on_stream = exits(work, 100, 100, restart=False)
            line("kill -9 -> `exited` in the log, 100 apps", dist(in_log), "p50 <= 1 ms")
            line("kill -9 -> `exited` on the SSE stream", dist(on_stream), "p50 <= 1 ms")
            line("  the floor: a bare pidfd watcher's line", dist(exit_floor(work, 100, 100)),
                 "reference")
            _, again = exits(work, 100, 90, restart=True)
            line("kill -9 (on-failure, delay 0) -> ready again", dist(again), "p50 <= 3 ms")
        return
    trials = 3 if args.quick else 10
    kills = 30 if args.quick else 200
    print(f"orchestratr scale bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f} (1 min), RLIMIT_NOFILE hard "
          f"{__import__('resource').getrlimit(__import__('resource').RLIMIT_NOFILE)[1]}")
    with workdir() as work:
        line("launch -> pid known, durable record (fsync'd)",
             dist(launch_durable(work, 50 if args.quick else 200)), "p99 <= 2 ms")
        for apps, target in ((100, "<= 300 ms"), (1000, "<= 2000 ms")):
            line(f"cold start, {apps} autostart apps -> all ready",
                 dist(cold_start(work, apps, trials)), target)
        for apps, target in ((100, "<= 150 ms"), (1000, "<= 1000 ms")):
            adopted, answering = restart_adopt(work, apps, trials)
            line(f"restart with {apps} running -> all adopted", dist(adopted), target)
            line(f"restart with {apps} running -> API answering", dist(answering), target)
        line("  the floor: no app at all, Popen -> API answering",
             dist(startup_floor(work, trials)), "reference")
        line("SIGTERM -> daemon exited, 1000 apps running", dist(shutdown(work, 1000, trials)),
             "<= 200 ms")
        in_log, on_stream = exits(work, 100, kills, restart=False)
        line("kill -9 -> `exited` in the log, 100 apps", dist(in_log), "p50 <= 1, p99 <= 2 ms")
        line("kill -9 -> `exited` on the SSE stream, 100 apps", dist(on_stream),
             "p50 <= 1, p99 <= 2 ms")
        line("  the floor: a bare pidfd watcher's line", dist(exit_floor(work, 100, 100)),
             "reference")
        _, again = exits(work, 100, min(kills, 90), restart=True)
        line("kill -9 (on-failure, delay 0) -> ready again (SSE)", dist(again), "p50 <= 3 ms")
        line("GET /apps, 100 apps, request log at info", dist(requests(work, 100, 2000, "/apps")),
             "p99 <= 1 ms")
        failed, health, cpu = at_1000(work, 1000, 10 if args.quick else 30)
        line("1000 apps: launches failed", str(failed), "0")
        line("1000 apps: GET /health", dist(health), "p99 <= 5 ms")
        line("1000 apps: idle CPU", f"{cpu:.3f} %", "0 %")


if __name__ == "__main__":
    main()
