"""The OpenAPI 3.1 document describing every endpoint, body and error.

Tests validate real responses against it and fuzz the API from it, so it cannot drift from
what the server does without a test failing.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from orchestratr import __version__
from orchestratr.api.errors import STATUS
from orchestratr.api.server import MAX_BODY, MAX_LINE
from orchestratr.api.sse import BROWSE_IDLE_S, KEEPALIVE_S, MAX_IDLE_S, MAX_LIMIT
from orchestratr.api.transport import Limits
from orchestratr.api.wire import (
    MAX_DEPTH,
    MAX_PID,
    MIN_PID,
    AppDetail,
    AppStatus,
    EventBody,
    MessageBody,
    ServicesBody,
)
from orchestratr.applog import DEFAULT_LINES, LOG_MAX_BYTES, MAX_LINES
from orchestratr.controls import HotkeyStatus
from orchestratr.registry.model import APP_FIELDS, AppSpec, ServiceSpec
from orchestratr.registry.validate import (
    MAX_LEASE_S,
    MAX_MS,
    MAX_PORT,
    MAX_SERVICE_NAME,
    MIN_PORT,
    NAME_PATTERN,
    SERVICE_TYPE_PATTERN,
)
from orchestratr.supervisor.bus import EVENT_TYPES, NOTICES, OWN_TYPES, PUBLISHED_TYPE
from orchestratr.supervisor.core import Delivery
from orchestratr.supervisor.inbox import INBOX_SIZE, MESSAGE
from orchestratr.supervisor.services import ServiceRecord
from orchestratr.supervisor.states import SERVING, AppState, Cause, Trigger

JSON = "application/json"
LIMITS = Limits()
ERROR_TEXT = {
    400: f"Malformed request: bad JSON (nested over {MAX_DEPTH} deep, or a string with a NUL or "
         "half a surrogate pair), wrong types, unknown fields, an invalid app name; two Host "
         "headers, or none on HTTP/1.1",
    403: "Not from loopback, a foreign Host header or absolute target (DNS rebinding), an "
         "Origin that is not this server's (port included), or two, or Sec-Fetch-Site "
         "cross-site or same-site",
    404: "No such app, chord, service or endpoint (or a message from, or an event by, an "
         "app that is not registered)",
    405: "Wrong method; the Allow header names the right one",
    408: f"The request line and headers did not arrive within {LIMITS.header_s:g} s, or the "
         f"body within {LIMITS.body_s:g} s more (the connection is closed)",
    409: "The notification or command does not fit the app's current state, or a name, "
         "chord or service name is taken, or the app belongs to a config file",
    413: f"Request body over {MAX_BODY // 1024 // 1024} MiB",
    414: f"Request line over {MAX_LINE // 1024} KiB",
    415: "A request body that is not application/json, from a browser (a request with an "
         "Origin or Sec-Fetch-* header); scripts may label JSON as they like",
    431: f"Request line and headers over {LIMITS.head_bytes // 1024} KiB, or over 100 lines",
    501: "A method HTTP does not define, or a transfer coding other than chunked",
    505: "Not HTTP/1.x",
    507: "The config dir could not be written (read-only, full): nothing was registered or "
         "unregistered",
    500: "Internal error (details in the daemon log), or a command that could not be spawned",
    503: f"Too many connections busy at once (over {LIMITS.connections}; retry shortly), or, "
         "for the "
         "hotkey endpoints, "
         "hotkeys are not running (no X display, --no-hotkeys, or paused)",
}
RELOAD_400 = ("invalid_config: the config did not validate; `errors` lists every problem and "
              "the old registry stays active. Or bad_request, as for any endpoint")
ALLOW = {"Allow": {"description": "the methods this path accepts", "required": True,
                   "schema": {"type": "string", "example": "GET, HEAD"}}}
TRANSPORT = ("Before any endpoint, the transport may answer 400 (a garbled request line), 408 "
             f"(request line and headers not in within {LIMITS.header_s:g} s), 414 (request line "
             f"over {MAX_LINE // 1024} KiB), 431 "
             "(headers too large), 501 (a method HTTP does not define, or a transfer coding "
             "other than chunked), 503 (too many connections) or 505 (not HTTP/1.x), in the "
             "same error format, and close the connection.")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], required: list[str] | None = None,
         closed: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


PRIMITIVES: dict[type, dict[str, Any]] = {
    bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
    str: {"type": "string"},
}


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of a Python type as cattrs sends it: enums by value, ``X | None``
    nullable, sequences as arrays, mappings as objects, attrs classes as objects."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        inner = type_schema(present[0]) if len(present) == 1 else {
            "anyOf": [type_schema(a) for a in present]}
        return _nullable(inner) if len(present) < len(args) else inner
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return {"type": "object", "additionalProperties": type_schema(args[-1])}
    if isinstance(origin, type) and issubclass(origin, Sequence):
        return {"type": "array", "items": type_schema(args[0])}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [member.value for member in hint]}
    if attrs.has(hint):
        return attrs_schema(hint, required=[])  # a part of a manifest: each key optional
    if hint is Any:
        return {}  # any JSON value
    return dict(PRIMITIVES[hint])


def attrs_schema(cls: type, required: Sequence[str] | None = None) -> dict[str, Any]:
    """An object schema from an attrs class: one property per field, named as the wire names
    it (its alias), typed from its annotation, described by ``metadata={"description": ...}``
    and formatted by ``metadata={"format": ...}``; every field required unless ``required``
    names them. The class is the one spelling of the document's fields."""
    hints = typing.get_type_hints(cls)
    properties = {}
    for field in attrs.fields(cls):
        schema = type_schema(hints[field.name])
        if fmt := field.metadata.get("format"):
            _value_schema(schema)["format"] = fmt
        if description := field.metadata.get("description"):
            schema["description"] = description
        properties[field.metadata.get("key", field.alias or field.name)] = schema
    return _obj(properties, list(properties) if required is None else list(required))


