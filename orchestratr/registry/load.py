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
* Bad files never stop the daemon: only regular files are read (a FIFO or a directory named
  ``*.yml`` is reported and skipped, never opened for a blocking read), a file is at most
  MAX_FILE_BYTES, YAML may nest at most MAX_DEPTH deep and use at most MAX_ALIASES aliases
  (a "billion laughs" file stays small), and any failure of a drop-in, of whatever kind, is
  that file's alone.
"""

from __future__ import annotations

import errno
import os
import stat
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
    service_key,
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
chord_hint_ms: 0            # show the chord table this long after the leader (0: on ? only)
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
MAX_FILE_BYTES = 1024 * 1024  # a config file larger than this is refused, not parsed
MAX_DEPTH = 50  # YAML nesting; a manifest needs 3 or 4 levels
MAX_ALIASES = 20  # YAML aliases (*name) per file; each may double what a reader walks


if yaml.__with_libyaml__:
    from yaml._yaml import CParser as _Parser  # libyaml: 1,000 apps parse in 80 ms, not 500
else:  # pragma: no cover - PyYAML built without libyaml

    class _Parser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _BoundedLoader(
    yaml.composer.Composer, _Parser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
):
    """PyYAML's safe loader with limits: its composer recurses per level of nesting (1000
    levels raised RecursionError and killed start-up), and aliases share one object that any
    walk over the result expands (a 0.5 KB file held the reload lock for 20 s). The events
    come from libyaml's parser when PyYAML has it; the composer is Python's, which checks."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._aliases = 0

    def _mark(self) -> Any:
        return getattr(self.peek_event(), "start_mark", None)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases", self._mark())
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} deep", self._mark())
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@attrs.define
class _Candidate:
    """A drop-in that loaded on its own and still has to survive the merge."""

    file: str
    spec: AppSpec


def ensure_config(paths: Paths) -> bool:
    """Create the config dir, a commented config.yml and apps.d/ if missing. True if created.
    (An ``apps.d`` that is not a directory is the loader's to report.)"""
    paths.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.path.lexists(paths.apps_dir):
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
    try:
        drop_ins = _load_drop_ins(paths.apps_dir, skipped, warnings, previous)
    except Exception as exc:  # noqa: BLE001 - bad drop-ins never stop a reload
        skipped.append(f"apps.d: cannot be loaded: {type(exc).__name__}: {exc}")
        drop_ins = []
    apps = config_apps + _merge(config_apps, drop_ins, skipped, warnings)
    return Registry(
        settings=settings, apps=tuple(apps), warnings=tuple(warnings), skipped=tuple(skipped)
    )


def app_files(apps_dir: Path, problems: list[str] | None = None) -> list[Path]:
    """The drop-in manifests, in the order they are merged: every entry named ``*.yml`` or
    ``*.yaml``, whatever it is (reading one that is no regular file reports it). Why the
    directory cannot be listed goes to ``problems``."""
    try:
        names = sorted(os.listdir(apps_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        what = "is not a directory" if isinstance(exc, NotADirectoryError) else \
            f"cannot be read: {exc.strerror or exc}"
        if problems is not None:
            problems.append(f"apps.d: {what}; no drop-in is loaded (apps.d/ should be a "
                            "directory of *.yml files)")
        return []
    return [apps_dir / name for name in names
            if name.lower().endswith(APP_SUFFIXES) and not name.startswith(".")]


def read_text(path: Path) -> str:
    """A config file's text: a regular file (a FIFO would block the reader for ever), at most
    MAX_FILE_BYTES.

    Raises:
        OSError: it cannot be read, or is not a regular file, or is too large (the message
            says which); UnicodeDecodeError: it is not UTF-8.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device or socket")
            raise OSError(f"not a regular file ({kind}); only regular files are read")
        raw = handle.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES // 1024} KiB; not read")
    return raw.decode("utf-8")


def _read_yaml(path: Path, label: str, errors: list[str]) -> Any:
    try:
        loader = _BoundedLoader(read_text(path))
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        errors.append(f"{label}: file not found")
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            why = "a symbolic link loop"
        errors.append(f"{label}: cannot read: {why}")
    except UnicodeDecodeError as exc:
        errors.append(f"{label}: cannot read: not UTF-8 ({exc.reason} at byte {exc.start})")
    except RecursionError:
        errors.append(f"{label}: invalid YAML: nested too deep")
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
    errors += [f"config.yml: {m}" for m in _service_clashes(apps)]
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
    for path in app_files(apps_dir, skipped):
        label = f"apps.d/{path.name}"
        errors: list[str] = []
        try:
            raw = _read_yaml(path, label, errors)
            spec = None if errors else structure_app(raw, label, label, errors, warnings)
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong is this file's alone
            errors.append(f"{label}: cannot be loaded: {type(exc).__name__}: "
                          f"{clip(str(exc), 200)}")
            spec = None
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
        taken = {service_key(s.name) for s in other.services}
        service = next((s.name for s in spec.services if service_key(s.name) in taken), None)
        if service is not None:
            return ("service", service)
    return None


def _service_clashes(apps: list[AppSpec]) -> list[str]:
    """config.yml's apps offering a service name another of them offers too."""
    owners: dict[str, list[str]] = defaultdict(list)
    for app in apps:
        for service in app.services:
            owners[service_key(service.name)].append(app.name)
    return [f"duplicate service name {key!r}: apps {' and '.join(names)}"
            for key, names in owners.items() if len(names) > 1]


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
