"""Apps left running by a daemon that exited, so the next daemon adopts them.

Without this, a daemon restart would forget running apps and the next hotkey press would
spawn a duplicate. Each entry carries the process's create time, so a pid reused meanwhile by
another program is never adopted.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import attrs

from orchestratr.paths import write_atomically
from orchestratr.supervisor.app import AppSnapshot
from orchestratr.supervisor.states import AppState


@attrs.frozen
class Survivor:
    name: str
    pid: int
    group: bool
    ready: bool
    create_time: float


def save(path: Path, apps: list[AppSnapshot]) -> int:
    """Record the apps that still have a process; return how many."""
    import psutil  # only when apps are left running (see processes/tracker.py)

    survivors = []
    for app in apps:
        if app.pid is None:
            continue
        with contextlib.suppress(psutil.Error):
            survivors.append(
                Survivor(app.name, app.pid, app.group, app.state is AppState.ready,
                         psutil.Process(app.pid).create_time())
            )
    if survivors:
        write_atomically(path, json.dumps([attrs.asdict(s) for s in survivors], indent=1))
    return len(survivors)


def load(path: Path) -> list[Survivor]:
    """The recorded apps whose process is still the one recorded; the file is consumed."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        path.unlink()
    except (OSError, ValueError):
        return []
    import psutil

    alive = []
    for entry in raw if isinstance(raw, list) else []:
        with contextlib.suppress(TypeError, psutil.Error):
            survivor = Survivor(**entry)
            if psutil.Process(survivor.pid).create_time() == survivor.create_time:
                alive.append(survivor)
    return alive