def _value_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The part of a (maybe nullable) schema that describes a present value."""
    return schema["anyOf"][0] if "anyOf" in schema else schema


TIME = {"type": "string", "format": "date-time"}
EVENT_TYPE = {"type": "string", "pattern": PUBLISHED_TYPE.pattern,
              "description": "orchestratr's own: " + ", ".join(sorted(EVENT_TYPES | {"reset"}))
                             + "; any other is an app's (POST /events)"}
STRING = {"type": "string"}
STATE = {"type": "string", "enum": [s.value for s in AppState]}

# What validation (registry/validate.py) allows of a manifest's numbers, beyond their types.
SPEC_LIMITS: dict[str, dict[str, Any]] = {
    "lease_secs": {"exclusiveMinimum": 0, "maximum": MAX_LEASE_S},
    "grace_secs": {"minimum": 0, "maximum": MAX_LEASE_S},
    "ready_timeout_ms": {"maximum": MAX_MS},
    "restart_delay_ms": {"minimum": 0, "maximum": MAX_MS},
    "stop_timeout_ms": {"minimum": 0, "maximum": MAX_MS},
}


def _app_properties() -> dict[str, Any]:
    """An app's fields as the API shows them: its ``AppSpec`` (``source`` included), then
    its live ``AppStatus``."""
    properties = attrs_schema(AppSpec)["properties"]
    for name, limits in SPEC_LIMITS.items():
        _value_schema(properties[name]).update(limits)
    return {**properties, **attrs_schema(AppStatus)["properties"]}


def _service_schema() -> dict[str, Any]:
    """A service as an app declares it: the class, with validation's limits."""
    schema = attrs_schema(ServiceSpec, required=["name", "type", "port"])
    properties = schema["properties"]
    properties["name"].update(minLength=1, maxLength=MAX_SERVICE_NAME)
    properties["type"]["pattern"] = SERVICE_TYPE_PATTERN.pattern
    properties["port"].update(minimum=MIN_PORT, maximum=MAX_PORT)
    return schema


