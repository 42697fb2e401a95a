"""Server-Sent Events: a bus, or an app's log, as a ``text/event-stream``, and the queries
that shape them.

Each stream is one bus subscription with a bounded queue. A reader that falls behind is sent a
final ``overflow`` event and cut off, so it never slows the supervisor or other readers. A
reader resuming with ``Last-Event-ID`` (or ``?since=``) first gets every buffered event after
that id, or a ``reset`` event when some are gone, telling it to read ``GET /apps`` again.

The same machinery serves every stream: ``EventStream.replaying`` a ``Feed`` (a bus, how its
events are written) for the lifecycle events and an app's inbox, and a plain ``EventStream``
whose head is the live records for a browse of services (which has nothing to replay).
``LogStream`` follows an app's output file instead. Every kind is a ``Stream``: the server
lets the one go first that was sent nothing for the longest.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from orchestratr import applog
from orchestratr.api.wire import (
    RESET_HINT,
    event_json,
    iso,
    message_json,
    refuse_unknown,
    reset_json,
)
from orchestratr.errors import BadRequestError
from orchestratr.registry.model import name_key
from orchestratr.registry.validate import NAME_PATTERN, SERVICE_TYPE_PATTERN
from orchestratr.supervisor.bus import PUBLISHED_TYPE, BusEvent, EventBus, Subscription
from orchestratr.supervisor.services import FOUND

FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
KEEPALIVE_S = 15.0
QUEUE_SIZE = 1000  # events a reader may fall behind by before it is cut off
CACHED_WEIGHT = 64 * 1024  # bytes of app data beyond which a frame is not kept for reuse
MAX_LIMIT = 10_000
MAX_IDLE_S = 86400
BATCH = 64  # events a reader that fell behind is sent in one write
BROWSE_IDLE_S = 5.0  # Koi's: a browse without idle_for closes after 5 s without a change
BACKLOG_PIECE = 500  # lines of a log's backlog sent in one write


@attrs.frozen
class StreamSettings:
    keepalive_s: float = KEEPALIVE_S
    queue_size: int = QUEUE_SIZE


@attrs.frozen
class EventQuery:
    """What a reader asked for: ``?app=&type=&source=&since=&idle_for=&limit=``."""

    apps: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()  # name_key-ed: an app's events, or a cause's
    since: int | None = None
    idle_for: float = 0.0  # 0: never close for want of events
    limit: int = 1000

    def accepts(self, event: BusEvent) -> bool:
        return ((not self.types or event.type in self.types)
                and (not self.apps or name_key(str(event.data.get("app"))) in self.apps)
                and (not self.sources
                     or name_key(str(event.data.get("source"))) in self.sources))


FILTERS = frozenset({"app", "type", "source"})


def parse_query(
    query: Mapping[str, Sequence[str]], last_event_id: str | None = None, stream: bool = False,
    filters: bool = True,
) -> EventQuery:
    """The stream's parameters (``stream``) or the poll's, with the event filters or (an
    inbox) without; raises BadRequestError naming the parameter that is wrong."""
    refuse_unknown(query, {"since", "idle_for" if stream else "limit"}
                   | (FILTERS if filters else set()))
    apps, sources = _names(query, "app"), _names(query, "source")
    types = frozenset(t.lower() for t in query.get("type", []))  # any case: they are lower
    if bad := sorted(t for t in types if not PUBLISHED_TYPE.fullmatch(t)):
        raise BadRequestError(f"type: {bad[0][:64]!r} is no event type (they match "
                              f"{PUBLISHED_TYPE.pattern})")
    since = _one(query, "since")
    if last_event_id and last_event_id.strip():  # a reconnection: the URL's since is stale
        since = last_event_id.strip()
    return EventQuery(
        apps=apps,
        types=types,
        sources=sources,
        since=None if since is None else _number(since, "since", int, 0, math.inf),
        idle_for=_number(_one(query, "idle_for") or "0", "idle_for", float, 0, MAX_IDLE_S),
        limit=_number(_one(query, "limit") or "1000", "limit", int, 1, MAX_LIMIT),
    )


def _names(query: Mapping[str, Sequence[str]], key: str) -> frozenset[str]:
    names = query.get(key, [])
    if bad := sorted(a for a in names if not NAME_PATTERN.fullmatch(a)):
        raise BadRequestError(f"{key}: invalid app name {bad[0][:64]!r}")
    return frozenset(name_key(name) for name in names)


def parse_browse(query: Mapping[str, Sequence[str]], stream: bool) -> tuple[str | None, float]:
    """``?type=`` (and, for a stream, ``idle_for``: absent 5 s, 0 never, as Koi's)."""
    refuse_unknown(query, {"type", "idle_for"} if stream else {"type"})
    type_ = _one(query, "type")
    if type_ is not None and not SERVICE_TYPE_PATTERN.fullmatch(type_):
        raise BadRequestError(f"type: {type_[:64]!r} is no service type (like _http._tcp)")
    idle = _one(query, "idle_for")
    return type_, (BROWSE_IDLE_S if idle is None
                   else _number(idle, "idle_for", float, 0, MAX_IDLE_S))


def poll(bus: EventBus, query: EventQuery) -> list[dict[str, Any]]:
    """``GET /events``: the buffered events after ``since`` (a ``reset`` first if some are
    gone), filtered, at most ``limit``."""
    since = query.since or 0
    events, complete = bus.replay(since)
    body = [] if complete else [reset_json(since, events)]
    accepted = (e for e in events if query.accepts(e))
    return body + [event_json(e) for e in itertools.islice(accepted, query.limit)]


@attrs.frozen
class Feed:
    """A bus read as a stream: how its events are written (``frame``), who is told each id
    sent (``sent``), and what a ``reset`` tells a reader to do (``hint``)."""

    bus: EventBus
    frame: Callable[[BusEvent], bytes] | None = None  # None: a lifecycle event's frame
    sent: Callable[[int], None] | None = None
    hint: str = RESET_HINT


class Stream:
    """An answer sent as Server-Sent Events: iterate it for the bytes to send; ``close()``
    from any thread ends it (the client went away, or the server is stopping). The server
    lets the reader go first that was sent nothing for the longest (``delivered_at``)."""

    content_type = "text/event-stream"
    delivered_at: float

    def close(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[bytes]:
        raise NotImplementedError


class EventStream(Stream):
    """One reader of a stream: iterate it for the bytes to send; ``close()`` from any thread
    ends it (the client went away, or the server is stopping). ``head`` goes first (a reset,
    a browse's live records), then ``backlog``, then what the subscription receives."""

    def __init__(
        self,
        subscription: Subscription,
        settings: StreamSettings,
        idle_for: float,
        *,
        frame: Callable[[BusEvent], bytes] | None = None,
        sent: Callable[[int], None] | None = None,
        head: Iterable[bytes] = (),
        backlog: Iterable[BusEvent] = (),
    ) -> None:
        self._subscription = subscription
        self._settings = settings
        self._idle_for = idle_for
        self._frame = frame or _encoded
        self._sent = sent
        self._head = list(head)
        self._backlog = list(backlog)
        self.delivered_at = time.monotonic()  # the last event sent (the server sheds by it)

    @classmethod
    def replaying(cls, feed: Feed, query: EventQuery, settings: StreamSettings) -> EventStream:
        """A stream of ``feed`` that first replays what followed ``query.since``."""
        last_id = feed.bus.last_id  # before subscribing: resuming after it misses nothing
        # An id this bus has not given out yet is another daemon's: everything buffered is new
        foreign = query.since is not None and query.since > last_id
        sub = feed.bus.subscribe(since=0 if foreign else query.since,
                                 maxsize=settings.queue_size, accept=query.accepts)
        head = []
        if foreign or not sub.complete:
            head.append(_reset(query.since or 0, sub.backlog, last_id, feed.hint))
        return cls(sub, settings, query.idle_for, frame=feed.frame, sent=feed.sent, head=head,
                   backlog=sub.backlog)

    def close(self) -> None:
        self._subscription.close()

    def __iter__(self) -> Iterator[bytes]:
        yield b"retry: 1000\n\n"  # reconnect quickly; Last-Event-ID then resumes the stream
        yield from self._head
        for start in range(0, len(self._backlog), BATCH):
            yield from self._send(self._backlog[start:start + BATCH])
        yield from self._live(self._subscription)

    def _send(self, events: list[BusEvent]) -> Iterator[bytes]:
        """Events in one write: a reader that fell behind catches up in few system calls."""
        yield b"".join(self._frame(event) for event in events)
        if self._sent is not None:  # resumed: the frames were written
            self._sent(events[-1].id)

    def _live(self, sub: Subscription) -> Iterator[bytes]:
        idle_for = self._idle_for or math.inf
        last_event = last_write = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last_event >= idle_for:
                return
            wait = min(last_event + idle_for, last_write + self._settings.keepalive_s) - now
            event = sub.get(timeout=max(0.0, wait))
            if event is not None:
                yield from self._send([event, *sub.waiting(BATCH - 1)])
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


@attrs.frozen
class LogQuery:
    """What a reader of ``GET /apps/{name}/logs`` asked for: ``?lines=&follow=``."""

    lines: int = applog.DEFAULT_LINES
    follow: bool = False


def parse_log_query(query: Mapping[str, Sequence[str]]) -> LogQuery:
    """Raises BadRequestError naming the parameter that is wrong."""
    refuse_unknown(query, {"lines", "follow"})
    follow = (_one(query, "follow") or "false").lower()
    if follow not in FLAGS:
        raise BadRequestError(f"follow: expected true or false, got {follow[:32]!r}")
    lines = _one(query, "lines")
    return LogQuery(
        lines=applog.DEFAULT_LINES if lines is None
        else _number(lines, "lines", int, 0, applog.MAX_LINES),
        follow=FLAGS[follow],
    )


class LogStream(Stream):
    """One reader of ``GET /apps/{name}/logs?follow=true``: the last ``backlog`` lines, then
    each line as the app writes it (``event: line``), and an ``event: launch`` where each
    run starts; it follows the file across rotations and the app's restarts."""

    def __init__(
        self, logs: applog.AppLogs, name: str, backlog: int, settings: StreamSettings
    ) -> None:
        self._logs = logs
        self._settings = settings
        self._follower = applog.Follower(logs.path(name), backlog)
        self._closed = False
        self.delivered_at = time.monotonic()  # the last line sent (the server sheds by it)

    def close(self) -> None:
        self._closed = True
        self._logs.written()  # wakes the reader's wait

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            backlog = self._follower.backlog()
            for start in range(0, len(backlog), BACKLOG_PIECE):  # each write a few KiB
                yield _lines(backlog[start:start + BACKLOG_PIECE], None)
            batches = applog.follow(self._follower, self._logs, lambda: self._closed,
                                    self._settings.keepalive_s)
            for batch in batches:
                if batch:
                    yield _lines(batch, time.time())
                    self.delivered_at = time.monotonic()
                else:
                    yield b": keep-alive\n\n"
        finally:
            self._follower.close()


def _lines(lines: Sequence[applog.Line], at: float | None) -> bytes:
    """``event: line`` per line and ``event: launch`` per run's header; ``at`` is when they
    were read (None: written before the reader came)."""
    frames = []
    for line in lines:
        if line.launch is None:
            frames.append(_frame("line", {"line": line.text, "at": iso(at)}))
        else:
            frames.append(_frame("launch", {"command": line.launch.command,
                                            "at": iso(line.launch.at)}))
    return b"".join(frames)


def _reset(since: int, backlog: list[BusEvent], last_id: int, hint: str) -> bytes:
    """The reset that starts a resumption past the buffer (or from another daemon's id),
    with an ``id:`` to resume from: just before the events that follow it. Without one,
    an EventSource kept its stale id and every reconnection was another bare reset."""
    resume_id = backlog[0].id - 1 if backlog else last_id
    return _frame("reset", reset_json(since, backlog, hint)["data"], resume_id)


def _cached(encode: Callable[[BusEvent], bytes]) -> Callable[[BusEvent], bytes]:
    """``encode`` done once per event however many readers it goes to, for the last 64
    events; one that carries an app's large data is encoded per reader instead, so the cache
    never holds more than a few MiB."""
    cached = functools.lru_cache(maxsize=64)(encode)

    def frame(event: BusEvent) -> bytes:
        return encode(event) if event.weight > CACHED_WEIGHT else cached(event)

    return functools.wraps(encode)(frame)


@_cached
def _encoded(event: BusEvent) -> bytes:
    """An event's frame, encoded once however many readers it goes to."""
    return _frame(event.type, event_json(event)["data"], event.id)


@_cached
def message_frame(event: BusEvent) -> bytes:
    """An inbox's message as ``event: message``, its data ``{"id", "from", "data", "at"}``."""
    return _frame(event.type, message_json(event), event.id)


def found_frame(record: Mapping[str, Any], event_id: int | None = None) -> bytes:
    return _frame("found", record, event_id)


@_cached
def service_frame(event: BusEvent) -> bytes:
    """A service change on a browse: ``event: found`` or ``event: removed``, data the record."""
    record = {k: v for k, v in event.data.items() if k != "at"}
    return _frame("found" if event.type == FOUND else "removed", record, event.id)


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
