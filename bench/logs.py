"""Log figures: ``GET /apps/{name}/logs?lines=1000`` on a 50 MB log, and how soon ``orchestratr
top`` shows a transition.

Run with `make bench` (or `.venv/bin/python bench/logs.py [--requests N] [--transitions N]`).
The daemon is the real one, as a subprocess. The log is 50 MB written before the daemon starts
(as one left by an app before rotation while running existed): the answer must come from the
file's end, never from reading it whole. For ``top``, the real view runs headless (Textual's
pilot) against the daemon; each transition's latency runs from its timestamp on the event bus
to the moment the view's row holds it (drawing it follows at the next frame, at most 1/60 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from api import daemon, series  # bench/ is on sys.path when this script runs
from supervisor import report

from orchestratr.cli.render import parse_time
from orchestratr.cli.top import Top
from orchestratr.client import Client

LOG_BYTES = 50 * 1024 * 1024
LINE = "2026-11-25T12:03:04.123Z worker[4242]: handled request {} in 1.23 ms, status 200 OK\n"


def write_log(path: Path) -> int:
    """About LOG_BYTES of numbered lines; returns the number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = LOG_BYTES // len(LINE.format(0))
    with path.open("w") as handle:
        for start in range(0, count, 10_000):
            handle.write("".join(LINE.format(i) for i in range(start, min(count, start + 10_000))))
    return count


class Timed(Top):
    """The real view, noting when each state event reached its row."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.latencies: list[float] = []

    def apply_event(self, kind: str, data: Any) -> None:
        super().apply_event(kind, data)
        at = parse_time(data.get("at")) if kind == "state" and isinstance(data, dict) else None
        if at is not None:
            self.latencies.append((time.time() - at) * 1000)


async def top_latency(config_dir: Path, transitions: int) -> list[float]:
    client = Client(config_dir=config_dir)
    view = Timed(Client(config_dir=config_dir))
    async with view.run_test(size=(120, 40)) as pilot:
        while "app000" not in view.apps:
            await pilot.pause(0.01)
        while len(view.latencies) < transitions:
            name = f"app{len(view.latencies) % 10:03}"
            state = view.apps[name].get("state")
            await asyncio.to_thread(client.stop if state == "ready" else client.launch, name)
            await pilot.pause(0.05)
        await pilot.press("q")
    return view.latencies[:transitions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--transitions", type=int, default=200)
    args = parser.parse_args()
    print(f"orchestratr log bench: {os.cpu_count()} cores, Python {sys.version.split()[0]},"
          f" {datetime.now().isoformat(timespec='seconds')}")
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp)
        lines = write_log(config_dir / "logs" / "apps" / "app000.log")
        size_mb = (config_dir / "logs" / "apps" / "app000.log").stat().st_size / 1e6
        with daemon(config_dir) as port:
            samples, failed = series(port, "GET", ["/apps/app000/logs?lines=1000"],
                                     args.requests)
            report(f"GET /apps/{{name}}/logs?lines=1000, {size_mb:.0f} MB ({lines} lines)",
                   samples, f"p99 <= 20 ms; {failed} errors")
            try:
                latencies = asyncio.run(top_latency(config_dir, args.transitions))
            finally:
                client = Client(config_dir=config_dir)
                for i in range(10):  # the daemon leaves running apps running when it stops
                    client.stop(f"app{i:03}")
            report("top: transition -> its row updated", latencies, "<= 100 ms")


if __name__ == "__main__":
    main()