APP_PROPERTIES = _app_properties()
# What a registration may say: a manifest's fields (where it is declared is the API's to say)
SPEC_PROPERTIES = {k: v for k, v in APP_PROPERTIES.items() if k in APP_FIELDS}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {
            "error": STRING,
            "code": {"type": "string", "enum": sorted(STATUS)},
            "errors": {"type": "array", "items": STRING,
                       "description": "every validation error, for invalid_config"},
        },
        ["error", "code"],
    ),
    "Health": _obj({"status": {"enum": ["ok", "degraded"],
                               "description": "degraded: an internal part crashed recently "
                                              "(it was restarted; see degraded)"},
                    "version": STRING,
                    "pid": {"type": "integer", "description": "the daemon's"},
                    "started_at": TIME,
                    "config_errors": {"type": "integer", "minimum": 0,
                                      "description": "problems for which config.yml or a "
                                                     "drop-in is rejected now (POST /reload "
                                                     "lists them)"},
                    "degraded": {"type": "array", "items": _obj({
                        "part": STRING, "restarts": {"type": "integer"},
                        "error": {"type": ["string", "null"]}, "down": {"type": "boolean"}},
                        ["part", "restarts", "error", "down"])}},
                   ["status", "version", "pid", "started_at", "config_errors", "degraded"]),
    "App": _obj(APP_PROPERTIES, list(APP_PROPERTIES)),
    "HistoryEntry": _obj(
        {
            "from": STATE,
            "to": STATE,
            "trigger": {"type": "string", "enum": [t.value for t in Trigger]},
            "source": {"type": "string", "enum": [s.value for s in Cause]},
            "at": TIME,
            "detail": {"type": "object"},
        },
        ["from", "to", "trigger", "source", "at", "detail"],
    ),
    "Lease": _nullable(_obj(
        {
            "lease_secs": _nullable({"type": "number", "description": "null: drained, no lease"}),
            "grace_secs": {"type": "number"},
            "in_grace": {"type": "boolean", "description": "unresponsive: a heartbeat or "
                                                          "revive before it ends saves it"},
            "expires_in_secs": {"type": "number"},
        },
        ["lease_secs", "grace_secs", "in_grace", "expires_in_secs"],
    )),
    "AppDetail": {"allOf": [
        _ref("App"),
        _obj({"history": {"type": "array", "items": _ref("HistoryEntry")},
              "lease": _ref("Lease"), **attrs_schema(AppDetail)["properties"]},
             ["history", "lease", *attrs_schema(AppDetail)["required"]]),
    ]},
    "Logs": _obj(
        {
            "app": STRING,
            "path": {"type": "string", "description": "the app's log file"},
            "lines": {"type": "array", "items": STRING,
                      "description": "oldest first, without their newlines; a header line "
                                     "starts each run"},
        },
        ["app", "path", "lines"],
    ),
    "Registration": _obj(dict(SPEC_PROPERTIES), ["name", "command"]),
    "Registered": {"allOf": [
        _ref("App"),
        _obj({"warnings": {"type": "array", "items": STRING,
                           "description": "unknown fields, ignored"}}, ["warnings"]),
    ]},
    "Unregistered": _obj(
        {"unregistered": STRING, "state": STATE, "pid": _nullable({"type": "integer"})},
        ["unregistered", "state", "pid"],
    ),
    "Renewed": _obj(
        {"renewed": STRING, "expires_in_secs": {"type": "number"}, "state": STATE},
        ["renewed", "expires_in_secs", "state"],
    ),
    "Event": _obj(
        {
            "id": _nullable({"type": "integer", "description": "null only for reset"}),
            "type": EVENT_TYPE,
            "data": _obj({"at": TIME, "source": {
                "type": "string", "description": "the publishing app, for an app's event; "
                                                 "who caused it, for orchestratr's"},
                "data": {"type": "object", "description": "an app's event: what it "
                                                          "published"}}),
        },
        ["id", "type", "data"],
    ),
    "EventBody": attrs_schema(EventBody, required=["source", "type"]),
    "Published": _obj({"id": {"type": "integer"}}, ["id"]),
    "MessageBody": attrs_schema(MessageBody, required=[]),
    "Delivery": attrs_schema(Delivery, required=["id", "delivered"]),
    "Message": _obj(
        {"id": {"type": "integer"},
         "from": _nullable({"type": "string", "description": "the sending app"}),
         "data": {"description": "what was sent (any JSON value)"},
         "at": TIME},
        ["id", "from", "data", "at"],
    ),
    "Service": _service_schema(),
    "ServicesBody": {"anyOf": [
        _obj({"services": {"type": "array", "items": _ref("Service")}}, ["services"],
             closed=True) | {"description": attrs_schema(ServicesBody)["properties"]
                             ["services"].get("description", "the new list")},
        {"type": "array", "items": _ref("Service"), "description": "the list alone"},
    ]},
    "ServiceRecord": attrs_schema(ServiceRecord),
    "Offers": _obj(
        {"app": STRING,
         "services": {"type": "array", "items": _ref("Service"),
                      "description": "what it offers: declared at run time, else its manifest's"},
         "live": {"type": "array", "items": _ref("ServiceRecord"),
                  "description": "found now: while the app is " + ", ".join(
                      s.value for s in SERVING)}},
        ["app", "services", "live"],
    ),
    "GoAppState": _obj(
        {
            "name": STRING,
            "launched": {"type": "boolean"},
            "ready": {"type": "boolean"},
            "launched_at": TIME,
            "ready_at": TIME,
            "error": STRING,
            "state": STATE,
        },
        ["name", "launched", "ready", "state"],
    ),
    "Ack": _obj(
        {
            "app": STRING,
            "state": STATE,
            "pid": _nullable({"type": "integer"}),
            "status": {"const": "ok"},
        },
        ["app", "state", "pid", "status"],
    ),
    "Launch": {"allOf": [_ref("Ack"), _obj(
        {
            "spawned": {"type": "boolean", "description": "false: it was already running "
                                                          "(or its window: was found)"},
            "focused": {"type": "boolean",
                        "description": "its window was activated (run-or-raise)"},
            "reason": _nullable({"type": "string",
                                 "description": "why no window was activated"}),
        },
        ["spawned", "focused", "reason"],
    )]},
    "Reload": _obj(
        {
            "apps": {"type": "array", "items": _ref("App")},
            "warnings": {"type": "array", "items": STRING},
            "skipped": {"type": "array", "items": STRING},
            "status": {"const": "ok"},
        },
        ["apps", "warnings", "skipped", "status"],
    ),
    "Hotkeys": attrs_schema(HotkeyStatus),
    "Ok": _obj({"status": {"const": "ok"}}, ["status"], closed=True),
    "Empty": _obj({}, closed=True),
    "LaunchedBody": _obj({
        "pid": _nullable({"type": "integer", "minimum": MIN_PID, "maximum": MAX_PID}),
        "lease_secs": _nullable({"type": "number", "exclusiveMinimum": 0,
                                 "maximum": MAX_LEASE_S}),
        "services": _nullable({"type": "array", "items": _ref("Service"),
                               "description": "what the app offers while it runs (replaces "
                                              "its manifest's list)"}),
    }, closed=True),
    "TriggerBody": _obj({"chord": _nullable({"type": "string", "maxLength": 32})}, closed=True),
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _error(status) for status in statuses}


