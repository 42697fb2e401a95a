"""The durable record of running apps: intent before action.

Every process the daemon starts or takes over is recorded before the launch returns to its
caller, on disk (fsync'd), so that a daemon killed at any instant leaves a record of every
group it started, and the next daemon adopts them instead of launching a duplicate.

The record is two files in the config dir:

* ``running.journal``: one JSON line per change, appended (``start``, ``ok``: ready, ``end``);
* ``running.json``: the compacted list of the apps running at the last compaction.

Appending is O(1) per launch, and every launch of the same instant shares one fsync (group
commit: whoever writes next, the first launch waiting or the writer thread, writes and syncs
everything appended while the previous sync ran).
When the journal has grown past twice the running apps (and a floor), the writer compacts it:
the whole list goes to ``running.json`` (atomically, synced), then the journal is emptied.
Replaying any suffix of the journal over a newer snapshot gives the same apps (every line sets
or deletes one entry), so a crash between the two steps loses nothing.

A file that cannot be parsed is moved aside as ``<name>.corrupt-<timestamp>`` with a warning,
and the daemon starts without it (the process table scan still finds marked processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import structlog

from orchestratr import paths
from orchestratr.processes.proctable import MAX_PID
from orchestratr.registry.validate import MAX_LEASE_S, MAX_NAME
from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.processes")

LAZY_S = 0.05  # how long lines nobody waits for gather before the writer writes them
COMPACT_FLOOR = 1000  # journal lines kept before a compaction is worth its cost
MAX_LINE = 64 * 1024  # a longer journal line is damage, not a record
MAX_FILE = 64 * 1024 * 1024  # a larger record is damage too (1,000 apps take about 150 KiB)

Key = tuple[str, int]


@attrs.frozen
class Survivor:
    """A recorded app process (group), as a previous daemon left it."""

    name: str
    pid: int  # for a group: the group's id
    group: bool
    ready: bool
    create_time: float  # wall clock: when the process (for a group: the group) was created
    lease_s: float | None = None  # a lease the app announced (not its manifest's), if any


_FIELDS = tuple(field.name for field in attrs.fields(Survivor))


def valid(entry: Any) -> Survivor | None:
    """A recorded entry, or None if it is damaged: a hand-edited or torn entry is dropped,
    never half-trusted (a pid of 2**63 once crashed every start-up)."""
    if not isinstance(entry, dict):
        return None
    try:
        survivor = Survivor(**{field: entry[field] for field in _FIELDS if field in entry})
    except (KeyError, TypeError):
        return None
    number = (int, float)
    ok = (isinstance(survivor.name, str) and 0 < len(survivor.name) <= MAX_NAME
          and type(survivor.pid) is int and 1 < survivor.pid <= MAX_PID
          and isinstance(survivor.group, bool) and isinstance(survivor.ready, bool)
          and isinstance(survivor.create_time, number)
          and not isinstance(survivor.create_time, bool)
          and 0 <= survivor.create_time < 2**40
          and (survivor.lease_s is None or _lease_ok(survivor.lease_s)))
    return survivor if ok else None


def _lease_ok(lease_s: Any) -> bool:
    return (isinstance(lease_s, (int, float)) and not isinstance(lease_s, bool)
            and 0 < lease_s <= MAX_LEASE_S)


def move_aside(path: Path, why: str) -> None:
    """Keep a damaged state file for a person to look at, out of the daemon's way."""
    try:
        target = paths.move_aside(path)
    except OSError as exc:
        log.error("state_file_corrupt", path=str(path), problem=why, error=str(exc))
        return
    log.warning("state_file_corrupt", path=str(path), problem=why, moved_to=str(target),
                hint="the daemon starts without it; look at the moved file if something "
                     "seems missing")


