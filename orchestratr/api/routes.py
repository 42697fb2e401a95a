"""The endpoints. Each handler parses, makes one supervisor call, and serialises the result.

Routing is a table of ``(method, template)`` rows; ``{name}`` segments are percent-decoded,
lowercased (app names are lowercase, so ``/apps/Notes`` means ``notes``, and the Go
orchestratr's split-state bug B4 cannot happen) and checked against the name rule.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote

import attrs

from orchestratr import __version__, threads
from orchestratr.api import sse
from orchestratr.api.errors import MAX_ECHO, ApiError
from orchestratr.api.sse import FLAGS, StreamSettings
from orchestratr.api.wire import (
    INBOX_RESET_HINT,
    EventBody,
    LaunchedBody,
    MessageBody,
    ServicesBody,
    TriggerBody,
    ack_json,
    app_json,
    delivery_json,
    detail_json,
    iso,
    launch_json,
    message_json,
    offers_json,
    refuse_unknown,
    service_json,
    state_json,
)
from orchestratr.applog import AppLogs
from orchestratr.controls import HotkeyControl, RegistryControl
from orchestratr.convert import structure_body
from orchestratr.errors import BadRequestError, clip
from orchestratr.registry.validate import NAME_PATTERN
from orchestratr.supervisor.app import AppSnapshot
from orchestratr.supervisor.core import Supervisor
from orchestratr.supervisor.states import Cause

MAX_CHORD_LENGTH = 32
MAX_WARNINGS = 20  # listed in a registration's answer; each quotes a field the client sent
# RFC 9110's methods and PATCH: one of these not allowed on a path is 405, any other 501
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


_NO_HEADERS: dict[str, str] = {}


class HeaderLookup(Protocol):
    """What a handler reads of the request's headers (case-insensitive on the server)."""

    def get(self, name: str, failobj: None = None, /) -> str | None: ...


@attrs.frozen
class Request:
    method: str
    params: Mapping[str, str]
    body: Any  # parsed JSON, or None when there was no body
    query: Mapping[str, list[str]] = attrs.field(factory=dict)
    headers: HeaderLookup = attrs.field(factory=lambda: _NO_HEADERS)

    @property
    def name(self) -> str:
        return self.params["name"]

    def flag(self, key: str) -> bool:
        """A ``?key=true|false`` query parameter (absent: false)."""
        values = self.query.get(key, ["false"])
        value = values[-1].lower()
        if value not in FLAGS:
            raise BadRequestError(f"{key}: expected true or false, got {value[:32]!r}")
        return FLAGS[value]


@attrs.frozen
class Response:
    status: int
    body: Any  # JSON-able, bytes already encoded by ``encode``, or a Stream (SSE)


Handler = Callable[[Request], Response]


def ok(body: Any) -> Response:
    return Response(200, body)


def encode(body: Any) -> bytes:
    """A JSON answer as sent: one line, newline-terminated, as the Go orchestratr's were."""
    return (json.dumps(body) + "\n").encode()