def _error(status: int) -> dict[str, Any]:
    response = {"description": ERROR_TEXT[status], "content": {JSON: {"schema": _ref("Error")}}}
    if status == 405:
        response["headers"] = ALLOW
    return response


def _operation(summary: str, ok: dict[str, Any], *errors: int, body: str | None = None,
               status: int = 200, media: str = JSON,
               parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {str(status): {"description": "OK", "content": {media: {"schema": ok}}},
                      **_errors(400, 403, 405, 408, 414, 431, 500, 501, 503, 505, *errors)},
    }
    if body is not None:
        op["requestBody"] = {"required": status == 201,
                             "content": {JSON: {"schema": _ref(body)}}}
        op["responses"].update(_errors(413, 415))
    if parameters:
        op["parameters"] = parameters
    return op


def _query(name: str, schema: dict[str, Any], description: str,
           many: bool = False) -> dict[str, Any]:
    if many:
        schema = {"type": "array", "items": schema}
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema, **({"style": "form", "explode": True} if many else {})}


SINCE = _query("since", {"type": "integer", "minimum": 0},
               "events after this id (a reset first if some are gone)")
FILTERS = [
    _query("app", {"type": "string"}, "only events about these apps", many=True),
    _query("type", {"type": "string", "pattern": PUBLISHED_TYPE.pattern}, "only these types",
           many=True),
    _query("source", {"type": "string"}, "only events from these sources (an app that "
                                         "published them, or who caused a transition)",
           many=True),
    SINCE,
]
IDLE_FOR = _query("idle_for", {"type": "number", "minimum": 0, "maximum": MAX_IDLE_S},
                  "close after this many seconds without an event (0: never)")
LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "required": False, "schema": STRING,
                 "description": "resume after this id (what EventSource sends when it "
                                "reconnects)"}
STREAM_PARAMS = [*FILTERS, IDLE_FOR, LAST_EVENT_ID]
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
               "at most this many")
POLL_PARAMS = [*FILTERS, LIMIT]
INBOX_PARAMS = [
    _query("poll", {"type": "boolean"}, "answer a JSON array of messages instead of a stream"),
    _query("since", {"type": "integer", "minimum": 0},
           "messages after this id; absent: those no reader was sent yet"),
    _query("idle_for", {"type": "number", "minimum": 0, "maximum": MAX_IDLE_S},
           "the stream's: close after this many seconds without a message (0: never)"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
           "the poll's: at most this many"),
    LAST_EVENT_ID,
]
SERVICE_TYPE = _query("type", {"type": "string", "pattern": SERVICE_TYPE_PATTERN.pattern},
                      "only services of this type, e.g. _http._tcp")


def _sse(what: str, events: dict[str, Any], data: str) -> dict[str, Any]:
    return _obj(
        {
            "id": {"type": "string", "description": "the event's id (none on " + ", ".join(
                sorted(NOTICES)) + ")"},
            "event": events,
            "data": {"type": "string", "description": data},
        },
        ["event", "data"],
    ) | {"description": f"Server-Sent Events, {what}; a `: keep-alive` comment every "
                        f"{KEEPALIVE_S:g} s"}


SSE_SCHEMA = _sse("one per event; `reset` first when resuming past the buffer, `overflow` "
                  "last before a reader that fell behind is cut off",
                  EVENT_TYPE | {"description": "orchestratr's own: " + ", ".join(
                      sorted(OWN_TYPES)) + "; any other is an app's"},
                  "one JSON object: an Event's data")
INBOX_SSE = _sse(f"one per message (the inbox keeps the last {INBOX_SIZE})",
                 {"type": "string", "enum": sorted({MESSAGE, *NOTICES})},
                 "one JSON object: a Message")
BROWSE_SSE = _sse("`found` for each live service, then `found` and `removed` as apps start "
                  "and stop", {"type": "string", "enum": ["found", "removed"]},
                  "one JSON object: a ServiceRecord")


