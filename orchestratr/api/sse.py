"""Server-Sent Events: the event bus as a ``text/event-stream``, and the queries that shape it.

Each stream is one bus subscription with a bounded queue. A reader that falls behind is sent a
final ``overflow`` event and cut off, so it never slows the supervisor or other readers. A
reader resuming with ``Last-Event-ID`` (or ``?since=``) first gets every buffered event after
that id, or a ``reset`` event when some are gone, telling it to read ``GET /apps`` again.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from orchestratr.api.wire import event_json, reset_json
from orchestratr.errors import BadRequestError
from orchestratr.registry.model import name_key
from orchestratr.registry.validate import NAME_PATTERN
from orchestratr.supervisor.bus import EVENT_TYPES, BusEvent, EventBus, Subscription

KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000  # events a reader may fall behind by before it is cut off
MAX_LIMIT = 10_000
MAX_IDLE_S = 86400


@attrs.frozen
class StreamSettings:
    keepalive_s: float = KEEPALIVE_S
    queue_size: int = QUEUE_SIZE


@attrs.frozen
class EventQuery:
    """What a reader asked for: ``?app=&type=&since=&idle_for=&limit=``."""

    apps: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    since: int | None = None
    idle_for: float = 0.0  # 0: never close for want of events
    limit: int = 1000

    def accepts(self, event: BusEvent) -> bool:
        return (not self.types or event.type in self.types) and (
            not self.apps or name_key(str(event.data.get("app"))) in self.apps)


def parse_query(
    query: Mapping[str, Sequence[str]], last_event_id: str | None = None, stream: bool = False
) -> EventQuery:
    """The stream's parameters (``stream``) or the poll's; raises BadRequestError naming the
    parameter that is wrong."""
    known = {"app", "type", "since", "idle_for" if stream else "limit"}
    unknown = set(query) - known
    if unknown:
        raise BadRequestError(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    names = query.get("app", [])
    if bad := sorted(a for a in names if not NAME_PATTERN.fullmatch(a)):
        raise BadRequestError(f"app: invalid app name {bad[0][:64]!r}")
    apps = frozenset(name_key(name) for name in names)
    types = frozenset(query.get("type", []))
    if bad := sorted(types - EVENT_TYPES):
        raise BadRequestError(f"type: unknown event type {bad[0][:64]!r}; known: "
                              + ", ".join(sorted(EVENT_TYPES)))
    since = _one(query, "since")
    if last_event_id and last_event_id.strip():  # a reconnection: the URL's since is stale
        since = last_event_id.strip()
    return EventQuery(
        apps=apps,
        types=types,
        since=None if since is None else _number(since, "since", int, 0, math.inf),
        idle_for=_number(_one(query, "idle_for") or "0", "idle_for", float, 0, MAX_IDLE_S),
        limit=_number(_one(query, "limit") or "1000", "limit", int, 1, MAX_LIMIT),
    )


def poll(bus: EventBus, query: EventQuery) -> list[dict[str, Any]]:
    """``GET /events``: the buffered events after ``since`` (a ``reset`` first if some are
    gone), filtered, at most ``limit``."""
    since = query.since or 0
    events, complete = bus.replay(since)
    body = [] if complete else [reset_json(since, events)]
    accepted = (e for e in events if query.accepts(e))
    return body + [event_json(e) for e in itertools.islice(accepted, query.limit)]


class EventStream:
    """One reader of ``GET /events/stream``: iterate it for the bytes to send; ``close()``
    from any thread ends it (the client went away, or the server is stopping)."""

    content_type = "text/event-stream"

    def __init__(self, bus: EventBus, query: EventQuery, settings: StreamSettings) -> None:
        self._query = query
        self._settings = settings
        self._last_id = bus.last_id  # before subscribing: resuming after it misses nothing
        # An id this bus has not given out yet is another daemon's: everything buffered is new
        self._foreign = query.since is not None and query.since > self._last_id
        self._subscription: Subscription = bus.subscribe(
            since=0 if self._foreign else query.since, maxsize=settings.queue_size,
            accept=query.accepts)
        self.delivered_at = time.monotonic()  # the last event sent (the server sheds by it)

    def close(self) -> None:
        self._subscription.close()

    def __iter__(self) -> Iterator[bytes]:
        sub = self._subscription
        yield b"retry: 1000\n\n"  # reconnect quickly; Last-Event-ID then resumes the stream
        if self._foreign or not sub.complete:
            yield self._reset(sub.backlog)
        for event in sub.backlog:
            yield _encoded(event)
        yield from self._live(sub)

    def _reset(self, backlog: list[BusEvent]) -> bytes:
        """The reset that starts a resumption past the buffer (or from another daemon's id),
        with an ``id:`` to resume from: just before the events that follow it. Without one,
        an EventSource kept its stale id and every reconnection was another bare reset."""
        resume_id = backlog[0].id - 1 if backlog else self._last_id
        return _frame("reset", reset_json(self._query.since or 0, backlog)["data"], resume_id)

    def _live(self, sub: Subscription) -> Iterator[bytes]:
        idle_for = self._query.idle_for or math.inf
        last_event = last_write = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last_event >= idle_for:
                return
            wait = min(last_event + idle_for, last_write + self._settings.keepalive_s) - now
            event = sub.get(timeout=max(0.0, wait))
            if event is not None:
                yield _encoded(event)
                last_event = last_write = self.delivered_at = time.monotonic()
            elif sub.overflowed:
                yield _frame("overflow", {"error": "this reader fell too far behind; reconnect "
                                                   "with Last-Event-ID to resume"})
                return
            elif sub.closed:
                return
            elif time.monotonic() - last_write >= self._settings.keepalive_s:
                yield b": keep-alive\n\n"
                last_write = time.monotonic()


@functools.lru_cache(maxsize=64)
def _encoded(event: BusEvent) -> bytes:
    """An event's frame, encoded once however many readers it goes to."""
    return _frame(event.type, event_json(event)["data"], event.id)


def _frame(event_type: str, data: Mapping[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"{head}event: {event_type}\ndata: {body}\n\n".encode()


def _one(query: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = query.get(key, [])
    if len(values) > 1:
        raise BadRequestError(f"{key}: give it once")
    return values[0] if values else None


def _number(text: str, key: str, kind: type[Any], low: float, high: float) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise BadRequestError(f"{key}: expected a number, got {text[:32]!r}") from None
    if not low <= value <= high:
        raise BadRequestError(f"{key}: must be from {low:g} to {high:g}")
    return value