class Api:
    """The API's endpoints over one supervisor.

    ``registry`` reloads the config and registers apps; ``hotkeys`` controls the hotkeys (None
    in tests that need none); ``logs`` finds and reads apps' output; ``streams`` tunes the
    event streams (tests shorten it).
    """

    def __init__(
        self,
        supervisor: Supervisor,
        registry: RegistryControl,
        hotkeys: HotkeyControl | None,
        openapi: Callable[[], dict[str, Any]],
        logs: AppLogs,
        streams: StreamSettings = StreamSettings(),
    ) -> None:
        self._sup = supervisor
        self._logs = logs
        self._registry = registry
        self._hotkeys = hotkeys
        self._openapi = openapi
        self._streams = streams
        self._started = time.time()
        self._apps_cache: tuple[int | None, bytes] = (None, b"")
        self.routes: list[tuple[str, str, Handler]] = [
            ("GET", "/health", self.health),
            ("GET", "/openapi.json", self.openapi),
            ("GET", "/apps", self.apps),
            ("POST", "/apps", self.register),
            ("GET", "/apps/{name}", self.app),
            ("DELETE", "/apps/{name}", self.unregister),
            ("GET", "/apps/{name}/state", self.state),
            ("GET", "/apps/{name}/logs", self.logs),
            ("POST", "/apps/{name}/launched", self.launched),
            ("POST", "/apps/{name}/ready", self.ready),
            ("POST", "/apps/{name}/stopped", self.stopped),
            ("POST", "/apps/{name}/launch", self.launch),
            ("POST", "/apps/{name}/stop", self.stop),
            ("POST", "/apps/{name}/restart", self.restart),
            ("POST", "/apps/{name}/heartbeat", self.heartbeat),
            ("PUT", "/apps/{name}/heartbeat", self.heartbeat),
            ("POST", "/apps/{name}/drain", self.drain),
            ("POST", "/apps/{name}/revive", self.revive),
            ("GET", "/events", self.events),
            ("POST", "/events", self.publish),
            ("GET", "/events/stream", self.stream),
            ("POST", "/apps/{name}/message", self.message),
            ("GET", "/apps/{name}/messages", self.messages),
            ("GET", "/apps/{name}/services", self.offers),
            ("PUT", "/apps/{name}/services", self.declare),
            ("GET", "/services", self.services),
            ("GET", "/services/resolve", self.resolve),
            ("GET", "/services/browse", self.browse),
            ("POST", "/reload", self.reload),
            ("POST", "/trigger", self.trigger),
            ("GET", "/hotkeys", self.hotkeys),
            ("POST", "/hotkeys/pause", self.pause_hotkeys),
            ("POST", "/hotkeys/resume", self.resume_hotkeys),
        ]

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler for a request and its path parameters.

        Raises:
            ApiError: not_found (no such path), method_not_allowed (with ``Allow``),
                not_implemented (a method HTTP does not define).
            BadRequestError: an ``{name}`` that is not a valid app name.
        """
        if method not in KNOWN_METHODS:
            raise ApiError("not_implemented", f"unknown method {clip(method, 32)!r}")
        segments = [unquote(s) for s in path.split("/")]
        method = "GET" if method == "HEAD" else method  # the server leaves the body out
        allowed: list[str] = []
        for route_method, template, handler in self.routes:
            params = _match(template.split("/"), segments)
            if params is None:
                continue
            if route_method != method:
                allowed.extend(("GET", "HEAD") if route_method == "GET" else (route_method,))
                continue
            return handler, _checked(params)
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise ApiError("method_not_allowed", f"use {allow}", headers={"Allow": allow})
        raise ApiError("not_found", "endpoint not found")

    # ------------------------------------------------------------- endpoints

    def health(self, _: Request) -> Response:
        """Liveness, and which daemon answers: a client sees a restart as a new pid. Parts
        that crashed recently (and were restarted) make it ``degraded``."""
        degraded = threads.degraded()
        return ok({"status": "degraded" if degraded else "ok", "version": __version__,
                   "pid": os.getpid(), "started_at": iso(self._started),
                   "config_errors": len(self._registry.config_errors()),
                   "degraded": degraded})

    def openapi(self, _: Request) -> Response:
        return ok(self._openapi())

    def apps(self, _: Request) -> Response:
        """The most polled endpoint: its encoded body is reused while no app has changed."""
        changes = self._sup.changes.value  # read before the snapshots (see Changes)
        cached = self._apps_cache  # replaced whole, never mutated: no lock needed
        if cached[0] != changes:
            body = encode([app_json(s) for s in self._sup.snapshots()])
            cached = self._apps_cache = (changes, body)
        return ok(cached[1])

    def app(self, req: Request) -> Response:
        snap = self._sup.snapshot(req.name, with_history=True)
        return ok(detail_json(snap, self._sup.processes(snap.name),
                              str(self._logs.path(snap.name)), time.time()))

    def logs(self, req: Request) -> Response:
        """The app's last lines, or (``follow``) a stream of them as they are written."""
        query = sse.parse_log_query(req.query)
        name = self._sup.snapshot(req.name, with_history=False).name  # 404 if unknown
        if query.follow:
            return ok(sse.LogStream(self._logs, name, query.lines, self._streams))
        return ok({"app": name, "path": str(self._logs.path(name)),
                   "lines": self._logs.tail(name, query.lines)})

    def state(self, req: Request) -> Response:
        return ok(state_json(self._sup.snapshot(req.name, with_history=False)))

    def register(self, req: Request) -> Response:
        if not isinstance(req.body, dict):
            raise BadRequestError("expected a JSON object of app fields")
        snap, warnings = self._registry.register(req.body)
        return Response(201, {**app_json(snap), "warnings": _few(warnings)})

    def unregister(self, req: Request) -> Response:
        _body(req, _Empty)
        snap = self._registry.unregister(req.name, keep_running=req.flag("keep_running"))
        return ok({"unregistered": snap.name, "state": snap.state.value, "pid": snap.pid})

    def launched(self, req: Request) -> Response:
        body = _body(req, LaunchedBody)
        return ok(ack_json(self._sup.notify_launched(req.name, Cause.api, pid=body.pid,
                                                     lease_s=body.lease_secs,
                                                     services=body.services)))

    def heartbeat(self, req: Request) -> Response:
        _body(req, _Empty)
        renewal = self._sup.heartbeat(req.name, Cause.api)
        return ok({"renewed": renewal.app.name, "expires_in_secs": renewal.expires_in_s,
                   "state": renewal.app.state.value})

    def drain(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(ack_json(self._sup.drain(req.name, Cause.api)))

    def revive(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(ack_json(self._sup.revive(req.name, Cause.api)))

    def events(self, req: Request) -> Response:
        return ok(sse.poll(self._sup.bus, sse.parse_query(req.query)))

    def stream(self, req: Request) -> Response:
        query = sse.parse_query(req.query, req.headers.get("Last-Event-ID"), stream=True)
        return ok(sse.EventStream.replaying(sse.Feed(self._sup.bus), query, self._streams))

    def publish(self, req: Request) -> Response:
        body = _body(req, EventBody)
        event = self._sup.publish(body.source, body.type, body.data)
        return Response(202, {"id": event.id})

    # ------------------------------------------------------------- messages

    def message(self, req: Request) -> Response:
        body = _body(req, MessageBody)
        delivery = self._sup.send(req.name, body.sender, body.data, body.launch, Cause.api)
        return Response(202, delivery_json(delivery))

    def messages(self, req: Request) -> Response:
        """The inbox, streamed or, with ``poll=true``, as a list. A reader without an id
        (``since``, ``Last-Event-ID``) gets what no reader was sent yet, which is then read."""
        polled = req.flag("poll")
        inbox = self._sup.inbox(req.name)
        query = sse.parse_query({k: v for k, v in req.query.items() if k != "poll"},
                                None if polled else req.headers.get("Last-Event-ID"),
                                stream=not polled, filters=False)
        unread = query.since is None
        since = inbox.read_up_to if query.since is None else query.since
        if polled:
            messages = inbox.bus.replay(since, query.limit)[0]
            if unread and messages:
                inbox.mark_read(messages[-1].id)
            return ok([message_json(e) for e in messages])
        feed = sse.Feed(inbox.bus, sse.message_frame, inbox.mark_read, INBOX_RESET_HINT)
        return ok(sse.EventStream.replaying(feed, attrs.evolve(query, since=since),
                                            self._streams))

    # ------------------------------------------------------------- services

    def offers(self, req: Request) -> Response:
        return ok(self._offers_json(self._sup.snapshot(req.name, with_history=False)))

    def declare(self, req: Request) -> Response:
        raw = {"services": req.body} if isinstance(req.body, list) else req.body
        services = _body(Request(req.method, req.params, raw), ServicesBody).services
        return ok(self._offers_json(self._sup.declare_services(req.name, services)))

    def _offers_json(self, snap: AppSnapshot) -> dict[str, Any]:
        registry = self._sup.services
        live = [r for r in registry.records() if r.app == snap.name]
        return offers_json(snap.name, registry.offered(snap.name, snap.spec.services), live)

    def services(self, req: Request) -> Response:
        type_, _ = sse.parse_browse(req.query, stream=False)
        return ok([service_json(r) for r in self._sup.services.records(type_)])

    def resolve(self, req: Request) -> Response:
        refuse_unknown(req.query, {"name"})
        names = req.query.get("name", [])
        if len(names) != 1 or not names[0]:
            raise BadRequestError("name: give the service's name once, e.g. ?name=notes-api")
        return ok(service_json(self._sup.services.resolve(names[0])))

    def browse(self, req: Request) -> Response:
        type_, idle_for = sse.parse_browse(req.query, stream=True)
        records, subscription = self._sup.services.browse(type_, self._streams.queue_size)
        head = [sse.found_frame(service_json(r)) for r in records]
        return ok(sse.EventStream(subscription, self._streams, idle_for,
                                  frame=sse.service_frame, head=head))

    def ready(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(ack_json(self._sup.notify_ready(req.name, Cause.api)))

    def stopped(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(ack_json(self._sup.notify_stopped(req.name, Cause.api)))

    def launch(self, req: Request) -> Response:
        _body(req, _Empty)
        result = self._sup.launch(req.name, Cause.api)
        return ok(launch_json(result))

    def stop(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(ack_json(self._sup.stop(req.name, Cause.api)))

    def restart(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(ack_json(self._sup.restart(req.name, Cause.api)))

    def reload(self, req: Request) -> Response:
        _body(req, _Empty)
        registry = self._registry.reload(Cause.api)
        return ok({
            "apps": [app_json(s) for s in self._sup.snapshots()],
            "warnings": list(registry.warnings),
            "skipped": list(registry.skipped),
            "status": "ok",
        })

    def trigger(self, req: Request) -> Response:
        chord = _body(req, TriggerBody).chord
        if chord:
            if len(chord) > MAX_CHORD_LENGTH:
                raise BadRequestError(f"chord is longer than {MAX_CHORD_LENGTH} characters")
            result = self._sup.launch(self._sup.find_chord(chord), Cause.api)
            return ok(launch_json(result))
        try:
            self._service().press_leader()
        except RuntimeError as exc:
            raise ApiError("unavailable",
                           f"hotkeys unavailable ({exc}); POST a chord instead") from None
        return ok({"status": "ok"})

    def hotkeys(self, _: Request) -> Response:
        return ok(attrs.asdict(self._service().status()))

    def pause_hotkeys(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(attrs.asdict(self._service().pause()))

    def resume_hotkeys(self, req: Request) -> Response:
        _body(req, _Empty)
        return ok(attrs.asdict(self._service().resume()))

    def _service(self) -> HotkeyControl:
        if self._hotkeys is None:
            raise ApiError("unavailable", "this server runs without a hotkey service")
        return self._hotkeys


@attrs.frozen
class _Empty:
    """Endpoints that take no body accept none, or an empty JSON object."""


def _body(req: Request, cls: type[Any]) -> Any:
    return structure_body({} if req.body is None else req.body, cls)


def _few(warnings: list[str]) -> list[str]:
    """At most MAX_WARNINGS warnings, each clipped: a body of 50,000 unknown fields, or one
    1 MB field name, must not come back whole."""
    shown = [clip(w, MAX_ECHO) for w in warnings[:MAX_WARNINGS]]
    if len(warnings) > MAX_WARNINGS:
        shown.append(f"... and {len(warnings) - MAX_WARNINGS} more")
    return shown


def _match(template: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(template) != len(segments):
        return None
    params = {}
    for part, segment in zip(template, segments, strict=True):
        if part.startswith("{"):
            if not segment:
                return None
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params


def _checked(params: dict[str, str]) -> dict[str, str]:
    if "name" in params and not NAME_PATTERN.fullmatch(params["name"]):
        raise BadRequestError("invalid app name")  # a valid one is looked up case-insensitively
    return params
