"""orchestratr and supervisord side by side, the same workload, each figure as a ratio.

Run with `make bench` (or `.venv/bin/python bench/vs_supervisord.py [--apps N] [--kills N]`).
supervisord (PyPI ``supervisor``) is installed into a venv of its own under
``$XDG_CACHE_HOME/orchestratr-bench`` the first time (pip, from the package index). Both run
``APPS`` programs of ``sleep 600``, started at once, with exits and restarts observed the
same way: the line each daemon writes to its own log, seen the moment it is written, and the
answer of its list call (GET /apps; XML-RPC getAllProcessInfo, what supervisorctl status
calls). A ratio above 1 means orchestratr is ahead.
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
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

import psutil
import scale  # bench/ is on sys.path when this script runs
from api import CLIENTS, throughput
from scale import (
    Log,
    LogTail,
    dist,
    ended_at_exit,
    pct,
    port_of,
    start,
    stop,
    wait,
    write_config,
)

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "orchestratr-bench"


def supervisord_venv() -> Path:
    venv = CACHE / "supervisord-venv"
    if not (venv / "bin" / "supervisord").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "supervisor"],
                       check=True)
    return venv


def supervisord_conf(work: Path, apps: int, autorestart: bool) -> tuple[Path, int]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lines = ["[supervisord]", f"logfile={work}/supervisord.log", "loglevel=info",
             f"pidfile={work}/supervisord.pid", "nodaemon=true", "minfds=4096",
             "[inet_http_server]", f"port=127.0.0.1:{port}",
             "[rpcinterface:supervisor]",
             "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface"]
    for i in range(apps):
        lines += [f"[program:app{i:04d}]", "command=sleep 600", "startsecs=0",
                  f"autorestart={'true' if autorestart else 'false'}", "startretries=1000",
                  "stopsignal=KILL", "stdout_logfile=NONE", "stderr_logfile=NONE"]
    conf = work / "supervisord.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf, port


class Supervisord:
    def __init__(self, venv: Path, work: Path, apps: int, autorestart: bool = False) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.apps = work, apps
        conf, self.port = supervisord_conf(work, apps, autorestart)
        self.log = work / "supervisord.log"
        self.log.write_text("")
        self.started = time.time()
        self.proc = ended_at_exit(subprocess.Popen(
            [str(venv / "bin" / "supervisord"), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")

    def running_lines(self) -> list[str]:
        return [x for x in self.log.read_text().splitlines() if "entered RUNNING state" in x]

    def all_running_at(self) -> float:
        """When the last program entered RUNNING, from supervisord's own log time stamps."""
        wait(lambda: len(self.running_lines()) >= self.apps, timeout=120)
        last = max(self.running_lines())[:23]
        return time.mktime(time.strptime(last[:19], "%Y-%m-%d %H:%M:%S")) + int(last[20:]) / 1000

    def pid(self, name: str) -> int:
        return int(self.rpc.supervisor.getProcessInfo(name)["pid"])

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def ratio(label: str, ours: float, theirs: float, unit: str = "ms",
          more_is_better: bool = False) -> None:
    """One figure of both, and how far ahead orchestratr is (above 1: ahead)."""
    better, worse = (ours, theirs) if more_is_better else (theirs, ours)
    times = better / worse if worse else (float("inf") if better else 1.0)
    print(f"{label:<44} orchestratr {ours:9.3f} {unit:<4} supervisord {theirs:9.3f} {unit:<4}"
          f" ratio {times:7.2f}x", flush=True)


def on_cpu(pid: int) -> tuple[float, int]:
    """Seconds on a CPU (schedstat, in ns: clock ticks are too coarse for an idle daemon)
    and wake-ups (context switches), over every thread of ``pid``."""
    seconds, wakeups = 0.0, 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
            seconds += int(stat.read().split()[0]) / 1e9
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            wakeups += sum(int(line.split()[1]) for line in status
                           if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))
    return seconds, wakeups


def idle(pids: tuple[int, int], seconds: float) -> list[tuple[float, int]]:
    """Each daemon's CPU (% of one core) and wake-ups over the same ``seconds``, unasked."""
    before = [on_cpu(pid) for pid in pids]
    time.sleep(seconds)
    after = [on_cpu(pid) for pid in pids]
    return [(100 * (a[0] - b[0]) / seconds, a[1] - b[1])
            for a, b in zip(after, before, strict=True)]


def rpc_hammer(url: str, seconds: float) -> tuple[int, int]:
    """One client of supervisord: getAllProcessInfo until time is up; (done, errors)."""
    rpc = xmlrpc.client.ServerProxy(url)
    done = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            rpc.supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            errors += 1
        done += 1
    return done, errors


def rpc_throughput(url: str, seconds: float) -> float:
    """Calls per second of CLIENTS client processes, as api.throughput counts ours."""
    with multiprocessing.Pool(CLIENTS) as pool:
        started = time.monotonic()
        results = pool.starmap(rpc_hammer, [(url, seconds)] * CLIENTS)
        elapsed = time.monotonic() - started
    return sum(d for d, _ in results) / elapsed


Side = tuple[Callable[[str], int], LogTail, Callable[[str], bytes], Callable[[str], None]]


def nothing(_name: str) -> None:
    """Nothing to do after a kill: the restart policy starts the app again."""


