"""config.yml + apps.d/*.yml -> one validated ``Registry``, or a ``ConfigError`` listing everything.

Rules (see the README's "Configuration" section):

* config.yml is authoritative: any problem in it fails the whole load, and the caller keeps its
  last good registry. At start-up there is none: ``load_without_config`` then gives the
  default settings and the apps.d files alone.
* Each apps.d file is one app. A broken file is skipped (reported in ``Registry.skipped``) and
  never blocks the others; a file that loaded before keeps its last good app until it is
  fixed or deleted (bad input loses nothing: the app stays launchable). A drop-in that
  clashes with config.yml on name or chord loses, with a warning naming both. Drop-ins that
  clash with each other are all rejected.
* Unknown fields are warnings that name the closest known field.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml

from orchestratr.convert import MAX_SHOWN, converter, describe_errors
from orchestratr.errors import ConfigError, clip
from orchestratr.paths import Paths
from orchestratr.registry.model import (
    APP_FIELDS,
    SETTINGS_FIELDS,
    AppSpec,
    Registry,
    Settings,
    name_key,
)
from orchestratr.registry.validate import (
    app_warnings,
    check_app,
    check_settings,
    go_defaults,
    unknown_fields,
)

DEFAULT_CONFIG = """\
# orchestratr configuration. Edits are applied within a second; an invalid edit is
# reported in the log and the previous configuration stays active.
# Apps may also be declared one per file in apps.d/*.yml (same fields as an entry below).

leader_key: ctrl+space      # press this, then an app's chord
chord_timeout_ms: 2000      # how long the leader waits for the chord
api_port: 9876              # localhost HTTP API (a free port is used if taken)
log_level: info             # debug, info, warning, error
stop_apps_on_exit: false    # true: stop every app when the daemon exits

