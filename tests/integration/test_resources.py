"""Resources: the daemon takes the descriptors it is allowed, and when it runs out of them it
says so and keeps serving, without spinning (issue 16: at ~1,000 apps launches failed with a
bare "Too many open files" and the accept loop spun a whole core)."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import time
from pathlib import Path

import psutil

from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.api.conftest import port_of

SPARE = 12  # descriptors left to the daemon above what it holds when idle


def soft_limit(pid: int) -> tuple[int, int]:
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def test_the_soft_limit_is_raised_to_the_hard_one_and_both_are_logged(
    config_dir: Path, start_daemon
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        daemon: DaemonProcess = start_daemon(wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    event = daemon.wait_event("fd_limit")
    assert (event["soft_was"], event["soft"], event["hard"]) == (low, hard, hard)
    daemon.wait_event("daemon_started")
    assert soft_limit(daemon.proc.pid) == (hard, hard)


def test_out_of_descriptors_it_rests_says_why_and_resumes(
    config_dir: Path, start_daemon
) -> None:
    """With every descriptor taken: the listener rests (one error logged, no spinning), a
    launch fails naming the cause, connections already open are still served, and once
    descriptors are free again new connections are answered."""
    write_config(config_dir, "apps:\n  - name: a\n    command: sleep 60\n")
    daemon: DaemonProcess = start_daemon()
    port = port_of(config_dir)
    served = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    served.request("GET", "/health")
    assert served.getresponse().read()
    pid = daemon.proc.pid
    limit = len(os.listdir(f"/proc/{pid}/fd")) + SPARE
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
    crowd: list[socket.socket] = []
    try:
        for _ in range(SPARE * 3):
            crowd.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        failed = daemon.wait_event("http_accept_failed")
        assert "out of file descriptors" in str(failed["hint"])
        cpu = psutil.Process(pid).cpu_times()
        time.sleep(1.0)
        spent = sum(psutil.Process(pid).cpu_times()[:2]) - sum(cpu[:2])
        assert spent < 0.2, f"the daemon used {spent:.2f} s of CPU in 1 s while out of descriptors"
        assert [e["event"] for e in daemon.events()].count("http_accept_failed") == 1

        served.request("POST", "/apps/a/launch")
        response = served.getresponse()
        body = json.loads(response.read())
        assert response.status >= 400
        assert body["code"] == "launch_failed" and "out of file descriptors" in body["error"], body
    finally:
        for sock in crowd:
            sock.close()
        served.close()
    daemon.wait_event("http_accept_resumed")
    again = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(SPARE * 3)]
    try:  # a shortage again within the minute: served the same way, not logged again
        wait_for(lambda: len(os.listdir(f"/proc/{pid}/fd")) >= limit,
                 what="the daemon out of descriptors again")
        time.sleep(0.2)  # proves no second failure is logged within that time
        assert [e["event"] for e in daemon.events()].count("http_accept_failed") == 1
    finally:
        for sock in again:
            sock.close()

    def answers() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    wait_for(answers, 5.0, what="GET /health answered once descriptors are free")


def wakeups(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far: each is a wake-up."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            total += sum(int(line.split()[1]) for line in status
                         if line.startswith(("voluntary_ctxt_switches",
                                             "nonvoluntary_ctxt_switches")))
    return total


def _quiet_for(pid: int, seconds: float) -> bool:
    before = wakeups(pid)
    time.sleep(seconds)  # the window looked at
    return wakeups(pid) == before


def test_an_idle_daemon_with_apps_running_never_wakes(config_dir: Path, start_daemon) -> None:
    """No periodic tick (issue 16: idle CPU 0 %, where supervisord's 1 s tick costs
    0.3-0.5 %): with 20 apps running and nobody asking, no thread of the daemon wakes."""
    apps = "".join(f"  - {{name: app{i}, command: sleep 600, autostart: true}}\n"
                   for i in range(20))
    write_config(config_dir, "apps:\n" + apps)
    daemon: DaemonProcess = start_daemon()
    wait_for(lambda: sum(e["event"] == "app_transition" and e.get("dst") == "ready"
                         for e in daemon.events()) == 20, 10.0, what="20 apps ready")
    pid = daemon.proc.pid
    # the start-up's last work (the record's lazy writes, the orphan sweep) is over when a
    # short look sees no wake-up; a tick would still show in the long look below
    wait_for(lambda: _quiet_for(pid, 0.2), 10.0, what="the start-up's last work done")
    before, cpu = wakeups(pid), psutil.Process(pid).cpu_times()
    time.sleep(3.0)
    woke = wakeups(pid) - before
    spent = sum(psutil.Process(pid).cpu_times()[:2]) - sum(cpu[:2])
    assert woke <= 3 and spent <= 0.01, f"{woke} wake-ups and {spent:.3f} s of CPU in 3 s"
