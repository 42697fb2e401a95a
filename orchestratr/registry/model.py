"""The registry's data: settings and app specs, frozen once loaded.

The models carry no conversion rules (those live in ``orchestratr.convert``) and no checks
(``orchestratr.registry.validate``): a loaded ``Registry`` is known-good and never changes;
a reload builds a new one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from functools import cached_property

import attrs

from orchestratr.registry.keys import chord_key, chord_table


class RestartPolicy(enum.Enum):
    """When an app that exited on its own is started again (supervisord/systemd semantics)."""

    never = "never"
    on_failure = "on-failure"
    always = "always"


def described(text: str) -> dict[str, str]:
    """A field's ``metadata``: its description in the API's document (the one word a model
    says about how it is shown)."""
    return {"description": text}


def name_key(name: str) -> str:
    """What app names are compared by: case-insensitively, as the Go orchestratr looked them
    up (``Firefox`` and ``firefox`` are one app, and two apps so named clash)."""
    return name.casefold()


@attrs.frozen
class WindowMatch:
    """Which existing window is the app's, for apps that hand off to a process orchestratr did
    not start (Firefox, Electron, any single-instance app): case-insensitive regexes searched
    in WM_CLASS (instance or class) and the title; both must match when both are given."""

    class_: str | None = attrs.field(default=None, metadata={
        "key": "class", "description": "a regex searched in WM_CLASS (instance or class)"})
    title: str | None = attrs.field(default=None, metadata={
        "description": "a regex searched in the window title"})


@attrs.frozen
class ServiceSpec:
    """A service an app offers on localhost while it runs (Koi's record, without multicast):
    other apps find it by ``type`` (``_http._tcp``) or resolve it by ``name``."""

    name: str = attrs.field(metadata=described("unique across apps, e.g. notes-api"))
    type: str = attrs.field(metadata=described("_service._tcp or _service._udp"))
    port: int = attrs.field(metadata=described("on 127.0.0.1, 1 to 65535"))
    txt: Mapping[str, str] = attrs.field(factory=dict, metadata=described(
        "the TXT record: string keys and values"))


def service_key(name: str) -> str:
    """What service names are compared by: case-insensitively, like DNS-SD instance names."""
    return name.casefold()


@attrs.frozen
class AppSpec:
    """One app as the user declared it. Field names and defaults match the Go orchestratr."""

    name: str
    command: str
    chord: str | None = None
    environment: str = "native"
    description: str = ""
    ready_cmd: str | None = None
    ready_timeout_ms: int = 5000
    detached: bool = False
    restart: RestartPolicy = RestartPolicy.never
    restart_delay_ms: int = 100
    autostart: bool = False
    stop_timeout_ms: int = 5000
    cwd: str | None = None
    env: Mapping[str, str] = attrs.field(factory=dict)
    lease_secs: float | None = attrs.field(
        default=None, metadata=described("heartbeat at least this often once running"))
    grace_secs: float = attrs.field(
        default=30.0, metadata=described("how long an unresponsive app may still revive"))
    window: WindowMatch | None = attrs.field(default=None, metadata=described(
        "raise a matching window instead of launching (single-instance apps)"))
    services: tuple[ServiceSpec, ...] = attrs.field(default=(), metadata=described(
        "what the app offers while it runs (GET /services finds them)"))
    # Its key in files and on the wire is "source", as the Go orchestratr named it.
    declared_in: str = attrs.field(default="config", alias="source",
                                   metadata=described("config, apps.d/<file>, or api"))


@attrs.frozen
class Settings:
    """Top-level keys of config.yml other than ``apps``."""

    leader_key: str = "ctrl+space"
    chord_timeout_ms: int = 2000
    chord_hint_ms: int = 0  # the chord table shows this long after the leader (0: only on ?)
    api_port: int = 9876
    log_level: str = "info"
    stop_apps_on_exit: bool = False
    notifications: bool = True  # failures as desktop notifications


@attrs.frozen
class Registry:
    """A validated, merged view of config.yml and apps.d/.

    ``warnings`` did not stop anything (an unknown field, a drop-in overridden by config.yml);
    ``skipped`` are apps.d files left out for their errors. Both are kept so a reload can report
    them.
    """

    settings: Settings = attrs.field(factory=Settings)
    apps: tuple[AppSpec, ...] = ()
    warnings: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    def get(self, name: str) -> AppSpec | None:
        return self._by_key.get(name_key(name))

    @cached_property
    def _by_key(self) -> dict[str, AppSpec]:
        """``name_key`` -> app, built once per registry (a scan per lookup made applying
        1,000 apps cost half a million comparisons). The first of a name wins, as a scan's."""
        table: dict[str, AppSpec] = {}
        for app in self.apps:
            table.setdefault(name_key(app.name), app)
        return table

    @cached_property
    def chords(self) -> dict[str, str]:
        """Chord key -> app name (``chord_key`` spells the keys), built once per registry."""
        return chord_table(self.apps)

    def by_chord(self, chord: str) -> AppSpec | None:
        name = self.chords.get(chord_key(chord))
        return None if name is None else self.get(name)


# A manifest's keys ("source" is where the loader found it, not something a manifest says).
APP_FIELDS = frozenset(f.alias or f.name for f in attrs.fields(AppSpec)) - {"source"}
SETTINGS_FIELDS = frozenset(f.name for f in attrs.fields(Settings)) | {"apps"}