apps: []
# apps:
#   - name: terminal                  # lowercase letters, digits, . _ -
#     chord: t                        # one character, or f1..f12, tab, home, ...
#     command: x-terminal-emulator    # run through your shell
#     description: a terminal
#     ready_cmd: null                 # a command that exits 0 once the app is ready
#     ready_timeout_ms: 5000
#     restart: never                  # never, on-failure, always
#     restart_delay_ms: 100
#     autostart: false
#     stop_timeout_ms: 5000           # SIGTERM, then SIGKILL after this long
#     detached: false                 # fire and forget: not tracked
#     cwd: ~
#     env: {}
"""

APP_SUFFIXES = (".yml", ".yaml")


@attrs.define
class _Candidate:
    """A drop-in that loaded on its own and still has to survive the merge."""

    file: str
    spec: AppSpec


def ensure_config(paths: Paths) -> bool:
    """Create the config dir, a commented config.yml and apps.d/ if missing. True if created."""
    paths.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.apps_dir.mkdir(mode=0o700, exist_ok=True)
    if paths.config_file.exists():
        return False
    paths.config_file.write_text(DEFAULT_CONFIG, encoding="utf-8")
    return True


def load_registry(paths: Paths, previous: Registry | None = None) -> Registry:
    """Read and validate everything. Raises ConfigError when config.yml itself is invalid.

    ``previous`` is the registry the files gave last time: an apps.d file that was in it and
    is broken now keeps its app from there.
    """
    errors: list[str] = []
    warnings: list[str] = []
    raw = _read_yaml(paths.config_file, "config.yml", errors)
    settings, config_apps = _load_config(raw, errors, warnings)
    if errors:
        raise ConfigError(errors, warnings)
    return _with_drop_ins(paths, settings, config_apps, warnings, previous)


def load_without_config(paths: Paths) -> Registry:
    """The registry to start with when config.yml is invalid and nothing was loaded before:
    default settings and the apps.d files, so one typo does not take every app away."""
    return _with_drop_ins(paths, Settings(), [], [], None)


def _with_drop_ins(
    paths: Paths,
    settings: Settings,
    config_apps: list[AppSpec],
    warnings: list[str],
    previous: Registry | None,
) -> Registry:
    skipped: list[str] = []
    drop_ins = _load_drop_ins(paths.apps_dir, skipped, warnings, previous)
    apps = config_apps + _merge(config_apps, drop_ins, skipped, warnings)
    return Registry(
        settings=settings, apps=tuple(apps), warnings=tuple(warnings), skipped=tuple(skipped)
    )


def app_files(apps_dir: Path) -> list[Path]:
    """The drop-in manifests, in the order they are merged."""
    try:
        entries = sorted(os.scandir(apps_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.name.lower().endswith(APP_SUFFIXES) and not e.name.startswith(".") and e.is_file()
    ]


def _read_yaml(path: Path, label: str, errors: list[str]) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        errors.append(f"{label}: file not found")
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{label}: cannot read: {exc}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(f"{label}: invalid YAML{where}: {problem}")
    return None


def _load_config(
    raw: Any, errors: list[str], warnings: list[str]
) -> tuple[Settings, list[AppSpec]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append("config.yml: expected a mapping of settings, got " + type(raw).__name__)
        return Settings(), []
    warnings += [f"config.yml: {f}: {m}" for f, m in unknown_fields(raw, SETTINGS_FIELDS)]
    settings = _structure_settings({k: v for k, v in raw.items() if k != "apps"}, errors)
    entries = raw.get("apps") or []
    if not isinstance(entries, list):
        errors.append(f"config.yml: apps: expected a list of apps, got {type(entries).__name__}")
        return settings, []
    apps = []
    for index, entry in enumerate(entries):
        label = f"config.yml: apps[{index}]"
        spec = structure_app(entry, "config", label, errors, warnings)
        if spec is not None:
            apps.append(spec)
    errors += [f"config.yml: {m}" for m in _clashes(_keys(entries, "apps"))]
    return settings, apps


def _structure_settings(raw: dict[str, Any], errors: list[str]) -> Settings:
    try:
        settings = converter.structure(_drop_nulls(raw), Settings)
    except cattrs.BaseValidationError as exc:
        errors += [f"config.yml: {field}: {msg}" for field, msg in describe_errors(exc)]
        return Settings()
    errors += [f"config.yml: {field}: {msg}" for field, msg in check_settings(settings)]
    return settings


def structure_app(
    entry: Any, source: str, label: str, errors: list[str], warnings: list[str]
) -> AppSpec | None:
    """One app entry, or None with its problems appended to ``errors``."""
    if not isinstance(entry, dict):
        errors.append(f"{label}: expected a mapping of app fields, got {type(entry).__name__}")
        return None
    name = entry.get("name")
    where = f"{label} ({clip(name, MAX_SHOWN)})" if isinstance(name, str) and name else label
    notes = unknown_fields(entry, APP_FIELDS)
    fields, legacy = go_defaults({k: v for k, v in _drop_nulls(entry).items() if k in APP_FIELDS})
    problems = _type_problems(fields)
    bad = {field.partition(".")[0] for field, _ in problems}
    spec = _structure_or_none({**fields, "source": source}, bad)
    if spec is not None:
        problems += [(f, m) for f, m in check_app(spec) if f not in bad]
        notes += legacy + app_warnings(spec)
    warnings += [f"{where}: {field}: {msg}" for field, msg in notes]
    errors += [f"{where}: {field}: {msg}" for field, msg in problems]
    return None if problems else spec


# Stand-ins for missing or mistyped required fields, so the other fields still get checked.
_PLACEHOLDERS = {"name": "placeholder", "command": "true"}


def _type_problems(fields: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        converter.structure({**fields, "source": ""}, AppSpec)
    except cattrs.BaseValidationError as exc:
        return describe_errors(exc)
    return []


def _structure_or_none(fields: dict[str, Any], bad: set[str]) -> AppSpec | None:
    clean = {k: v for k, v in fields.items() if k not in bad}
    try:
        return converter.structure({**_PLACEHOLDERS, **clean}, AppSpec)
    except cattrs.BaseValidationError:
        return None


def _drop_nulls(raw: dict[str, Any]) -> dict[str, Any]:
    """``key:`` with no value means "use the default", as it did for the Go orchestratr."""
    return {k: v for k, v in raw.items() if v is not None}


def _load_drop_ins(
    apps_dir: Path, skipped: list[str], warnings: list[str], previous: Registry | None
) -> list[_Candidate]:
    candidates = []
    for path in app_files(apps_dir):
        label = f"apps.d/{path.name}"
        errors: list[str] = []
        raw = _read_yaml(path, label, errors)
        spec = None if errors else structure_app(raw, label, label, errors, warnings)
        last_good = None if spec or previous is None else _from_file(previous, label)
        if spec is not None:
            candidates.append(_Candidate(label, spec))
        elif last_good is not None:
            skipped += [f"{e} (its last good version stays active)" for e in errors]
            candidates.append(_Candidate(label, last_good))
        else:
            skipped += [f"{e} (file skipped)" for e in errors]
    return candidates


def _from_file(registry: Registry, label: str) -> AppSpec | None:
    return next((app for app in registry.apps if app.declared_in == label), None)


def _merge(
    config_apps: list[AppSpec],
    drop_ins: list[_Candidate],
    skipped: list[str],
    warnings: list[str],
) -> list[AppSpec]:
    """The drop-ins that survive: config.yml wins; drop-ins that clash with each other all lose."""
    survivors = []
    for cand in drop_ins:
        owner = first_clash(cand.spec, config_apps)
        if owner is None:
            survivors.append(cand)
        else:
            what, value = owner
            warnings.append(
                f"{cand.file} ({cand.spec.name}): {what} {value!r} is also in config.yml; "
                "config.yml wins and this file is ignored"
            )
    keys = [(c.file, c.spec.name, c.spec.chord) for c in survivors]
    losers = {where for _, _, group in _clash_groups(keys) for where, _, _ in group}
    skipped += _clashes(keys, suffix=" (files skipped)")
    return [c.spec for c in survivors if c.file not in losers]


def first_clash(spec: AppSpec, others: list[AppSpec]) -> tuple[str, str] | None:
    for other in others:
        if name_key(other.name) == name_key(spec.name):
            return ("name", spec.name)
        if spec.chord and other.chord and other.chord.casefold() == spec.chord.casefold():
            return ("chord", spec.chord)
    return None


_Key = tuple[str, str, str | None]  # where, name, chord


def _clash_groups(entries: list[_Key]) -> list[tuple[str, str, list[_Key]]]:
    """``(field, value, entries)`` for each name or chord (case-insensitive) held more than once."""
    by_key: dict[tuple[str, str], list[_Key]] = defaultdict(list)
    for entry in entries:
        _, name, chord = entry
        by_key[("name", name_key(name))].append(entry)
        if chord:
            by_key[("chord", chord.casefold())].append(entry)
    return [(field, value, group) for (field, value), group in by_key.items() if len(group) > 1]


def _clashes(entries: list[_Key], suffix: str = "") -> list[str]:
    return [
        f"duplicate {field} {value!r}: "
        + " and ".join(f"{where} ({name})" for where, name, _ in group)
        + suffix
        for field, value, group in _clash_groups(entries)
    ]


def _keys(entries: list[Any], label: str) -> list[_Key]:
    """Name and chord of every config.yml entry that has a usable name, valid or not."""
    return [
        (f"{label}[{i}]", e["name"], str(e["chord"]) if e.get("chord") is not None else None)
        for i, e in enumerate(entries)
        if isinstance(e, dict) and isinstance(e.get("name"), str)
    ]
