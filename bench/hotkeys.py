"""Hotkey figure: chord key event -> app process spawned, on a private Xvfb.

Run with `make bench` (or `.venv/bin/python bench/hotkeys.py [--trials N] [--hogs N]`; needs
Xvfb). The start is taken just before XTest sends the chord key's press; the end is the
timestamp of the app's `launched` transition, which the supervisor records once the process
exists. The bench polls for that transition gently (every POLL_S): polling the API every
millisecond put the bench's own requests on the daemon's CPU and GIL, inside the figure.
`--hogs N` runs N busy `yes` processes meanwhile, for the figure under load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
from scale import write_config
from supervisor import STACK_IMPORTS, bench_import_rss, pct, report, wait

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestratr.client import Client
from tests.integration.hotkeys.conftest import Keyboard, start_xvfb

CONFIG = "apps:\n  - name: editor\n    chord: e\n    command: sleep 60\n"
POLL_S = 0.02


def launched_at(client: Client) -> float | None:
    history = client.app("editor")["history"]
    stamps = [h["at"] for h in history if h["to"] == "launched"]
    if not stamps:
        return None
    return datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")).timestamp()


def trial(client: Client, keyboard: Keyboard) -> float:
    before = launched_at(client)
    keyboard.leader()
    time.sleep(0.02)
    start = time.time()
    keyboard.down("e")
    wait(lambda: launched_at(client) not in (None, before), interval=POLL_S)
    keyboard.up("e")
    took = (launched_at(client) or 0) - start
    client.stop("editor")
    wait(lambda: client.app("editor")["state"] == "stopped", interval=POLL_S)
    return took * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--hogs", type=int, default=0, help="busy processes running meanwhile")
    args = parser.parse_args()
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(args.hogs)]
    try:
        times, name = measure(args.trials)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"# orchestratr hotkey bench, {datetime.now():%Y-%m-%d}, Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, Xvfb {name}, {args.hogs} CPU hogs")
    report("chord key press -> app process spawned", times, "p99 <= 30 ms")
    assert pct(times, 99) < 200, "far outside the target"
    rss, stack = idle_rss()
    print(f"{'idle RSS, 100 apps registered, hotkeys on':<46} {rss:8.1f} MiB"
          "   (target <= 27 MiB)")
    print(f"{'  under it: the stack and pynput, none of ours':<46} {stack:8.1f} MiB"
          "   (reference: bench/supervisor.py's stack, python-xlib, pynput)")


def idle_rss() -> tuple[float, float]:
    """The daemon's resident memory 2 s after it started, with 100 apps registered and its
    hotkeys listening on a fresh Xvfb (pynput, python-xlib and the grab thread loaded); and
    the floor of the libraries it is built on, with those two, on the same display."""
    xvfb, name = start_xvfb()
    os.environ["DISPLAY"] = name
    with tempfile.TemporaryDirectory() as work:
        config_dir = Path(work)
        write_config(config_dir, 100, autostart=False)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "orchestratr", "daemon", "--config-dir", work, "--port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait(lambda: (config_dir / "port").exists())
            client = Client(config_dir=config_dir)
            wait(lambda: client.request("GET", "/hotkeys")["enabled"])
            time.sleep(2)
            rss = float(psutil.Process(daemon.pid).memory_info().rss / 2**20)
            return rss, bench_import_rss(STACK_IMPORTS + "import Xlib.display, pynput.keyboard\n")
        finally:
            daemon.terminate()
            daemon.wait()
            xvfb.terminate()


def measure(trials: int) -> tuple[list[float], str]:
    """``trials`` chord presses against a fresh daemon on a fresh Xvfb, in ms."""
    xvfb, name = start_xvfb()
    os.environ["DISPLAY"] = name
    with tempfile.TemporaryDirectory() as work:
        config_dir = Path(work)
        (config_dir / "config.yml").write_text(CONFIG)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "orchestratr", "daemon", "--config-dir", work, "--port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait(lambda: (config_dir / "port").exists())
            client, keyboard = Client(config_dir=config_dir), Keyboard(name)
            wait(lambda: client.request("GET", "/hotkeys")["enabled"])
            while client.request("GET", "/hotkeys")["keys_seen"] == 0:  # pynput start-up race
                keyboard.tap("Shift_L")
                time.sleep(0.005)
            return [trial(client, keyboard) for _ in range(trials)], name
        finally:
            daemon.terminate()
            daemon.wait()
            xvfb.terminate()


if __name__ == "__main__":
    main()
