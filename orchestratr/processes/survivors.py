"""Which apps a previous daemon left running, found with one scan of the process table.

Without this a daemon restart would forget running apps and the next hotkey press would spawn
a duplicate. Two sources are joined, so that a daemon killed at any instant loses nothing:

* the durable record (``journal``): every process group the daemon started or took over;
* the markers every app is spawned with (``ORCHESTRATR_CONFIG_DIR`` naming this config dir,
  ``ORCHESTRATR_APP`` the app), which every descendant inherits: they find a group that was
  forked in the instant before its record reached the disk, and processes that ``setsid()``
  away from the app's session.

An app's processes are then its marked processes, the members of its recorded group or
session when a marked process is among them (created after the group, so a reused number
never passes), an announced pid whose create time matches the record, and every process
descended from any of those. Nothing is
adopted that is not really ours: the daemon itself and its ancestors never are.

What stays out of reach: a process that both left the app's tree before the daemon restarted
(its parent died while no orchestratr daemon was its subreaper) and cleared its environment.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import attrs

from orchestratr.processes import proctable
from orchestratr.processes.journal import Survivor
from orchestratr.processes.tracker import ancestors

# psutil and /proc derive create times from the boot time, which Linux gives in whole seconds
# and which moves when the clock is adjusted: two daemons may see one process 1 s apart.
CLOCK_SLACK_S = 1.0


@attrs.frozen
class Found:
    """A running app to adopt: its key (group id, or the announced pid) and its processes."""

    name: str
    pid: int
    group: bool
    ready: bool
    create_time: float
    members: tuple[int, ...]
    lease_s: float | None = None  # the lease it announced to the earlier daemon


@attrs.frozen
class Plan:
    found: list[Found]
    gone: list[Survivor]  # recorded, but nothing of it runs any more


def plan(recorded: list[Survivor], config_dir: Path) -> Plan:
    """Match the record against one scan of the process table."""
    if not proctable.available():
        return Plan([Found(s.name, s.pid, s.group, s.ready, s.create_time, (), s.lease_s)
                     for s in recorded], [])
    table = _Table(proctable.scan(), str(config_dir))
    latest: dict[str, Survivor] = {}
    gone: list[Survivor] = []
    for survivor in sorted(recorded, key=lambda s: s.create_time, reverse=True):
        if survivor.name in latest:
            gone.append(survivor)  # an older record of the same app
        else:
            latest[survivor.name] = survivor
    found = []
    for name in sorted(set(latest) | set(table.marked)):
        record = latest.get(name)
        under = table.recorded(name, record) if record is not None else set()
        members = table.with_descendants(under | table.marked_pids(name))
        if record is not None and not under:
            gone.append(record)  # nothing runs under its number: never show a stale pid
        if not members:
            continue
        if record is None or not under:
            found.append(table.unrecorded(name, members))
        else:
            found.append(Found(name, record.pid, record.group, record.ready,
                               record.create_time, tuple(sorted(members)), record.lease_s))
    return Plan(found, gone)


class _Table:
    """The scan, indexed the ways adoption asks it."""

    def __init__(self, procs: list[proctable.ProcInfo], config_dir: str) -> None:
        self._skip = {os.getpid(), *ancestors()}
        self.live = {p.pid: p for p in procs if not p.zombie and p.pid not in self._skip}
        self._children: dict[int, list[int]] = defaultdict(list)
        self._by_session: dict[int, list[proctable.ProcInfo]] = defaultdict(list)
        self.marked: dict[str, list[proctable.ProcInfo]] = defaultdict(list)
        for proc in self.live.values():
            self._children[proc.ppid].append(proc.pid)
            self._by_session[proc.session].append(proc)
            if proc.pgrp != proc.session:
                self._by_session[proc.pgrp].append(proc)
            if proc.app is not None and proctable.same_dir(proc.config_dir, config_dir):
                self.marked[proc.app].append(proc)

    def marked_pids(self, name: str) -> set[int]:
        return {p.pid for p in self.marked.get(name, ())}

    def recorded(self, name: str, survivor: Survivor) -> set[int]:
        """The processes still running under the record's number: its group or session when
        a marked process of the app is among them (created after the group, so a reused
        number never passes), or the announced pid with the recorded create time."""
        if survivor.group:
            session = [p for p in self._by_session.get(survivor.pid, ())
                       if p.create_time > survivor.create_time - CLOCK_SLACK_S]
            marked = self.marked.get(name, ())
            return {p.pid for p in session} if any(p in marked for p in session) else set()
        proc = self.live.get(survivor.pid)
        if proc is not None and abs(proc.create_time - survivor.create_time) < CLOCK_SLACK_S:
            return {proc.pid}
        return set()

    def with_descendants(self, roots: set[int]) -> set[int]:
        return roots | self._descendants(roots)

    def unrecorded(self, name: str, members: set[int]) -> Found:
        """A marked app with no record of its own (forked in the instant before its record
        was written, or the record names a number nothing of it runs under any more): its
        key is its first process's group."""
        first = min((self.live[pid] for pid in members if pid in self.live),
                    key=lambda p: p.create_time)
        key = first.pgrp if first.pgrp not in self._skip else first.pid
        return Found(name, key, True, False, first.create_time, tuple(sorted(members)))

    def _descendants(self, roots: set[int]) -> set[int]:
        found: set[int] = set()
        todo = list(roots)
        while todo:
            for child in self._children.get(todo.pop(), ()):
                if child not in found and child not in roots:
                    found.add(child)
                    todo.append(child)
        return found