def read_json(path: Path) -> Any:
    """A state file's JSON, or None if there is none; a damaged one is moved aside."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("state_file_unreadable", path=str(path), error=str(exc))
        return None
    try:
        if len(raw) > MAX_FILE:
            raise ValueError(f"over {MAX_FILE} bytes")
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: 100,000 nested "["
        move_aside(path, f"not valid JSON: {str(exc)[:200]}")
        return None


class Journal:
    """The record of running apps; ``started`` returns once the entry is on disk."""

    def __init__(self, snapshot: Path, journal: Path, sync: bool = True) -> None:
        self._snapshot = snapshot
        self._journal = journal
        self._sync = sync
        self._cond = threading.Condition()
        self._live: dict[Key, Survivor] = {}
        self._buffer: list[dict[str, Any]] = []  # ops, serialized by whoever writes them
        self._appended = 0  # sequence number of the last line appended
        self._durable = 0  # ... and of the last one on disk (or given up on)
        self._lines = 0  # lines in the journal file since the last compaction
        self._compact_wanted = False
        self._reopen_wanted = False
        self._writing = False  # a thread is writing (the writer, or a waiter leading)
        self._failing = False
        self._fd: int | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ reads

    @property
    def live(self) -> list[Survivor]:
        with self._cond:
            return list(self._live.values())

    def open(self) -> list[Survivor]:
        """Read the record, open the journal for appending and start the writer; return the
        recorded apps."""
        self.read()
        try:
            self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            log.error("running_record_failed", path=str(self._journal), error=str(exc))
            self._failing = True
        self._compact_wanted = True  # start from a clean snapshot (and drop damaged lines)
        self._thread = supervised("running-record", self._run)
        with self._cond:
            self._cond.notify()
        return list(self._live.values())

    def read(self) -> list[Survivor]:
        """The recorded apps: the snapshot, then the journal replayed over it."""
        entries = read_json(self._snapshot)
        if entries is not None and not isinstance(entries, list):
            move_aside(self._snapshot, "expected a list of apps")
            entries = None
        for entry in entries or []:
            survivor = valid(entry)
            if survivor is not None:
                self._live[(survivor.name, survivor.pid)] = survivor
        self._replay()
        return list(self._live.values())

    def _replay(self) -> None:
        try:
            with self._journal.open("rb") as handle:
                raw = handle.read(MAX_FILE + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("state_file_unreadable", path=str(self._journal), error=str(exc))
            return
        damaged = 0
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                op = json.loads(line) if len(line) <= MAX_LINE else None
            except (ValueError, RecursionError):
                op = None
            if not self._apply(op):
                damaged += 1
        if damaged:  # a torn last line is what a kill -9 mid-write leaves: only log it
            log.warning("running_record_damaged_lines", path=str(self._journal), lines=damaged)

    def _apply(self, op: Any) -> bool:
        if not isinstance(op, dict):
            return False
        kind = op.get("op")
        if kind == "start":
            survivor = valid(op)
            if survivor is None:
                return False
            self._live[(survivor.name, survivor.pid)] = survivor
            return True
        name, pid = op.get("name"), op.get("pid")
        if not isinstance(name, str) or type(pid) is not int:
            return False
        if kind == "end":
            self._live.pop((name, pid), None)
            return True
        if kind == "lease" and (name, pid) in self._live and _lease_ok(op.get("lease_s")):
            self._live[(name, pid)] = attrs.evolve(self._live[(name, pid)],
                                                   lease_s=op["lease_s"])
            return True
        if kind == "ok" and (name, pid) in self._live:
            self._live[(name, pid)] = attrs.evolve(self._live[(name, pid)], ready=True)
            return True
        return kind in ("ok", "lease")

    # ---------------------------------------------------------------- changes

    def started(self, name: str, pid: int, group: bool, born: float, ready: bool = False,
                wait: bool = True) -> None:
        """Record a process (group) of ``name``; returns once it is on disk (``wait``)."""
        entry = attrs.asdict(Survivor(name, pid, group, ready, born))
        seq = self._append({"op": "start", **entry})
        if wait:
            self._wait(seq)

    def durable(self) -> None:
        """Return once every line appended so far is on disk."""
        with self._cond:
            seq = self._appended
        self._wait(seq)

    def reopen(self) -> None:
        """The config dir was re-created: write the whole record into the new one."""
        with self._cond:
            self._reopen_wanted = self._compact_wanted = True
            self._cond.notify()

    def ready(self, name: str, pid: int) -> None:
        self._append({"op": "ok", "name": name, "pid": pid})

    def leased(self, name: str, pid: int, lease_s: float, wait: bool = True) -> None:
        """The app announced a lease: the next daemon holds it to it. Waited for, as the
        announcement is answered only once a daemon killed next would still know it."""
        seq = self._append({"op": "lease", "name": name, "pid": pid, "lease_s": lease_s})
        if wait:
            self._wait(seq)

    def ended(self, name: str, pid: int) -> None:
        """The process is gone (or no longer the app's): written soon, not waited for (a
        record of a gone process only costs the next daemon a look)."""
        self._append({"op": "end", "name": name, "pid": pid})

    def close(self) -> int:
        """Write everything, compact, stop the writer; return how many apps are recorded."""
        with self._cond:
            self._stopping = True
            self._compact_wanted = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._live:
            with contextlib.suppress(OSError):
                self._journal.unlink()
        return len(self._live)

    def _append(self, op: dict[str, Any]) -> int:
        with self._cond:
            self._apply(op)
            if self._thread is None:  # not opened (a daemon that failed to start)
                return 0
            self._buffer.append(op)
            self._appended += 1
            if len(self._buffer) == 1:  # the writer gathers the lines that follow itself
                self._cond.notify()
            return self._appended

    def _wait(self, seq: int) -> None:
        """Until line ``seq`` is on disk. The first waiter writes and syncs everything
        appended so far itself (no hand-off to the writer thread on a launch's path); those
        that come meanwhile wait for its sync or the next (group commit)."""
        with self._cond:
            while self._durable < seq and not self._stopping:
                if self._writing or self._compact_wanted or self._failing:
                    self._cond.wait(1.0)
                    continue
                self._writing = True
                lines, self._buffer = self._buffer, []
                upto = self._appended
                snapshot = list(self._live.values()) if self._too_long(len(lines)) else None
                ok = False
                self._cond.release()
                try:
                    ok = self._write(lines, snapshot)
                finally:  # whatever happened, the next writer may go (or every launch waits)
                    self._cond.acquire()
                    self._writing = False
                    self._durable = max(self._durable, upto)
                    self._failing = self._failing or not ok
                    self._cond.notify_all()

    # ------------------------------------------------------------------ writer

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._writing or not (self._buffer or self._compact_wanted
                                            or self._stopping):
                    self._cond.wait()
                if not (self._compact_wanted or self._stopping):
                    # only ends and readiness wait here (a launch writes its own line): let
                    # them gather, off the path of the exit that caused them
                    self._gather(time.monotonic() + LAZY_S)
                    if self._writing or not (self._buffer or self._compact_wanted
                                             or self._stopping):
                        continue
                self._writing = True
                lines, self._buffer = self._buffer, []
                seq = self._appended
                compact = self._compact_wanted or self._failing or self._too_long(len(lines))
                snapshot = list(self._live.values()) if compact else None
                self._compact_wanted = False
                reopen, self._reopen_wanted = self._reopen_wanted, False
                stopping = self._stopping
            ok = False
            try:
                if reopen and self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                ok = self._write(lines, snapshot)
            finally:  # a crash here is restarted (supervised): it must not leave _writing set
                with self._cond:
                    self._writing = False
                    self._durable = max(self._durable, seq)
                    self._failing = self._failing or not ok
                    self._cond.notify_all()
            if stopping:
                return

    def _gather(self, until: float) -> None:
        """Let lines gather until ``until`` (lock held): one write and one sync for a burst
        (1,000 adoptions once woke this thread 1,000 times, each taking the GIL from them)."""
        while not (self._compact_wanted or self._stopping):
            left = until - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _too_long(self, adding: int) -> bool:
        """Whether the journal, with ``adding`` more lines, is worth compacting (lock held)."""
        return self._lines + adding > max(COMPACT_FLOOR, 2 * len(self._live))

    def _write(self, lines: list[dict[str, Any]], snapshot: list[Survivor] | None) -> bool:
        """Append ``lines`` (after compacting to ``snapshot``) and sync; False on failure."""
        try:
            if self._fd is None:
                self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if snapshot is not None:
                self._compact(snapshot)
                lines = []  # the snapshot holds their effect already
            elif lines:
                os.write(self._fd, "".join(
                    json.dumps(op, separators=(",", ":")) + "\n" for op in lines).encode())
                self._lines += len(lines)
                if self._sync:
                    os.fdatasync(self._fd)
        except OSError as exc:
            if not self._failing:
                log.error("running_record_failed", path=str(self._journal), error=str(exc),
                          hint="apps keep running and are tracked; the record is written "
                               "again once the config dir accepts writes")
            return False
        if self._failing:
            log.warning("running_record_resumed", path=str(self._journal))
            self._failing = False
        return True

    def _compact(self, snapshot: list[Survivor]) -> None:
        assert self._fd is not None
        if snapshot:
            text = json.dumps([attrs.asdict(s) for s in snapshot], indent=1)
            tmp = self._snapshot.with_name(f".{self._snapshot.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, text.encode())
                if self._sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._snapshot)
        else:
            with contextlib.suppress(FileNotFoundError):
                self._snapshot.unlink()
        if self._sync:
            _sync_dir(self._snapshot.parent)
        os.ftruncate(self._fd, 0)
        self._lines = 0


def _sync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
