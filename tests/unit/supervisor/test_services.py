"""The registry of live services and the inboxes, on their own (no processes, no HTTP)."""

from __future__ import annotations

import pytest

from orchestratr.errors import BadRequestError, ConflictError, UnknownServiceError
from orchestratr.registry.model import ServiceSpec
from orchestratr.supervisor.bus import EventBus
from orchestratr.supervisor.inbox import INBOX_SIZE, Inboxes
from orchestratr.supervisor.services import FOUND, REMOVED, Services

WEB = ServiceSpec("web-api", "_http._tcp", 8080, {"v": "1"})
SSH = ServiceSpec("box", "_ssh._tcp", 22)


def registry(manifests: dict[str, tuple[ServiceSpec, ...]]) -> tuple[Services, EventBus]:
    bus = EventBus()
    return Services(lambda: bus, lambda: manifests.items()), bus


def test_services_follow_their_app_in_and_out_with_one_event_each() -> None:
    services, bus = registry({"web": (WEB,)})
    services.follow("web", True, (WEB,))
    services.follow("web", True, (WEB,))  # a transition between live states: no change
    assert [r.name for r in services.records()] == ["web-api"]
    services.follow("web", False, (WEB,))
    assert services.records() == []
    events = bus.since(0)
    assert [(e.type, e.data["name"], e.data["app"]) for e in events] == [
        (FOUND, "web-api", "web"), (REMOVED, "web-api", "web")]
    assert events[0].data["host"] == "127.0.0.1" and events[0].data["txt"] == {"v": "1"}


def test_a_declaration_replaces_the_manifest_until_the_app_is_gone() -> None:
    services, _ = registry({"web": (WEB,)})
    services.declare("web", (SSH,), live=False)
    assert services.records() == []  # not live: nothing found yet
    services.follow("web", True, (WEB,))
    assert [r.name for r in services.records()] == ["box"]
    assert services.offered("web", (WEB,)) == (SSH,)
    services.keep([])  # the app left the roster
    assert services.offered("web", (WEB,)) == (WEB,)


def test_names_are_unique_across_apps_case_insensitively() -> None:
    services, _ = registry({"web": (WEB,), "other": ()})
    with pytest.raises(ConflictError, match="taken by app 'web'"):
        services.check("other", (ServiceSpec("WEB-API", "_http._tcp", 1),))
    services.check("web", (WEB,))  # its own name is its own


def test_check_names_every_invalid_field() -> None:
    services, _ = registry({})
    with pytest.raises(BadRequestError) as info:
        services.check("x", (ServiceSpec("", "http", 0, {"a=b": "c"}),))
    for fragment in ("services[0].name", "services[0].type", "services[0].port",
                     "services[0].txt"):
        assert fragment in str(info.value)


def test_resolve_and_filter_by_type() -> None:
    services, _ = registry({"web": (WEB, SSH)})
    services.follow("web", True, (WEB, SSH))
    assert services.resolve("Web-Api").port == 8080
    assert [r.name for r in services.records("_SSH._tcp")] == ["box"]
    with pytest.raises(UnknownServiceError):
        services.resolve("nope")


def test_a_browse_sees_each_change_once_from_its_snapshot_on() -> None:
    services, _ = registry({"web": (WEB,), "ssh": (SSH,)})
    services.follow("web", True, (WEB,))
    current, subscription = services.browse("_http._tcp", maxsize=10)
    assert [r.name for r in current] == ["web-api"]
    services.follow("ssh", True, (SSH,))  # another type: not for this browse
    services.follow("web", False, (WEB,))
    event = subscription.get(timeout=1)
    assert event is not None and (event.type, event.data["name"]) == (REMOVED, "web-api")
    assert subscription.get(timeout=0.05) is None


def test_an_inbox_keeps_the_last_messages_and_what_was_read() -> None:
    inboxes = Inboxes(first_id=lambda: 100)
    inbox = inboxes.of("Notes")
    assert inboxes.of("notes") is inbox  # app names are case-insensitive
    assert inbox.read_up_to == 99
    first = inbox.post("espansr", {"n": 0})
    assert (first.id, first.data) == (100, {"from": "espansr", "data": {"n": 0}})
    for n in range(INBOX_SIZE):
        inbox.post(None, n)
    kept, complete = inbox.bus.replay(99)
    assert len(kept) == INBOX_SIZE and not complete  # the first is gone
    inbox.mark_read(150)
    inbox.mark_read(120)  # never backwards
    assert inbox.read_up_to == 150
    inboxes.keep(["other"])
    assert inboxes.of("notes") is not inbox  # a new app of that name starts empty
