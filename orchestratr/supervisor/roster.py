"""The apps by name: a new registry's apps are added, changed apps get their new spec, and apps
that left it are retired (kept while their process runs, then forgotten).

Readers take ``apps`` without a lock: it is a tuple replaced whole, before the change count
moves, so a reader that read the count first never pairs it with an older roster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs
import structlog

from orchestratr.registry.model import AppSpec, Registry, name_key
from orchestratr.supervisor.app import App, Changes
from orchestratr.supervisor.states import IDLE

log = structlog.get_logger("orchestratr.supervisor")


@attrs.frozen
class RosterChange:
    added: list[str]
    removed: list[str]


class Roster:
    """``make(spec)`` builds an app (and attaches it to the machine); ``drop(app)`` detaches a
    forgotten one."""

    def __init__(
        self, make: Callable[[AppSpec], App], drop: Callable[[App], None], changes: Changes
    ) -> None:
        self._make = make
        self._drop = drop
        self.changes = changes
        self._lock = threading.RLock()  # the dict and the registry; taken before app locks
        self._by_name: dict[str, App] = {}  # by name_key: names are case-insensitive
        self.apps: tuple[App, ...] = ()
        self.registry = Registry()

    def get(self, name: str) -> App | None:
        with self._lock:
            return self._by_name.get(name_key(name))

    def apply(self, registry: Registry) -> RosterChange:
        """Swap in ``registry``; running apps are never touched (see the module's docstring)."""
        with self._lock:
            added = [spec.name for spec in registry.apps
                     if name_key(spec.name) not in self._by_name]
            for spec in registry.apps:
                self._upsert(spec)
            if added:
                self._changed()
            removed = [app.name for key, app in self._by_name.items()
                       if registry.get(key) is None]
            for name in removed:
                self.retire(self._by_name[name_key(name)])
            self.registry = registry
        return RosterChange(added, removed)

    def retire(self, app: App) -> None:
        """An app left the registry: forget it now, or once its process has exited."""
        with app.lock:
            app.retire()
            idle = app.state in IDLE and app.pid is None
        if idle:
            self.forget(app)

    def forget(self, app: App) -> None:
        """Drop a retired app that has no process any more."""
        with self._lock:
            if app.removed and self._by_name.get(name_key(app.name)) is app:
                del self._by_name[name_key(app.name)]
                self._changed()
                self._drop(app)
                log.info("app_forgotten", app=app.name)

    def _upsert(self, spec: AppSpec) -> None:
        """Add or update the app of ``spec`` (the caller calls ``_changed`` once after all)."""
        app = self._by_name.get(name_key(spec.name))
        if app is None:
            self._by_name[name_key(spec.name)] = self._make(spec)
            return
        with app.lock:
            app.respec(spec)

    def _changed(self) -> None:
        """After the dict changed (lock held): the tuple first, then the count."""
        self.apps = tuple(self._by_name.values())
        self.changes.bump()
