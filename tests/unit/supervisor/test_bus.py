"""The event bus: monotonic ids, replay, filters, and slow readers cut off."""

from __future__ import annotations

from orchestratr.supervisor.bus import EventBus
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
    bus = EventBus()
    for i in range(5):
        bus.publish("x", n=i)
    subscription = bus.subscribe(since=3)
    bus.publish("x", n=5)
    got = [subscription.get(timeout=1) for _ in range(3)]
    assert [e.id for e in got if e] == [4, 5, 6]
    assert subscription.get(timeout=0.01) is None


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