def _stream_or_poll(summary: str) -> dict[str, Any]:
    """The inbox: a stream, or with ``poll=true`` a JSON array."""
    op = _operation(summary, {"type": "array", "items": _ref("Message")}, 404,
                    parameters=INBOX_PARAMS)
    op["responses"]["200"]["content"]["text/event-stream"] = {"schema": INBOX_SSE}
    return op


LOG_PARAMS = [
    _query("lines", {"type": "integer", "minimum": 0, "maximum": MAX_LINES,
                     "default": DEFAULT_LINES},
           "how many of the last lines (the previous rotated file's too, if the current one "
           "holds fewer); with follow, sent first"),
    _query("follow", {"type": "boolean", "default": False},
           "stream lines as the app writes them (Server-Sent Events)"),
]
LOG_SSE_SCHEMA = _obj(
    {
        "event": {"type": "string", "enum": ["line", "launch"]},
        "data": {"type": "string", "description": 'line: {"line", "at"} (at: null for lines '
                                                  'written before the stream opened); launch: '
                                                  '{"command", "at"}, where each run starts'},
    },
    ["event", "data"],
) | {"description": "Server-Sent Events: the app's lines as it writes them, across its "
                    "restarts and the file's rotations (at "
                    f"{LOG_MAX_BYTES // 1024 // 1024} MiB); a `: keep-alive` comment every "
                    f"{KEEPALIVE_S:g} s without a line"}


NAME = {"name": "name", "in": "path", "required": True, "example": "notes",
        "description": "the app's name (case-insensitive, percent-encoded)",
        "schema": {"type": "string", "pattern": NAME_PATTERN.pattern}}


