"""Supervisor figures: launch, exit detection, crash restart, cold start, idle RSS and CPU.

Run with `make bench` (or `.venv/bin/python bench/supervisor.py [--trials N]`). Every timing is
taken from a transition's own timestamp where one exists, never from polling.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from scale import Log, ended_at_exit, stamp  # bench/ is on sys.path when this script runs

from orchestratr.logs import configure_logging
from orchestratr.paths import Paths
from orchestratr.processes.output import OutputPump
from orchestratr.processes.spawn import ProcessLauncher
from orchestratr.processes.tracker import ProcessTracker
from orchestratr.registry.model import AppSpec, Registry, RestartPolicy
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.launcher import RunningRecord
from orchestratr.supervisor.states import AppState, Cause, Trigger

S = AppState


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def report(label: str, values_ms: list[float], target: str) -> None:
    print(f"{label:<46} p50 {pct(values_ms, 50):8.2f} ms   p99 {pct(values_ms, 99):8.2f} ms"
          f"   (n={len(values_ms)}; target {target})")


def wait(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(interval)


def close(sup: Supervisor, tracker: ProcessTracker) -> None:
    sup.shutdown(stop_apps=True)
    tracker.stop()
    for pump in PUMPS:
        pump.stop()
        pump.close()
    PUMPS.clear()


PUMPS: list[OutputPump] = []  # the apps' output, through pipes as in the daemon


def in_process(
    apps: list[AppSpec], work: Path, record: RunningRecord | None = None
) -> tuple[Supervisor, ProcessTracker]:
    tracker = ProcessTracker()
    tracker.start()
    pump = OutputPump()
    pump.start()
    PUMPS.append(pump)
    sup = Supervisor(ProcessLauncher(Paths(work, work).app_log, tracker, output=pump),
                     record=record)
    sup.apply_registry(Registry(apps=tuple(apps)))
    return sup, tracker


def bench_launch(trials: int, work: Path, record: RunningRecord | None = None) -> list[float]:
    """supervisor.launch() -> pid known, then stop and wait for stopped (``record``: the
    durable record the daemon keeps; none by default)."""
    sup, tracker = in_process([AppSpec("a", "sleep 600")], work, record)
    samples = []
    for _ in range(trials):
        started = time.perf_counter()
        pid = sup.launch("a", Cause.cli).app.pid
        samples.append((time.perf_counter() - started) * 1000)
        assert pid
        sup.stop("a", Cause.cli)
        wait(lambda: sup.snapshot("a").state is S.stopped)
    close(sup, tracker)
    return samples


def bench_exit_noticed(trials: int, work: Path) -> list[float]:
    """kill -9 of the app's group -> the `exited` transition's own timestamp."""
    sup, tracker = in_process([AppSpec("a", "sleep 600")], work)
    samples = []
    for _ in range(trials):
        pid = sup.launch("a", Cause.cli).app.pid
        assert pid
        time.sleep(0.005)  # let the shell start its child, as a real app would be running
        killed_at = time.time()
        os.killpg(pid, signal.SIGKILL)
        wait(lambda: sup.snapshot("a").state is S.failed)
        exited = sup.snapshot("a").history[-1]
        assert exited.trigger is Trigger.exited
        samples.append((exited.at - killed_at) * 1000)
    close(sup, tracker)
    return samples


def bench_crash_restart(trials: int, work: Path) -> list[float]:
    """kill -9 of a `restart: on-failure` app (delay 0) -> its next `spawned` timestamp.

    One app per trial: the crash-loop limit (5 starts in 10 s) would otherwise stop restarts.
    """
    apps = [AppSpec(f"r{i}", "sleep 600", restart=RestartPolicy.on_failure, restart_delay_ms=0)
            for i in range(trials)]
    sup, tracker = in_process(apps, work)
    samples = []
    for spec in apps:
        pid = sup.launch(spec.name, Cause.cli).app.pid
        assert pid
        time.sleep(0.005)
        killed_at = time.time()
        os.killpg(pid, signal.SIGKILL)
        wait(lambda name=spec.name, old=pid: sup.snapshot(name).pid not in (None, old)
             and sup.snapshot(name).state is S.ready)
        spawned = [h for h in sup.snapshot(spec.name).history if h.trigger is Trigger.spawned][-1]
        samples.append((spawned.at - killed_at) * 1000)
    close(sup, tracker)
    return samples


def write_config(config_dir: Path, apps: int, autostart: bool, extra: str = "") -> None:
    lines = [extra, "apps:"]
    flag = "true" if autostart else "false"
    lines += [f"  - {{name: app{i}, command: sleep 600, autostart: {flag}}}" for i in range(apps)]
    (config_dir / "apps.d").mkdir(parents=True, exist_ok=True)
    (config_dir / "config.yml").write_text("\n".join(lines) + "\n")


def start_daemon(config_dir: Path) -> subprocess.Popen[bytes]:
    return ended_at_exit(subprocess.Popen(
        [sys.executable, "-m", "orchestratr", "daemon", "--config-dir", str(config_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ), config_dir)


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)


def bench_cold_start(trials: int, work: Path) -> list[float]:
    """Process start of `orchestratr daemon` -> the 100th app's `ready` transition."""
    samples = []
    for trial in range(trials):
        config_dir = work / f"cold{trial}"
        write_config(config_dir, 100, autostart=True, extra="stop_apps_on_exit: true")
        log = Log(config_dir)
        started = time.time()
        daemon = start_daemon(config_dir)
        wait(lambda: log.ready(100), timeout=30)  # noqa: B023
        samples.append((max(map(stamp, log.ready(100))) - started) * 1000)
        stop_daemon(daemon)
    return samples


