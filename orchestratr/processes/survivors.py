"""The record of running apps (``running.json``), so that a restarted daemon adopts them.

Without it, a daemon restart would forget running apps and the next hotkey press would spawn a
duplicate. The record is rewritten whenever the set of running apps changes, not only at
shutdown, so it is also right after the daemon is killed with SIGKILL.

Nothing is adopted that is not really ours (``is_ours``):

* a group we spawned is recognised by its live members, not by its first process (a launcher
  script may have exited long ago): a member must still be in the session we created for the
  app (its session id is the recorded group id) and carry the markers every app is spawned
  with (``ORCHESTRATR_CONFIG_DIR`` naming this config dir, ``ORCHESTRATR_APP`` the app);
* a single process an app announced is recognised by its pid and create time, so a pid reused
  meanwhile by another program never passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import structlog

from orchestratr.errors import UnadoptablePidError
from orchestratr.paths import APP_ENV, CONFIG_DIR_ENV, write_atomically
from orchestratr.processes.tracker import check_adoptable, group_members
from orchestratr.supervisor.app import AppSnapshot
from orchestratr.supervisor.bus import EventBus, Subscription
from orchestratr.supervisor.states import AppState

log = structlog.get_logger("orchestratr.processes")

# psutil derives create times from the boot time, which Linux gives in whole seconds and which
# moves when the clock is adjusted: two daemons may see one process's create time 1 s apart.
CLOCK_SLACK_S = 1.0


@attrs.frozen
class Survivor:
    name: str
    pid: int  # for a group: the group's id
    group: bool
    ready: bool
    create_time: float  # wall clock: when the process (for a group: the group) was created


def from_snapshot(snap: AppSnapshot) -> Survivor | None:
    if snap.pid is None or snap.started_at is None:
        return None
    return Survivor(snap.name, snap.pid, snap.group, snap.state is AppState.ready,
                    snap.started_at)


def read(path: Path) -> list[Survivor]:
    """The recorded apps (unverified); a missing or damaged file records none."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    survivors = []
    for entry in raw if isinstance(raw, list) else []:
        with contextlib.suppress(TypeError):
            survivor = Survivor(**entry)
            if _well_typed(survivor):
                survivors.append(survivor)
    return survivors


def _well_typed(survivor: Survivor) -> bool:
    """A hand-edited or damaged entry is dropped, never half-trusted."""
    number = (int, float)
    return (isinstance(survivor.name, str) and type(survivor.pid) is int
            and isinstance(survivor.group, bool) and isinstance(survivor.ready, bool)
            and isinstance(survivor.create_time, number)
            and not isinstance(survivor.create_time, bool))


def is_ours(survivor: Survivor, config_dir: Path) -> bool:
    """Whether the recorded process (group) is still alive and still the app's."""
    import psutil

    try:
        check_adoptable(survivor.pid, survivor.group)
    except UnadoptablePidError:
        return False
    if survivor.group:
        return any(_member_is_ours(member, survivor, config_dir)
                   for member in group_members(survivor.pid))
    try:
        proc = psutil.Process(survivor.pid)
        return (proc.status() != psutil.STATUS_ZOMBIE
                and abs(proc.create_time() - survivor.create_time) < CLOCK_SLACK_S)
    except psutil.Error:
        return False


def _member_is_ours(pid: int, survivor: Survivor, config_dir: Path) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        env = proc.environ()
        return (
            os.getsid(pid) == survivor.pid
            and env.get(APP_ENV) == survivor.name
            and _same_dir(env.get(CONFIG_DIR_ENV), config_dir)
            and proc.create_time() > survivor.create_time - CLOCK_SLACK_S
        )
    except (psutil.Error, OSError):
        return False


def _same_dir(value: str | None, config_dir: Path) -> bool:
    return value is not None and os.path.realpath(value) == os.path.realpath(config_dir)


class Recorder:
    """Keeps ``running.json`` in step with the running apps, from the event bus.

    A thread waits on the bus (no polling: an idle daemon never wakes it) and, after each
    burst of transitions, rewrites the file if its content changed. ``pending`` survivors
    (recorded apps that are not in the registry yet) are kept in the file too, so that a
    config error at start-up or a second restart loses none of them.
    """

    def __init__(self, path: Path, running: Callable[[], list[AppSnapshot]]) -> None:
        self._path = path
        self._running = running
        self._lock = threading.Lock()
        self._pending: tuple[Survivor, ...] = ()
        self._written: str | None = None
        self._bus: EventBus | None = None
        self._subscription: Subscription | None = None
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> tuple[Survivor, ...]:
        return self._pending

    def start(self, bus: EventBus) -> None:
        """Load the file's entries as ``pending`` and follow the bus from now on."""
        self._bus = bus
        self._pending = tuple(read(self._path))
        self._subscription = self._subscribe()
        self._thread = threading.Thread(target=self._run, name="running-record", daemon=True)
        self._thread.start()

    def set_pending(self, survivors: list[Survivor]) -> None:
        self._pending = tuple(survivors)
        self.write()

    def stop(self) -> int:
        """Stop following the bus and write the final record; return how many apps it holds.
        Before ``start`` it writes nothing: a daemon that failed to start keeps the record."""
        if self._thread is None:
            return 0
        self._bus = None
        if self._subscription is not None:
            self._subscription.close()
        self._thread.join(timeout=2)
        return self.write()

    def write(self) -> int:
        """Rewrite the file if what it should hold changed; return how many apps it holds."""
        with self._lock:
            entries = self._entries()
            text = json.dumps(entries, indent=1)
            if text != self._written:
                try:
                    if entries:
                        write_atomically(self._path, text)
                    else:
                        self._path.unlink(missing_ok=True)
                    self._written = text
                except OSError as exc:
                    log.error("running_record_failed", path=str(self._path), error=str(exc))
            return len(entries)

    def _entries(self) -> list[dict[str, Any]]:
        running = [s for s in map(from_snapshot, self._running()) if s is not None]
        names = {s.name for s in running}
        kept = [s for s in self._pending if s.name not in names]
        return [attrs.asdict(s) for s in running + kept]

    def _subscribe(self) -> Subscription:
        assert self._bus is not None
        return self._bus.subscribe(accept=lambda event: event.type == "state")

    def _run(self) -> None:
        while (subscription := self._subscription) is not None:
            if subscription.get() is None:  # closed: stopping, or it fell behind
                if not subscription.overflowed or self._bus is None:
                    return
                self._subscription = self._subscribe()
            while subscription.get(timeout=0) is not None:  # a burst makes one write
                pass
            self.write()
