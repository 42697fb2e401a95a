"""The registry of live services: what each running app offers on localhost (Koi's model, with
no multicast: orchestratr knows every app, so it answers browse and resolve itself).

An app declares its services in its manifest, in its ``launched`` notification, or at run time
(a declaration replaces the manifest's list until the app is gone). They are *live* only while
the app is in ``states.SERVING``: every transition passes through ``follow``, so a service is
withdrawn in the same instant as its app's exit is recorded, and found again when the app
runs again. Each change is a ``service_found`` or ``service_removed`` event on the bus.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import structlog

from orchestratr.errors import BadRequestError, ConflictError, UnknownServiceError, quoted
from orchestratr.registry.model import ServiceSpec, name_key, service_key
from orchestratr.registry.validate import service_problems
from orchestratr.supervisor.bus import BusEvent, EventBus, Subscription

log = structlog.get_logger("orchestratr.supervisor")

HOST = "127.0.0.1"  # services are offered on loopback: that is where apps find each other
FOUND, REMOVED = "service_found", "service_removed"  # their events on the bus

# app name -> the services its manifest declares (every app the roster holds)
Claims = Callable[[], Iterable[tuple[str, Sequence[ServiceSpec]]]]


@attrs.frozen
class ServiceRecord:
    """A live service as ``GET /services`` lists it."""

    name: str
    type: str
    app: str
    host: str
    port: int
    txt: Mapping[str, str]

    def fields(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "app": self.app, "host": self.host,
                "port": self.port, "txt": dict(self.txt)}


def record(app: str, spec: ServiceSpec) -> ServiceRecord:
    return ServiceRecord(spec.name, spec.type, app, HOST, spec.port, dict(spec.txt))


def of_type(type_: str | None) -> Callable[[ServiceRecord], bool]:
    """A filter on the service type (DNS-SD types compare case-insensitively); None: all."""
    wanted = None if type_ is None else type_.casefold()
    return lambda rec: wanted is None or rec.type.casefold() == wanted


class Services:
    """``bus()`` is where changes are published; ``claims`` lists every app's manifest
    services, for the uniqueness of names across apps."""

    def __init__(self, bus: Callable[[], EventBus], claims: Claims) -> None:
        self._bus = bus
        self._claims = claims
        self._lock = threading.Lock()  # taken under an app's lock, never the other way round
        self._declared: dict[str, tuple[ServiceSpec, ...]] = {}  # by app name_key
        self._live: dict[str, ServiceRecord] = {}  # by service_key

    def offered(self, app: str, manifest: Sequence[ServiceSpec]) -> tuple[ServiceSpec, ...]:
        """What ``app`` offers: its run-time declaration if it made one, else its manifest's."""
        with self._lock:
            return self._declared.get(name_key(app), tuple(manifest))

    def follow(self, app: str, live: bool, manifest: Sequence[ServiceSpec]) -> None:
        """After each of the app's transitions (its lock held): its services go live or are
        withdrawn with it."""
        with self._lock:
            wanted = self._declared.get(name_key(app), tuple(manifest)) if live else ()
            self._set(app, wanted)

    def check(self, app: str, services: Sequence[ServiceSpec]) -> None:
        """Whether ``app`` may offer ``services``.

        Raises:
            BadRequestError: naming every invalid field.
            ConflictError: another app offers one of the names.
        """
        problems = service_problems(services)
        if problems:
            raise BadRequestError("; ".join(f"{field}: {message}" for field, message in problems))
        with self._lock:
            self._check_names(app, services)

    def declare(self, app: str, services: Sequence[ServiceSpec], live: bool) -> None:
        """Replace what ``app`` offers (its lock held, ``check``-ed); live at once if it is.

        Raises:
            ConflictError: another app offers one of the names.
        """
        with self._lock:
            self._check_names(app, services)
            self._declared[name_key(app)] = tuple(services)
            if live:
                self._set(app, tuple(services))

    def keep(self, apps: Iterable[str]) -> None:
        """Forget the declarations of apps that are gone (``apps`` are those still here)."""
        kept = {name_key(app) for app in apps}
        with self._lock:
            for key in set(self._declared) - kept:
                del self._declared[key]

    # ------------------------------------------------------------------- reads

    def records(self, type_: str | None = None) -> list[ServiceRecord]:
        accept = of_type(type_)
        with self._lock:
            return sorted((r for r in self._live.values() if accept(r)),
                          key=lambda r: service_key(r.name))

    def resolve(self, name: str) -> ServiceRecord:
        """Raises UnknownServiceError when no live service has that name."""
        with self._lock:
            found = self._live.get(service_key(name))
        if found is None:
            raise UnknownServiceError(f"no live service named {quoted(name)}")
        return found

    def browse(self, type_: str | None, maxsize: int) -> tuple[list[ServiceRecord], Subscription]:
        """The live records of a type and a subscription to their changes from that instant:
        every change is published under the lock, so none is in both or in neither."""
        accept = of_type(type_)

        def changes(event: BusEvent) -> bool:
            return event.type in (FOUND, REMOVED) and accept(_as_record(event))

        with self._lock:
            current = sorted((r for r in self._live.values() if accept(r)),
                             key=lambda r: service_key(r.name))
            return current, self._bus().subscribe(maxsize=maxsize, accept=changes)

    # ------------------------------------------------------------------ changes

    def _set(self, app: str, specs: Sequence[ServiceSpec]) -> None:
        """Make ``app``'s live records exactly ``specs`` (lock held); publish each change."""
        current = {k: r for k, r in self._live.items() if name_key(r.app) == name_key(app)}
        wanted = {service_key(s.name): record(app, s) for s in specs}
        for key, old in current.items():
            if wanted.get(key) != old:
                del self._live[key]
                self._announce(REMOVED, old)
        for key, new in wanted.items():
            if current.get(key) == new:
                continue
            if key in self._live:  # another app's, live first (two drop-ins both claim it)
                log.warning("service_name_taken", app=app, service=new.name,
                            owner=self._live[key].app)
                continue
            self._live[key] = new
            self._announce(FOUND, new)

    def _announce(self, kind: str, rec: ServiceRecord) -> None:
        self._bus().publish(kind, **rec.fields())
        log.info(kind, app=rec.app, service=rec.name, type=rec.type, port=rec.port)

    def _check_names(self, app: str, services: Sequence[ServiceSpec]) -> None:
        for spec in services:
            owner = self._owner(service_key(spec.name), app)
            if owner is not None:
                raise ConflictError(f"service name {spec.name!r} is taken by app {owner!r}")

    def _owner(self, key: str, asking: str) -> str | None:
        """Which other app offers the service name ``key`` (lock held): live, declared at run
        time, or in its manifest."""
        live = self._live.get(key)
        if live is not None and name_key(live.app) != name_key(asking):
            return live.app
        for app, manifest in self._claims():
            if name_key(app) == name_key(asking):
                continue
            offered = self._declared.get(name_key(app), tuple(manifest))
            if any(service_key(s.name) == key for s in offered):
                return app
        return None


def _as_record(event: BusEvent) -> ServiceRecord:
    data = event.data
    return ServiceRecord(data["name"], data["type"], data["app"], data["host"], data["port"],
                         data["txt"])
