"""What goes over the wire: request bodies in, JSON objects out.

Bodies are structured into these small classes (never into registry or supervisor types);
responses are built from the supervisor's frozen snapshots. Times are RFC 3339 in UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs

from orchestratr.convert import converter
from orchestratr.errors import BadRequestError
from orchestratr.registry.model import described
from orchestratr.registry.validate import MAX_LEASE_S
from orchestratr.supervisor.app import AppSnapshot, HistoryEntry
from orchestratr.supervisor.bus import BusEvent
from orchestratr.supervisor.core import LaunchResult
from orchestratr.supervisor.states import ANNOUNCED, AppState

MIN_PID = 2  # 0 and 1 (the kernel's and init's) never are an app's: 400 in any state
MAX_PID = 2**22  # Linux's pid_max ceiling; larger is no pid at all
MAX_DEPTH = 32  # arrays and objects inside each other in a request body
TIMESTAMP = {"format": "date-time"}  # RFC 3339 in UTC, as ``iso`` writes them


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


@attrs.frozen
class TriggerBody:
    """POST /trigger: a chord, or nothing for a leader-key press."""

    chord: str | None = None


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


def app_json(snap: AppSnapshot, with_history: bool = False) -> dict[str, Any]:
    """An app as GET /apps lists it: its config fields, source, and live state."""
    body: dict[str, Any] = converter.unstructure(snap.spec)
    body.update(converter.unstructure(AppStatus(
        state=snap.state,
        pid=snap.pid,
        launched_at=iso(snap.launched_at),
        ready_at=iso(snap.ready_at),
        error=snap.error,
        removed=snap.removed,
    )))
    if with_history:
        body["history"] = [history_json(entry) for entry in snap.history]
        body["lease"] = lease_json(snap)
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


def reset_json(since: int, available: list[BusEvent]) -> dict[str, Any]:
    """Told to a reader resuming after an id whose successors are no longer all buffered."""
    return {"id": None, "type": "reset", "data": {
        "since": since,
        "oldest": available[0].id if available else None,
        "error": "events after this id are no longer buffered (or it is another daemon's id); "
                 "read GET /apps again, then follow the stream",
    }}
