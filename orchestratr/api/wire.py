"""What goes over the wire: request bodies in, JSON objects out.

Bodies are structured into these small classes (never into registry or supervisor types);
responses are built from the supervisor's frozen snapshots. Times are RFC 3339 in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, overload

import attrs

from orchestratr.convert import converter
from orchestratr.errors import BadRequestError, quoted
from orchestratr.registry.model import ServiceSpec, described
from orchestratr.registry.validate import MAX_LEASE_S
from orchestratr.supervisor.app import AppSnapshot, HistoryEntry
from orchestratr.supervisor.bus import BusEvent
from orchestratr.supervisor.core import Delivery, LaunchResult
from orchestratr.supervisor.launcher import ProcessUsage
from orchestratr.supervisor.services import ServiceRecord
from orchestratr.supervisor.states import ANNOUNCED, UP, AppState

MIN_PID = 2  # 0 and 1 (the kernel's and init's) never are an app's: 400 in any state
MAX_PID = 2**22  # Linux's pid_max ceiling; larger is no pid at all
MAX_DEPTH = 32  # arrays and objects inside each other in a request body
TIMESTAMP = {"format": "date-time"}  # RFC 3339 in UTC, as ``iso`` writes them


def refuse_unknown(query: Iterable[str], known: Iterable[str]) -> None:
    """Raises BadRequestError naming (each quoted short) the query parameters not known."""
    if unknown := set(query) - set(known):
        names = ", ".join(quoted(name) for name in sorted(unknown)[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise BadRequestError(f"unknown query parameter(s): {names}{more}")


def decode_json(raw: bytes) -> Any:
    """A request body's JSON value.

    Raises:
        BadRequestError: malformed, nested deeper than MAX_DEPTH, or holding a string no
            command, path or environment can carry (see ``_problem``).
    """
    try:
        value = json.loads(raw)
    except RecursionError:  # ``[`` x 100000: no ValueError, and it was answered 500
        raise BadRequestError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from None
    problem = _problem(value)
    if problem:
        raise BadRequestError(problem)
    return value


def _problem(value: Any) -> str | None:
    """What makes a parsed body unusable, found with a loop rather than a recursion.

    Nesting just under the json module's own limit would fail later, in whatever walks the
    value. A NUL, or half a surrogate pair (JSON's ``\\ud800`` escape can write one; UTF-8
    cannot), in any key or string fails only when the string reaches the OS: a spawn with
    such a command or environment was a 500.
    """
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _usable(item):
                return "strings may not contain NUL characters or unpaired surrogates"
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                return f"JSON nested deeper than {MAX_DEPTH} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _usable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@attrs.frozen
class LaunchedBody:
    """POST /apps/{name}/launched: optionally, the pid orchestratr should track, and the lease
    the app will keep with heartbeats."""

    pid: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.and_(
            attrs.validators.ge(MIN_PID), attrs.validators.le(MAX_PID))))
    lease_secs: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.and_(
            attrs.validators.gt(0.0), attrs.validators.le(MAX_LEASE_S))))
    services: tuple[ServiceSpec, ...] | None = attrs.field(default=None, metadata=described(
        "what the app offers while it runs (replaces its manifest's list)"))


@attrs.frozen
class EventBody:
    """POST /events: an app's own event."""

    source: str = attrs.field(metadata=described("the app publishing it (registered)"))
    type: str = attrs.field(metadata=described("not one of orchestratr's own event types"))
    data: dict[str, Any] = attrs.field(factory=dict, metadata=described("any JSON object"))


@attrs.frozen
class MessageBody:
    """POST /apps/{name}/message: a message for one app's inbox."""

    sender: str | None = attrs.field(default=None, metadata={
        "key": "from", "description": "the sending app (registered); absent: nobody's"})
    data: Any = attrs.field(factory=dict, metadata=described("any JSON value"))
    launch: bool = attrs.field(default=False, metadata=described(
        "launch the receiver if it is stopped or failed; it reads the message once it "
        "connects to its inbox"))


@attrs.frozen
class ServicesBody:
    """PUT /apps/{name}/services: the list that replaces what the app offers."""

    services: tuple[ServiceSpec, ...]


@attrs.frozen
class TriggerBody:
    """POST /trigger: a chord, or nothing for a leader-key press."""

    chord: str | None = None


@overload
def iso(timestamp: float) -> str: ...


@overload
def iso(timestamp: float | None) -> str | None: ...


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@attrs.frozen
class AppStatus:
    """The live half of an app as the API shows it; the other half is its ``AppSpec``."""

    state: AppState
    pid: int | None
    launched_at: str | None = attrs.field(metadata=TIMESTAMP)
    ready_at: str | None = attrs.field(metadata=TIMESTAMP)
    error: str | None
    removed: bool = attrs.field(metadata=described("dropped from the config, still running"))
    started_at: str | None = attrs.field(metadata={**TIMESTAMP, **described(
        "when its process (group) started: its uptime counts from here, also after a "
        "restarted daemon adopted it")})
    restarts: int = attrs.field(metadata=described(
        "runs that replaced an earlier one since the daemon started (by the restart policy, "
        "a lease's grace, or a restart command)"))
    last_exit: ExitStatus | None = attrs.field(metadata=described(
        "how its last process (group) ended; null if none has"))