def _app_path(**operations: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": [NAME], **operations}


def _command(summary: str, body: str = "Empty") -> dict[str, Any]:
    return {"post": _operation(summary, _ref("Ack"), 404, 409, body=body)}


def _reload() -> dict[str, Any]:
    op = _operation("Reload the config now", _ref("Reload"), body="Empty")
    op["responses"]["400"]["description"] = RELOAD_400
    return op


def _logs() -> dict[str, Any]:
    op = _operation("The app's output: its last lines, or (follow) a live stream of them",
                    _ref("Logs"), 404, parameters=LOG_PARAMS)
    op["responses"]["200"]["content"]["text/event-stream"] = {"schema": LOG_SSE_SCHEMA}
    return op


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orchestratr",
            "version": __version__,
            "description": "Local process supervisor API. Loopback only; every error is "
                           '{"error": "<message>", "code": "<code>"}. ' + TRANSPORT,
        },
        "servers": [{
            "url": "http://127.0.0.1:{port}",
            "description": "port: api_port from config.yml, or --port; the port the daemon got "
                           "is in <config-dir>/port (~/.config/orchestratr/port)",
            "variables": {"port": {"default": "9876"}},
        }],
        "paths": {
            "/health": {"get": _operation("Liveness and version", _ref("Health"))},
            "/openapi.json": {"get": _operation("This document", {"type": "object"})},
            "/apps": {
                "get": _operation("Every app with its live state",
                                  {"type": "array", "items": _ref("App")}),
                "post": _operation("Register an app at runtime (kept across restarts)",
                                   _ref("Registered"), 409, 507, body="Registration",
                                   status=201),
            },
            "/apps/{name}": _app_path(
                get=_operation("One app with its recent transitions and its lease",
                               _ref("AppDetail"), 404),
                delete=_operation(
                    "Unregister an app registered through the API (stopped first unless "
                    "keep_running)", _ref("Unregistered"), 404, 409, 507, parameters=[
                        _query("keep_running", {"type": "boolean"},
                               "leave it running (tracked until it exits)")]),
            ),
            "/apps/{name}/state": _app_path(get=_operation(
                "Go-compatible state (unset fields omitted)", _ref("GoAppState"), 404)),
            "/apps/{name}/logs": _app_path(get=_logs()),
            "/apps/{name}/launched": _app_path(**_command(
                "The app says it started; a pid makes orchestratr track it", "LaunchedBody")),
            "/apps/{name}/ready": _app_path(**_command("The app says it is ready")),
            "/apps/{name}/stopped": _app_path(**_command("The app says it is shutting down")),
            "/apps/{name}/launch": _app_path(post=_operation(
                "Launch, or bring its window forward if it runs", _ref("Launch"), 404, 409,
                body="Empty")),
            "/apps/{name}/stop": _app_path(**_command("SIGTERM the app's process group")),
            "/apps/{name}/restart": _app_path(**_command("Stop, then launch again")),
            "/apps/{name}/heartbeat": _app_path(**{
                method: _operation("Renew the app's lease; revives an unresponsive app. An "
                                   "app that holds no lease (no lease_secs) gets 409",
                                   _ref("Renewed"),
                                   404, 409, body="Empty")
                for method in ("post", "put")}),
            "/apps/{name}/drain": _app_path(**_command("Start the grace period now")),
            "/apps/{name}/revive": _app_path(**_command("Cancel the grace period: ready again")),
            "/events": {
                "get": _operation("Buffered events, oldest first, for clients that poll",
                                  {"type": "array", "items": _ref("Event")},
                                  parameters=POLL_PARAMS),
                "post": _operation(
                    "Publish an app's own event (on the stream and the poll with `source` "
                    "and `data`)", _ref("Published"), 404, body="EventBody", status=202),
            },
            "/events/stream": {"get": _operation(
                "Live lifecycle events (Server-Sent Events)", SSE_SCHEMA,
                media="text/event-stream", parameters=STREAM_PARAMS)},
            "/apps/{name}/message": _app_path(post=_operation(
                "Post a message to the app's inbox; `launch` starts a stopped receiver",
                _ref("Delivery"), 404, body="MessageBody", status=202)),
            "/apps/{name}/messages": _app_path(get=_stream_or_poll(
                f"The app's inbox (its last {INBOX_SIZE} messages, kept across its restarts): "
                "a live stream, or with poll=true a JSON array")),
            "/apps/{name}/services": _app_path(
                get=_operation("What the app offers, and what of it is live",
                               _ref("Offers"), 404),
                put=_operation("Replace what the app offers (live at once if it runs)",
                               _ref("Offers"), 404, 409, body="ServicesBody"),
            ),
            "/services": {"get": _operation(
                "The live services", {"type": "array", "items": _ref("ServiceRecord")},
                parameters=[SERVICE_TYPE])},
            "/services/resolve": {"get": _operation(
                "One live service by name", _ref("ServiceRecord"), 404, parameters=[
                    {**_query("name", {"type": "string", "minLength": 1},
                              "the service's name (case-insensitive)"), "required": True}])},
            "/services/browse": {"get": _operation(
                "Live services of a type as they come and go (Server-Sent Events)",
                BROWSE_SSE, media="text/event-stream", parameters=[
                    SERVICE_TYPE,
                    _query("idle_for", {"type": "number", "minimum": 0,
                                        "maximum": MAX_IDLE_S},
                           f"close after this many seconds without a change (absent: "
                           f"{BROWSE_IDLE_S:g}; 0: never)")])},
            "/reload": {"post": _reload()},
            "/trigger": {"post": _operation(
                "Launch the app on a chord, or press the leader key",
                {"anyOf": [_ref("Launch"), _ref("Ok")]}, 404, 409, body="TriggerBody")},
            "/hotkeys": {"get": _operation("Hotkey status", _ref("Hotkeys"))},
            "/hotkeys/pause": {"post": _operation(
                "Release every key grab and ignore the leader", _ref("Hotkeys"), body="Empty")},
            "/hotkeys/resume": {"post": _operation(
                "Grab and listen again", _ref("Hotkeys"), body="Empty")},
        },
        "components": {"schemas": SCHEMAS},
    }