def kill_and_see(sides: tuple[Side, Side], names: list[str]) -> tuple[list[float], list[float]]:
    """kill -9 each app in turn on both sides, alternating (ours then theirs, theirs then
    ours, ...), so a drift in the machine's speed (this VM's drifts by 10-60 % within an
    hour) and the other side's last restart weigh on both alike; each sample ends when the
    side's log shows the exit (``needle``), then ``after`` starts the app again. A side is
    (pid_of, tail, needle, after)."""
    samples: tuple[list[float], list[float]] = ([], [])
    for i, name in enumerate(names):
        pairs = list(zip(sides, samples, strict=True))
        for (pid_of, tail, needle, after), out in pairs if i % 2 == 0 else pairs[::-1]:
            pid = pid_of(name)
            time.sleep(0.02)  # a pace between trials, not a wait for anything
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            out.append((tail.wait_for(needle(name)) - killed) * 1000)
            after(name)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="of each throughput run")
    args = parser.parse_args()
    venv = supervisord_venv()
    version = subprocess.run([str(venv / "bin" / "supervisord"), "--version"],
                             capture_output=True, text=True).stdout.strip()
    print(f"orchestratr vs supervisord {version}: {args.apps} apps of `sleep 600`, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    names = [f"app{i:04d}" for i in range(args.kills)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # cold start, idle RSS, list, kill -> exited: autorestart off on both sides
        config_dir = work / "orch"
        write_config(config_dir, args.apps, autostart=True)
        log = Log(config_dir)
        began = time.time()
        ours = start(config_dir)
        wait(lambda: log.ready(args.apps))
        ours_cold = (max(map(scale.stamp, log.ready(args.apps))) - began) * 1000
        sup = Supervisord(venv, work / "sup", args.apps)
        theirs_cold = (sup.all_running_at() - sup.started) * 1000
        ratio("cold start -> all running", ours_cold, theirs_cold)
        time.sleep(2)
        ratio("idle RSS", psutil.Process(ours.pid).memory_info().rss / 2**20,
              psutil.Process(sup.proc.pid).memory_info().rss / 2**20, "MiB")
        (ours_cpu, ours_wakes), (theirs_cpu, theirs_wakes) = idle(
            (ours.pid, sup.proc.pid), args.idle_seconds)
        ratio(f"idle CPU over {args.idle_seconds:g} s", ours_cpu, theirs_cpu, "%")
        ratio(f"idle wake-ups over {args.idle_seconds:g} s", ours_wakes, theirs_wakes, "")
        ours_rate, _ = throughput(port_of(config_dir), args.seconds)
        theirs_rate = rpc_throughput(f"http://127.0.0.1:{sup.port}/RPC2", args.seconds)
        ratio(f"list all apps, {CLIENTS} client processes", ours_rate, theirs_rate, "/s",
              more_is_better=True)
        conn = http.client.HTTPConnection("127.0.0.1", port_of(config_dir), timeout=10)
        ours_list, theirs_list = [], []
        for _ in range(300):
            t = time.perf_counter()
            scale.get(conn, "/apps")
            ours_list.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            sup.rpc.supervisor.getAllProcessInfo()
            theirs_list.append((time.perf_counter() - t) * 1000)
        ratio("list all apps, p50", pct(ours_list, 50), pct(theirs_list, 50))
        ratio("list all apps, p99", pct(ours_list, 99), pct(theirs_list, 99))

        def our_pid(name: str) -> int:
            conn.request("GET", f"/apps/{name}")
            response = conn.getresponse()
            return int(__import__("json").loads(response.read())["pid"])

        def relaunch(name: str) -> None:
            conn.request("POST", f"/apps/{name}/launch")
            conn.getresponse().read()

        ours_tail, theirs_tail = LogTail(config_dir / "logs" / "orchestratr.log"), LogTail(sup.log)
        ours_exit, theirs_exit = kill_and_see((
            (our_pid, ours_tail,
             lambda n: f'"app": "{n}", "src": "ready", "dst": "failed"'.encode(), relaunch),
            (sup.pid, theirs_tail, lambda n: f"exited: {n} ".encode(),
             lambda n: sup.rpc.supervisor.startProcess(n)),
        ), names)
        ours_tail.close()
        theirs_tail.close()
        ratio("kill -9 -> exit in the log, p50", pct(ours_exit, 50), pct(theirs_exit, 50))
        ratio("kill -9 -> exit in the log, p99", pct(ours_exit, 99), pct(theirs_exit, 99))
        conn.close()
        stop(ours, config_dir)
        sup.close()
        # crash -> running again: autorestart on both sides, delay 0 for orchestratr
        config_dir = work / "orch-restart"
        write_config(config_dir, args.apps, autostart=True, restart="on-failure")
        log = Log(config_dir)
        ours = start(config_dir)
        wait(lambda: log.ready(args.apps))
        conn = http.client.HTTPConnection("127.0.0.1", port_of(config_dir), timeout=10)
        sup = Supervisord(venv, work / "sup-restart", args.apps, autorestart=True)
        sup.all_running_at()
        ours_tail, theirs_tail = LogTail(config_dir / "logs" / "orchestratr.log"), LogTail(sup.log)
        ours_again, theirs_again = kill_and_see((
            (our_pid, ours_tail,
             lambda n: f'"app": "{n}", "src": "launched", "dst": "ready"'.encode(), nothing),
            (sup.pid, theirs_tail, lambda n: f"success: {n} entered RUNNING".encode(),
             nothing),
        ), names[:5])
        ours_tail.close()
        theirs_tail.close()
        ratio("kill -9 -> running again, p50", pct(ours_again, 50), pct(theirs_again, 50))
        print("  (orchestratr:", dist(ours_again), "; supervisord:", dist(theirs_again), ")")
        conn.close()
        stop(ours, config_dir)
        sup.close()


if __name__ == "__main__":
    main()
