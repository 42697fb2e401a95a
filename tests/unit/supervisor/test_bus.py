"""The event bus: monotonic ids, replay, filters, and slow readers cut off."""

from __future__ import annotations

import pytest

from orchestratr.supervisor.bus import EventBus
from orchestratr.supervisor.inbox import INBOX_BYTES, Inbox
from tests.conftest import run_concurrently


def test_ids_are_monotonic_across_threads() -> None:
    """Concurrent publishers never share or reorder ids in the buffer."""
    bus = EventBus()

    def publish(_: int) -> None:
        for _ in range(500):
            bus.publish("x")

    run_concurrently(publish, 4)
    ids = [e.id for e in bus.since(0)]
    assert ids == list(range(1, 2001))


def test_subscribe_since_replays_then_goes_live() -> None:
    """The backlog and the live queue meet exactly: nothing missed, nothing twice."""
    bus = EventBus()
    for i in range(5):
        bus.publish("x", n=i)
    subscription = bus.subscribe(since=3)
    bus.publish("x", n=5)
    assert ([e.id for e in subscription.backlog], subscription.complete) == ([4, 5], True)
    assert subscription.get(timeout=1).id == 6  # type: ignore[union-attr]
    assert subscription.get(timeout=0.01) is None


@pytest.mark.parametrize(("since", "complete"), [
    (0, False),      # from the start, but ids 1-3 were dropped
    (2, False),      # 3 was dropped
    (3, True),       # 4, 5, 6 are all buffered
    (6, True),       # nothing after it yet
    (7, False),      # not given out yet: another daemon's id
])
def test_replay_says_when_events_were_lost(since: int, complete: bool) -> None:
    bus = EventBus(capacity=3)
    for _ in range(6):
        bus.publish("x")
    assert bus.replay(since)[1] is complete


def test_ids_start_where_the_daemon_says() -> None:
    """A daemon's ids start past any earlier daemon's: an old id is from the past, not ahead."""
    bus = EventBus(first_id=1000)
    assert bus.replay(0) == ([], True) and bus.last_id == 999
    bus.publish("x")
    assert bus.replay(0)[0][0].id == 1000
    assert bus.replay(500)[1] is False


def test_filter_and_buffer_capacity() -> None:
    bus = EventBus(capacity=3)
    subscription = bus.subscribe(accept=lambda e: e.type == "keep")
    for kind in ["keep", "drop", "keep", "drop"]:
        bus.publish(kind)
    assert [e.id for e in bus.since(0)] == [2, 3, 4]
    got = [subscription.get(timeout=1) for _ in range(2)]
    assert [e.id for e in got if e] == [1, 3]
    assert subscription.get(timeout=0.01) is None
    assert bus.since(2, limit=1)[0].id == 3


def test_slow_subscriber_is_dropped_without_blocking() -> None:
    """A full queue closes that subscriber; publishing goes on for everyone else."""
    bus = EventBus()
    slow = bus.subscribe(maxsize=2)
    fast = bus.subscribe(maxsize=100)
    for _ in range(10):
        bus.publish("x")
    assert slow.overflowed and slow.closed
    assert [e.id for e in slow] == [1, 2]  # what fitted, then the end of the stream
    assert [fast.get(timeout=1).id for _ in range(10)] == list(range(1, 11))  # type: ignore[union-attr]
    fast.close()
    assert fast.get(timeout=1) is None


def test_heavy_events_leave_the_buffer_before_it_holds_more_than_its_budget() -> None:
    """Apps' own events and messages may be a request body each (1 MiB): the buffer keeps
    only what fits its bytes, oldest out first, and a reader behind it is told so."""
    bus = EventBus(capacity=100, max_bytes=1000)
    first = bus.publish("x", 400, n=1)
    bus.publish("x", 400, n=2)
    bus.publish("x", 400, n=3)
    assert [e.data["n"] for e in bus.since(0)] == [2, 3]
    assert bus.replay(first.id - 1) == (bus.since(0), False)
    bus.publish("x", 5000, n=4)  # heavier than the budget alone: kept, as the newest
    assert [e.data["n"] for e in bus.since(0)] == [4]


def test_an_inbox_keeps_the_newest_messages_that_fit() -> None:
    inbox = Inbox(first_id=1)
    big = "x" * (INBOX_BYTES // 3)
    for n in range(5):
        inbox.post("a", {"n": n, "pad": big})
    assert [e.data["data"]["n"] for e in inbox.bus.since(0)] == [3, 4]
