"""The in-process event bus: every transition and lifecycle event, with a monotonic id.

Publishing never blocks: each subscriber has a bounded queue and one that falls behind is
closed with ``overflowed`` set, so a stalled reader can never slow the supervisor. A ring
buffer of recent events lets a reader resume from an id without missing anything.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs


@attrs.frozen
class Event:
    id: int
    type: str
    at: float  # wall-clock seconds
    data: Mapping[str, Any]


Filter = Callable[[Event], bool]

_CLOSED = object()


class Subscription:
    """A reader's queue. Iterate it, or ``get()`` with a timeout; ``close()`` when done."""

    def __init__(self, bus: EventBus, maxsize: int, accept: Filter | None) -> None:
        self._bus = bus
        self._queue: queue.Queue[object] = queue.Queue()  # bounded by offer(), not by Queue
        self._maxsize = maxsize
        self._accept = accept
        self.overflowed = False
        self.closed = False

    def offer(self, event: Event) -> None:
        """Called by the bus under its lock; must not block."""
        if self.closed or (self._accept is not None and not self._accept(event)):
            return
        if self._queue.qsize() >= self._maxsize:
            self.overflowed = True
            self._bus.unsubscribe(self)
        else:
            self._queue.put_nowait(event)

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None on timeout or once closed."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # so later get() calls return at once too
            return None
        assert isinstance(item, Event)
        return item

    def __iter__(self) -> Iterator[Event]:
        while (event := self.get()) is not None:
            yield event

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_CLOSED)


class EventBus:
    """Fan-out of events to subscribers, plus a replay buffer of the last ``capacity`` events."""

    def __init__(self, capacity: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._buffer: deque[Event] = deque(maxlen=capacity)
        self._subscribers: list[Subscription] = []
        self._clock = clock

    def publish(self, type: str, **data: Any) -> Event:
        with self._lock:
            event = Event(next(self._ids), type, self._clock(), data)
            self._buffer.append(event)
            for subscriber in list(self._subscribers):
                subscriber.offer(event)
        return event

    def subscribe(
        self, since: int | None = None, maxsize: int = 1000, accept: Filter | None = None
    ) -> Subscription:
        """A new subscription; with ``since``, buffered events after that id come first."""
        subscription = Subscription(self, maxsize, accept)
        with self._lock:
            if since is not None:
                for event in self._buffer:
                    if event.id > since:
                        subscription.offer(event)
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        # Re-entrant use from offer() happens with the lock held; list.remove is safe either way.
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
        subscription._mark_closed()

    def since(self, event_id: int = 0, limit: int | None = None) -> list[Event]:
        with self._lock:
            events = [e for e in self._buffer if e.id > event_id]
        return events[:limit] if limit is not None else events

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._buffer[-1].id if self._buffer else 0