def bench_idle_rss(work: Path) -> float:
    config_dir = work / "rss"
    write_config(config_dir, 100, autostart=False)
    log = Log(config_dir)
    daemon = start_daemon(config_dir)
    wait(lambda: any(e.get("event") == "daemon_started" for e in log.read()))
    time.sleep(2)
    rss = psutil.Process(daemon.pid).memory_info().rss / 2**20
    stop_daemon(daemon)
    return rss


_KEEP_OUT = "from orchestratr.lean import keep_out_unused\nkeep_out_unused()\n"
# the standard modules the daemon and the CLI it starts from use, and the libraries it is
# built on (issue 16's stack): nothing of the daemon's own
STACK_IMPORTS = ("import argparse, ctypes, http.server, json, logging, selectors, signal, socket, "
          "subprocess, threading\nimport attrs, cattrs, structlog, transitions, yaml\n")
DAEMON_IMPORTS = "import orchestratr.cli.main, orchestratr.client, orchestratr.daemon\n"
_THEN_IDLE = """
import ctypes, gc, time
gc.collect()
ctypes.CDLL(None).malloc_trim(0)
print(flush=True)
time.sleep(60)
"""


def bench_import_rss(imports: str) -> float:
    """A floor under idle RSS: a process that imports ``imports`` (with the modules the
    daemon keeps out kept out) and runs nothing."""
    proc = subprocess.Popen([sys.executable, "-c", _KEEP_OUT + imports + _THEN_IDLE],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline() or proc.poll() is not None:
            raise RuntimeError(f"the imports failed: {imports!r}")  # not a floor of 0 MiB
        return float(psutil.Process(proc.pid).memory_info().rss / 2**20)
    finally:
        proc.kill()
        proc.wait()


def bench_idle_cpu(work: Path, seconds: float) -> float:
    config_dir = work / "cpu"
    write_config(config_dir, 20, autostart=True, extra="stop_apps_on_exit: true")
    log = Log(config_dir)
    daemon = start_daemon(config_dir)
    wait(lambda: log.ready(20))
    time.sleep(1)
    proc = psutil.Process(daemon.pid)
    before, clock = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = proc.cpu_times(), time.monotonic() - clock
    stop_daemon(daemon)
    used = (after.user - before.user) + (after.system - before.system)
    return used / elapsed * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--cold-trials", type=int, default=50)
    parser.add_argument("--cpu-seconds", type=float, default=30.0)
    args = parser.parse_args()
    configure_logging("error")  # the in-process supervisors would log every transition
    print(f"orchestratr supervisor bench: {os.cpu_count()} cores, Python {sys.version.split()[0]},"
          f" shell {os.environ.get('SHELL') or '/bin/sh'}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report("launch request -> pid known", bench_launch(args.trials, work), "p50 <= 10 ms")
        report("kill -9 -> exit noticed (exited transition)",
               bench_exit_noticed(args.trials, work), "p99 <= 20 ms")
        report("kill -9 (on-failure, delay 0) -> running again",
               bench_crash_restart(args.trials, work), "p50 <= 10 ms")
        report("cold start, 100 autostart apps -> all ready",
               bench_cold_start(args.cold_trials, work), "<= 1000 ms")
        print(f"{'idle RSS, 100 apps registered':<46} {bench_idle_rss(work):8.1f} MiB"
              "   (target <= 22 MiB headless)")
        floor = bench_import_rss(STACK_IMPORTS + DAEMON_IMPORTS)
        print(f"{'  the floor: its modules imported, nothing run':<46} {floor:8.1f} MiB"
              "   (reference)")
        stack = bench_import_rss(STACK_IMPORTS)
        print(f"{'  under it: the stack alone, none of ours':<46} {stack:8.1f} MiB"
              "   (reference: stdlib, structlog, cattrs, attrs, PyYAML, transitions)")
        print(f"{f'idle CPU over {args.cpu_seconds:g} s, 20 apps running':<46} "
              f"{bench_idle_cpu(work, args.cpu_seconds):8.3f} %    (target <= 0.1 %)")


if __name__ == "__main__":
    main()
