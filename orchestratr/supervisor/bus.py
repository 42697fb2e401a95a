"""The in-process event bus: every transition and lifecycle event, with a monotonic id.

Publishing never blocks: each subscriber has a bounded queue and one that falls behind is
closed with ``overflowed`` set, so a stalled reader can never slow the supervisor. A ring
buffer of recent events lets a reader resume from an id without missing anything.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs


@attrs.frozen(eq=False)  # one event is one publication: hashed by identity, cacheable
class BusEvent:
    id: int
    type: str
    at: float  # wall-clock seconds
    data: Mapping[str, Any]
    weight: int = 0  # bytes of what an app put in it, counted against the buffer's budget


Filter = Callable[[BusEvent], bool]
MAX_BYTES = 32 * 1024 * 1024  # of apps' own data a replay buffer keeps (each entry: 1 MiB max)

# Every type published, for readers that filter by type.
EVENT_TYPES = frozenset({
    "state",  # a transition: app, from, to, trigger, source, at, detail
    "registered", "unregistered",  # an app added or removed through the API
    "reloaded", "reload_failed",  # the configuration was applied, or refused
    "config_skipped",  # drop-ins (apps.d/) left out of an applied configuration for errors
    "launch_failed",  # a command could not be spawned
    "ready_timeout",  # ready_cmd did not pass in time; the app stays launched
    "lease_expired",  # no heartbeat in time: the app is unresponsive for its grace period
    "hotkey",  # leader pressed, chord received, cancelled, or help shown
    "service_found", "service_removed",  # an app's service went live, or was withdrawn
})
# Told to a stream's reader about the stream itself (never published on a bus).
NOTICES = frozenset({"reset", "overflow"})
# What an app may name the events it publishes (POST /events): not one of orchestratr's own.
PUBLISHED_TYPE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
OWN_TYPES = EVENT_TYPES | NOTICES

_CLOSED = object()


class Subscription:
    """A reader's queue. Iterate it, or ``get()`` with a timeout; ``close()`` when done.

    A deque and a lock used as a wake-up signal (released: something may be waiting), not a
    ``queue.Queue``: its condition variables cost a reader a tenth of a millisecond of Python
    per event, between the publisher's news and the reader's write."""

    def __init__(self, bus: EventBus, maxsize: int, accept: Filter | None) -> None:
        self._bus = bus
        self.backlog: list[BusEvent] = []  # buffered events after ``since``, older than the queue's
        self.complete = True  # False: some events after ``since`` are no longer buffered
        self._items: deque[object] = deque()  # bounded by offer()
        self._signal = threading.Lock()
        self._signal.acquire()
        self._maxsize = maxsize
        self._accept = accept
        self.overflowed = False
        self.closed = False

    def offer(self, event: BusEvent) -> None:
        """Called by the bus under its lock; must not block."""
        if self.closed or (self._accept is not None and not self._accept(event)):
            return
        if len(self._items) >= self._maxsize:
            self.overflowed = True
            self._bus.unsubscribe(self)
        else:
            self._items.append(event)
            self._wake()

    def get(self, timeout: float | None = None) -> BusEvent | None:
        """The next event, or None on timeout or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._items:
            if deadline is None:
                self._signal.acquire()
            elif not self._signal.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return None
        item = self._items[0]
        if item is _CLOSED:
            return None  # left first, so later get() calls return at once too
        self._items.popleft()
        assert isinstance(item, BusEvent)
        return item

    def waiting(self, limit: int) -> list[BusEvent]:
        """Up to ``limit`` events already queued, without waiting (a reader that fell behind
        sends them in one write)."""
        events: list[BusEvent] = []
        while self._items and len(events) < limit and self._items[0] is not _CLOSED:
            event = self._items.popleft()
            assert isinstance(event, BusEvent)
            events.append(event)
        return events

    def __iter__(self) -> Iterator[BusEvent]:
        while (event := self.get()) is not None:
            yield event

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self._items.append(_CLOSED)
            self._wake()

    def _wake(self) -> None:
        if self._signal.locked():
            with contextlib.suppress(RuntimeError):  # released by another in between
                self._signal.release()


class EventBus:
    """Fan-out of events to subscribers, plus a replay buffer of the last ``capacity`` events.

    Ids count up from ``first_id``. The daemon starts them at the wall clock in microseconds, so
    ids also grow across daemon restarts and a reader resuming with an id from an earlier
    daemon is told that it missed events, rather than being fed the new daemon's as if they
    followed.
    """

    def __init__(
        self, capacity: int = 10_000, clock: Callable[[], float] = time.time, first_id: int = 1,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._lock = threading.Lock()
        self._first_id = first_id
        self._ids = itertools.count(first_id)
        self._buffer: deque[BusEvent] = deque()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0  # the weight of what the buffer holds
        self._subscribers: list[Subscription] = []
        self._clock = clock

    def publish(self, type: str, weight: int = 0, /, **data: Any) -> BusEvent:
        """Put an event on the bus; ``weight`` is the size of what an app put in it (its own
        events and messages may be up to a request body each): the buffer keeps the last
        ``capacity`` events, and fewer when they would weigh more than ``max_bytes``."""
        with self._lock:
            event = BusEvent(next(self._ids), type, self._clock(), data, weight)
            self._buffer.append(event)
            self._bytes += weight
            while len(self._buffer) > self._capacity or (
                    self._bytes > self._max_bytes and len(self._buffer) > 1):
                self._bytes -= self._buffer.popleft().weight
            for subscriber in list(self._subscribers):
                subscriber.offer(event)
        return event

    def subscribe(
        self, since: int | None = None, maxsize: int = 1000, accept: Filter | None = None
    ) -> Subscription:
        """A new subscription to what is published from now on. With ``since``, its
        ``backlog`` holds the buffered events after that id (``accept``-ed), taken in the same
        instant, so backlog then queue miss nothing and repeat nothing."""
        subscription = Subscription(self, maxsize, accept)
        events: list[BusEvent] = []
        with self._lock:
            if since is not None:
                events, subscription.complete = self._replay(since)
            self._subscribers.append(subscription)
        subscription.backlog = [e for e in events if accept is None or accept(e)]  # unlocked
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        # Re-entrant use from offer() happens with the lock held; list.remove is safe either way.
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
        subscription._mark_closed()

    def since(self, event_id: int = 0, limit: int | None = None) -> list[BusEvent]:
        return self.replay(event_id, limit)[0]

    def replay(self, since: int, limit: int | None = None) -> tuple[list[BusEvent], bool]:
        """The buffered events after ``since`` (at most ``limit``), and whether they are all
        that happened after it: False when some were dropped from the buffer, or ``since``
        is not an id of this bus (another daemon's, or one not yet given out)."""
        with self._lock:
            events, complete = self._replay(since)
        return (events[:limit] if limit is not None else events), complete

    def _replay(self, since: int) -> tuple[list[BusEvent], bool]:
        next_id = self._buffer[-1].id + 1 if self._buffer else self._first_id
        oldest = self._buffer[0].id if self._buffer else next_id
        from_start = since == 0 and oldest == self._first_id
        complete = from_start or oldest - 1 <= since < next_id
        return [e for e in self._buffer if e.id > since], complete

    @property
    def readers(self) -> int:
        """How many subscriptions are open now."""
        return len(self._subscribers)

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._buffer[-1].id if self._buffer else self._first_id - 1


def weight_of(data: Any) -> int:
    """The size of what an app sent, as the stream will carry it (compact JSON)."""
    return len(json.dumps(data, separators=(",", ":"), default=str))
