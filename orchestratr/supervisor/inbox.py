"""Each app's inbox: the messages other apps sent it (``POST /apps/{name}/message``).

An inbox is an ``EventBus`` of its own, so a reader gets what the event stream gives: ids that
keep growing, live fan-out with bounded queues, and replay after an id. It holds the last
``INBOX_SIZE`` messages and belongs to the app's name, not to its process: a receiver that
restarts finds what was sent meanwhile. It lives in the daemon's memory only (a daemon restart
empties it; a reader resuming with an older daemon's id is told so by a ``reset``).

A message counts as read once a reader was sent it, so a receiver that connects without an id
(a launch by ``"launch": true``, say) gets what is waiting and nothing it already had.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from orchestratr.registry.model import name_key
from orchestratr.supervisor.bus import BusEvent, EventBus, weight_of

INBOX_SIZE = 1000  # messages kept per app ...
INBOX_BYTES = 8 * 1024 * 1024  # ... unless they weigh more: then the newest that fit
MESSAGE = "message"  # the type of an inbox's events (``event: message`` on its stream)


def _now_us() -> int:
    """A first id for a new inbox: the wall clock in µs, so ids also grow across daemons."""
    return time.time_ns() // 1000


class Inbox:
    def __init__(self, first_id: int, clock: Callable[[], float] = time.time) -> None:
        self.bus = EventBus(capacity=INBOX_SIZE, clock=clock, first_id=first_id,
                            max_bytes=INBOX_BYTES)
        self._lock = threading.Lock()
        self._read = first_id - 1  # the last id a reader was sent

    def post(self, sender: str | None, data: Any) -> BusEvent:
        return self.bus.publish(MESSAGE, weight_of(data), **{"from": sender, "data": data})

    @property
    def readers(self) -> int:
        """Readers connected now: those a message posted now is delivered to at once."""
        return self.bus.readers

    @property
    def read_up_to(self) -> int:
        """The last id a reader was sent: a reader with no id of its own starts after it."""
        with self._lock:
            return self._read

    def mark_read(self, event_id: int) -> None:
        with self._lock:
            self._read = max(self._read, event_id)


class Inboxes:
    """The inboxes by app name (case-insensitive), each made when first used."""

    def __init__(self, first_id: Callable[[], int] = _now_us,
                 clock: Callable[[], float] = time.time) -> None:
        self._first_id = first_id
        self._clock = clock
        self._lock = threading.Lock()
        self._by_name: dict[str, Inbox] = {}

    def of(self, name: str) -> Inbox:
        key = name_key(name)
        with self._lock:
            inbox = self._by_name.get(key)
            if inbox is None:
                inbox = self._by_name[key] = Inbox(self._first_id(), self._clock)
            return inbox

    def keep(self, names: Iterable[str]) -> None:
        """Drop the inboxes of apps that are gone (``names`` are those still here)."""
        kept = {name_key(name) for name in names}
        with self._lock:
            for key in set(self._by_name) - kept:
                del self._by_name[key]
