"""What the API may ask of the parts that are not the supervisor, as small interfaces.

``api/`` depends on these Protocols, never on ``hotkeys/`` or ``daemon.py``: the daemon (the
composition root) hands it the real objects. ``HotkeyStatus`` lives here, not in ``hotkeys/``,
because it is what the API sends: the OpenAPI document is built from this class.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

import attrs

from orchestratr.registry.model import Registry, described
from orchestratr.supervisor.app import AppSnapshot
from orchestratr.supervisor.states import Cause


class BackendName(enum.StrEnum):
    """Which key backend runs the hotkeys (``none``: hotkeys are off)."""

    xorg = "xorg"
    none = "none"


@attrs.frozen
class HotkeyStatus:
    enabled: bool = attrs.field(
        metadata=described("listening for the leader key: a key typed now is handled"))
    paused: bool = attrs.field(metadata=described("keys ignored until POST /hotkeys/resume"))
    backend: BackendName = attrs.field(metadata=described("the key backend in use"))
    leader: str = attrs.field(metadata=described("the leader key, e.g. ctrl+space"))
    suppressing: bool = attrs.field(
        metadata=described("leader and chord are kept from the focused app"))
    reason: str | None = attrs.field(
        metadata=described("why hotkeys are off, or, when on, why keys are not suppressed"))
    keys_seen: int = attrs.field(
        metadata=described("key presses heard so far: 0 with hotkeys on means the listener "
                            "hears nothing"))


class HotkeyControl(Protocol):
    """The hotkey service as the API drives it."""

    def status(self) -> HotkeyStatus: ...

    def pause(self) -> HotkeyStatus: ...

    def resume(self) -> HotkeyStatus: ...

    def press_leader(self) -> None:
        """Act as if the leader was pressed.

        Raises:
            RuntimeError: hotkeys are not running, or are paused (the message says which).
        """


class RegistryControl(Protocol):
    """What changes the registry (the daemon): files reloaded, apps registered at runtime."""

    def reload(self, cause: Cause) -> Registry: ...

    def register(self, fields: Any) -> tuple[AppSnapshot, list[str]]: ...

    def unregister(self, name: str, keep_running: bool = False) -> AppSnapshot: ...

    def config_errors(self) -> list[str]:
        """Why config.yml or a drop-in is rejected now (empty: all of it is in use)."""
