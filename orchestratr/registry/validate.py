"""Rules an app spec must follow beyond its types.

Each check returns ``(field, message)`` pairs so the loader can say which file, app and field
a problem is in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from orchestratr.convert import field_keys
from orchestratr.errors import quoted
from orchestratr.registry.keys import DEAD_CHORDS, KEY_NAMES, RESERVED_CHORDS, parse_leader
from orchestratr.registry.model import AppSpec, ServiceSpec, Settings, WindowMatch, service_key

MAX_NAME = 128
# Any name the Go orchestratr took, but what a URL path segment, a file name or a log line
# cannot carry: a slash or backslash, a control character, space around it, "." or "..".
# The same text is the OpenAPI document's pattern, so it stays valid in ECMA regexes too.
NAME_PATTERN = re.compile(
    r"^(?!\s)(?!\.{1,2}$)[^/\\\x00-\x1f\x7f-\x9f]{1,"
    + str(MAX_NAME) + r"}(?<!\s)$")
DEFAULT_READY_TIMEOUT_MS = AppSpec("", "").ready_timeout_ms
# A service: a DNS-SD instance name (one label: at most 63 characters, nothing a log line or a
# TXT record cannot carry), a DNS-SD type (``_http._tcp``), a TCP or UDP port.
MAX_SERVICE_NAME = 63
SERVICE_NAME_PATTERN = re.compile(
    r"^(?!\s)[^\x00-\x1f\x7f-\x9f]{1," + str(MAX_SERVICE_NAME) + r"}(?<!\s)$")
SERVICE_TYPE_PATTERN = re.compile(r"^_[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\._(?:tcp|udp)$")
MIN_PORT, MAX_PORT = 1, 65535
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_LEASE_S = 86400.0  # a day; beyond that a lease says nothing
# Upper bounds of the millisecond fields: an hour is longer than any app should take to get
# ready, stop or be restarted, and far below what a timer can hold (stop_timeout_ms above
# 2**31-1 once killed the exit tracker).
MAX_MS = 3_600_000
MAX_CHORD_TIMEOUT_MS = 60_000  # a minute to press a chord after the leader

Problem = tuple[str, str]


def check_app(spec: AppSpec) -> list[Problem]:
    """Everything wrong with one app on its own (conflicts between apps are the loader's job)."""
    problems: list[Problem] = []
    if not NAME_PATTERN.fullmatch(spec.name):
        problems.append(("name", f"{quoted(spec.name)} must be 1 to {MAX_NAME} "
                                 "characters, without '/', '\\', control characters or space "
                                 "around it, and not '.' or '..'"))
    if not spec.command.strip():
        problems.append(("command", "must not be empty"))
    if spec.chord is not None:
        problems.extend(("chord", m) for m in _chord_problems(spec.chord))
    if not _valid_environment(spec.environment):
        problems.append(
            ("environment", f"{quoted(spec.environment)} must be native, wsl or wsl:<distro>")
        )
    for field in ("ready_timeout_ms", "restart_delay_ms", "stop_timeout_ms"):
        if getattr(spec, field) < 0:
            problems.append((field, "must not be negative"))
        elif getattr(spec, field) > MAX_MS:
            problems.append((field, f"must be at most {MAX_MS} (an hour)"))
    if spec.lease_secs is not None and not 0 < spec.lease_secs <= MAX_LEASE_S:
        problems.append(("lease_secs", f"must be more than 0 and at most {MAX_LEASE_S:g}"))
    if not 0 <= spec.grace_secs <= MAX_LEASE_S:
        problems.append(("grace_secs", f"must be from 0 to {MAX_LEASE_S:g}"))
    problems.extend(_unpassable(spec))
    if spec.window is not None:
        problems.extend(_window_problems(spec.window))
    problems.extend(service_problems(spec.services))
    return problems


def service_problems(services: Iterable[ServiceSpec], field: str = "services") -> list[Problem]:
    """Everything wrong with an app's list of services, each named by its place in the list
    (a name used twice in one list included; across apps, the loader and the registry of live
    services see to it)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, service in enumerate(services):
        where = f"{field}[{index}]"
        if not SERVICE_NAME_PATTERN.fullmatch(service.name):
            problems.append((f"{where}.name", f"{quoted(service.name)} must be 1 to "
                                              f"{MAX_SERVICE_NAME} characters, without control "
                                              "characters or space around it"))
        elif service_key(service.name) in seen:
            problems.append((f"{where}.name", f"{quoted(service.name)} is in the list "
                                              "twice"))
        seen.add(service_key(service.name))
        if not SERVICE_TYPE_PATTERN.fullmatch(service.type):
            problems.append((f"{where}.type", f"{quoted(service.type)} must look like "
                                              "_http._tcp (_name._tcp or _name._udp)"))
        if not MIN_PORT <= service.port <= MAX_PORT:
            problems.append((f"{where}.port", f"{service.port} is not a port "
                                              f"({MIN_PORT}-{MAX_PORT})"))
        for key, value in service.txt.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                problems.append((f"{where}.txt", f"key {quoted(key)}: keys must be "
                                                 "non-empty, without '=' or NUL, and values "
                                                 "without NUL"))
    return problems


def _window_problems(match: WindowMatch) -> list[Problem]:
    """Both regexes compile (Python's ``re``, searched case-insensitively); one is given."""
    problems: list[Problem] = []
    keys = field_keys(WindowMatch)
    given = 0
    for key, name in keys.items():
        pattern = getattr(match, name)
        if pattern is None:
            continue
        given += 1
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append((f"window.{key}", f"{quoted(pattern, 60)} is not a valid "
                                              f"regular expression: {exc}"))
    if not given:
        problems.append(("window", f"give {' and/or '.join(keys)} (regular expressions)"))
    return problems


def _unpassable(spec: AppSpec) -> list[Problem]:
    """Strings no process can be given: a NUL ends a C string, ``=`` ends a variable's name."""
    problems = [(field, "must not contain a NUL character")
                for field in ("command", "cwd", "ready_cmd")
                if "\0" in (getattr(spec, field) or "")]
    for name, value in spec.env.items():
        if "=" in name or not name:
            problems.append((f"env.{name[:40]}", "a variable name must be non-empty, without '='"))
        if "\0" in name or "\0" in value:
            problems.append((f"env.{name[:40]}", "must not contain a NUL character"))
    return problems


def app_warnings(spec: AppSpec) -> list[Problem]:
    """What is wrong with a valid app but did not stop the Go orchestratr from loading it."""
    dead = DEAD_CHORDS.get(spec.chord.casefold()) if spec.chord else None
    return [("chord", f"chord {quoted(spec.chord)}: {dead}")] if dead else []


def go_defaults(fields: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Values the Go orchestratr read as "the default", replaced by it, each with a warning.

    ``ready_timeout_ms: 0`` (or negative) meant 5000 ms there; taken literally it would time
    out at once (or reject the manifest).
    """
    timeout = fields.get("ready_timeout_ms")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout <= 0:
        note = (f"{timeout} means the default, {DEFAULT_READY_TIMEOUT_MS} ms "
                "(as it did for the Go orchestratr)")
        fields = {**fields, "ready_timeout_ms": DEFAULT_READY_TIMEOUT_MS}
        return fields, [("ready_timeout_ms", note)]
    return fields, []


def check_settings(settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    if not 0 <= settings.api_port <= 65535:
        problems.append(("api_port", f"{settings.api_port} is not a TCP port (0-65535)"))
    try:
        parse_leader(settings.leader_key)
    except ValueError as exc:
        problems.append(("leader_key", str(exc)))
    if not 0 < settings.chord_timeout_ms <= MAX_CHORD_TIMEOUT_MS:
        problems.append(("chord_timeout_ms", f"must be from 1 to {MAX_CHORD_TIMEOUT_MS}"))
    if not 0 <= settings.chord_hint_ms < settings.chord_timeout_ms:
        problems.append(("chord_hint_ms", f"must be from 0 (off) to less than chord_timeout_ms "
                                          f"({settings.chord_timeout_ms}): the window has "
                                          "closed by then"))
    if settings.log_level.lower() not in LOG_LEVELS:
        choices = ", ".join(LOG_LEVELS)
        problems.append(("log_level", f"{settings.log_level!r} must be one of {choices}"))
    return problems


def unknown_fields(keys: Iterable[str], known: frozenset[str]) -> list[Problem]:
    """Fields we do not know, each with the closest known one (newer manifests must still load)."""
    problems = []
    for key in sorted(set(keys) - known):
        import difflib  # only for a manifest with an unknown field: a rare, small cost

        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append((key, f"unknown field, ignored{hint}"))
    return problems


def _chord_problems(chord: str) -> list[str]:
    key = chord.casefold()
    if key in RESERVED_CHORDS:
        return [f"chord {quoted(chord)} is reserved"]
    if len(chord) == 1 or key in KEY_NAMES or key in DEAD_CHORDS:
        return []
    return [
        f"chord {quoted(chord)} is not one character or a known key name "
        f"({', '.join(sorted(KEY_NAMES, key=_key_order))})"
    ]


def _key_order(name: str) -> tuple[int, str]:
    return (0, f"{int(name[1:]):02d}") if re.fullmatch(r"f\d+", name) else (1, name)


def _valid_environment(env: str) -> bool:
    return env in ("native", "wsl") or (env.startswith("wsl:") and len(env) > 4)