@attrs.frozen
class ExitStatus:
    code: int | None = attrs.field(metadata=described(
        "exit status; null when killed by a signal or not known"))
    signal: str | None = attrs.field(metadata=described("the signal that killed it"))
    at: str = attrs.field(metadata=TIMESTAMP)


def app_json(snap: AppSnapshot, with_history: bool = False) -> dict[str, Any]:
    """An app as GET /apps lists it: its config fields, source, and live state."""
    body: dict[str, Any] = converter.unstructure(snap.spec)
    last = snap.last_exit
    body.update(converter.unstructure(AppStatus(
        state=snap.state,
        pid=snap.pid,
        launched_at=iso(snap.launched_at),
        ready_at=iso(snap.ready_at),
        error=snap.error,
        removed=snap.removed,
        started_at=iso(snap.started_at),
        restarts=snap.restarts,
        last_exit=None if last is None else ExitStatus(last.code, last.signal, iso(last.at)),
    )))
    if with_history:
        body["history"] = [history_json(entry) for entry in snap.history]
        body["lease"] = lease_json(snap)
    return body


@attrs.frozen
class AppDetail:
    """What GET /apps/{name} adds to an app's listing (besides history and lease)."""

    processes: list[ProcessUsage] = attrs.field(metadata=described(
        "its live processes: its group and their descendants"))
    log_path: str = attrs.field(metadata=described(
        "the file its stdout and stderr go to (GET /apps/{name}/logs reads it)"))
    uptime_secs: float | None = attrs.field(metadata=described(
        "since started_at, while a process runs"))


def detail_json(
    snap: AppSnapshot, processes: list[ProcessUsage], log_path: str, now: float
) -> dict[str, Any]:
    """GET /apps/{name}: the app, its recent transitions, lease, processes and log file."""
    body = app_json(snap, with_history=True)
    uptime = None if snap.started_at is None or snap.state not in UP else round(
        max(0.0, now - snap.started_at), 3)
    body.update(converter.unstructure(AppDetail(
        processes=processes,
        log_path=log_path,
        uptime_secs=uptime,
    )))
    return body


def lease_json(snap: AppSnapshot) -> dict[str, Any] | None:
    """The lease the app holds now: when it (or, if unresponsive, its grace) runs out."""
    if snap.expires_in_s is None:
        return None
    return {
        "lease_secs": snap.lease_s,
        "grace_secs": snap.spec.grace_secs,
        "in_grace": snap.state is AppState.unresponsive,
        "expires_in_secs": round(snap.expires_in_s, 3),
    }


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    return {**entry.fields(), "at": iso(entry.at)}


def state_json(snap: AppSnapshot) -> dict[str, Any]:
    """GET /apps/{name}/state, shaped as the Go orchestratr's (unset fields are omitted)."""
    body: dict[str, Any] = {
        "name": snap.name,
        "launched": snap.state in ANNOUNCED,
        "ready": snap.state is AppState.ready,
        "launched_at": iso(snap.launched_at),
        "ready_at": iso(snap.ready_at),
        "error": snap.error,
        "state": snap.state.value,
    }
    return {k: v for k, v in body.items() if v is not None}


def ack_json(snap: AppSnapshot, **extra: Any) -> dict[str, Any]:
    """The answer to a notification or command: ``{"app", "state", "status": "ok"}``."""
    return {"app": snap.name, "state": snap.state.value, "pid": snap.pid, **extra, "status": "ok"}


def launch_json(result: LaunchResult) -> dict[str, Any]:
    """A launch's answer: the ack, whether it spawned, and what became of the app's window."""
    return ack_json(result.app, spawned=result.spawned, focused=result.focus.focused,
                    reason=result.focus.reason)


def event_json(event: BusEvent) -> dict[str, Any]:
    """A bus event as ``GET /events`` lists it; ``data`` is what an SSE ``data:`` line holds."""
    data = dict(event.data)
    at = data.get("at")
    data["at"] = iso(at if isinstance(at, float) else event.at)
    return {"id": event.id, "type": event.type, "data": data}


RESET_HINT = ("events after this id are no longer buffered (or it is another daemon's id); "
              "read GET /apps again, then follow the stream")
INBOX_RESET_HINT = ("messages after this id are no longer in the inbox (it keeps the last "
                    "ones, and only while the daemon runs); what follows is what it holds")


def reset_json(since: int, available: list[BusEvent], hint: str = RESET_HINT) -> dict[str, Any]:
    """Told to a reader resuming after an id whose successors are no longer all buffered."""
    return {"id": None, "type": "reset", "data": {
        "since": since,
        "oldest": available[0].id if available else None,
        "error": hint,
    }}


def message_json(event: BusEvent) -> dict[str, Any]:
    """A message as an inbox reader gets it."""
    return {"id": event.id, "from": event.data["from"], "data": event.data["data"],
            "at": iso(event.at)}


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """``{"id", "delivered"}``, and ``"launched": true`` when the receiver was launched."""
    body: dict[str, Any] = {"id": delivery.id, "delivered": delivery.delivered}
    if delivery.launched:
        body["launched"] = True
    return body


def service_json(record: ServiceRecord) -> dict[str, Any]:
    return record.fields()


def offers_json(name: str, offered: tuple[ServiceSpec, ...], live: list[ServiceRecord]
                ) -> dict[str, Any]:
    """What an app offers (declared) and which of it is live now."""
    return {"app": name, "services": [converter.unstructure(s) for s in offered],
            "live": [service_json(r) for r in live]}
