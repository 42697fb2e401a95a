"""The hotkey service without an X server: what it publishes on the (real) event bus for each
outcome, pausing, the status without a display, and how a bad leader is reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestratr.errors import ConfigError
from orchestratr.hotkeys.backend import default_backend
from orchestratr.hotkeys.service import HotkeyService
from orchestratr.paths import Paths
from orchestratr.registry.keys import Key
from orchestratr.registry.load import load_registry
from orchestratr.supervisor.bus import EventBus, Subscription
from tests.unit.hotkeys.conftest import Clock

CHORDS = {"e": "editor", "f": "files"}


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def events(bus: EventBus) -> Iterator[Subscription]:
    subscription = bus.subscribe()
    yield subscription
    subscription.close()


@pytest.fixture
def service(bus: EventBus, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> HotkeyService:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    service = HotkeyService("ctrl+space", 2000, launch=lambda app: None,
                            chords=lambda: dict(CHORDS), publish=bus.publish,
                            backend=default_backend(), clock=clock)
    service.start()
    return service


def tap(service: HotkeyService, *names: str) -> None:
    for name in names:
        service.press(Key.of(name))
        service.release(Key.of(name))


def leader(service: HotkeyService) -> None:
    service.press(Key("ctrl"))
    tap(service, "space")
    service.release(Key("ctrl"))


def published(events: Subscription) -> list[dict[str, object]]:
    """Every hotkey event so far, without its ``armed`` ones."""
    found = []
    while (event := events.get(timeout=0)) is not None:
        if event.type == "hotkey" and event.data["action"] != "armed":
            found.append(dict(event.data))
    return found


def test_a_bound_chord_is_published_with_its_app(
    service: HotkeyService, events: Subscription
) -> None:
    leader(service)
    tap(service, "E")
    assert published(events) == [{"action": "chord", "key": "e", "app": "editor"}]


def test_an_unbound_chord_is_published_as_such(
    service: HotkeyService, events: Subscription
) -> None:
    leader(service)
    tap(service, "q")
    assert published(events) == [{"action": "unbound", "key": "q", "app": None}]


def test_help_publishes_the_chord_table(service: HotkeyService, events: Subscription) -> None:
    leader(service)
    tap(service, "?")
    assert published(events) == [{"action": "help", "chords": CHORDS}]


@pytest.mark.parametrize("key", ["escape", "space"])
def test_escape_and_space_publish_a_cancel(
    service: HotkeyService, events: Subscription, key: str
) -> None:
    leader(service)
    tap(service, key, "e")
    assert published(events) == [{"action": "cancelled", "key": key, "reason": key}]


def test_a_late_chord_publishes_the_timeout(
    service: HotkeyService, events: Subscription, clock: Clock
) -> None:
    leader(service)
    clock.now += 2.0
    tap(service, "e")
    assert published(events) == [{"action": "cancelled", "key": None, "reason": "timeout"}]


def test_paused_keys_publish_nothing(service: HotkeyService, events: Subscription) -> None:
    service.pause()
    leader(service)
    tap(service, "e")
    assert published(events) == []
    service.resume()
    leader(service)
    tap(service, "e")
    assert [e["action"] for e in published(events)] == ["chord"]


def test_without_a_display_it_is_off_with_one_warning(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    service = HotkeyService("ctrl+space", 2000, launch=lambda app: None, chords=dict,
                            publish=bus.publish, backend=default_backend())
    with capture_logs() as logs:
        status = service.start()
    assert (status.enabled, status.suppressing, status.backend) == (False, False, "none")
    assert status.reason == "no display (DISPLAY is not set)"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["hotkeys_unavailable"]
    with pytest.raises(RuntimeError, match="no display"):
        service.press_leader()


def test_an_unparsable_leader_is_named_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^'ctrl\+spcae' must end in"):
        HotkeyService("ctrl+spcae", 2000, launch=print, chords=dict, publish=print,
                      backend=default_backend())
    paths = Paths.resolve(tmp_path / "cfg")
    paths.config_dir.mkdir(parents=True)
    paths.config_file.write_text("leader_key: ctrl+spcae\n")
    with pytest.raises(ConfigError) as raised:
        load_registry(paths)
    assert [e for e in raised.value.errors if "leader_key" in e] == [
        "config.yml: leader_key: 'ctrl+spcae' must end in one character or a key name "
        "such as space, enter or f1"]
