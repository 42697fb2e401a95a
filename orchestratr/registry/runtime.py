"""Apps registered through the API while the daemon runs (``POST /apps``).

They are kept in ``registered.json`` in the config dir, so they outlive a reload and a daemon
restart, and are merged after the config files. The files own their names and chords: a
registration that a later edit of config.yml or apps.d/ clashes with is shadowed (left out,
with a warning) but kept, and it comes back once the clash is gone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from orchestratr.convert import converter
from orchestratr.errors import ConfigError, ConflictError, StorageError, UnknownAppError, clip
from orchestratr.paths import move_aside, write_atomically
from orchestratr.registry.load import first_clash, read_text, structure_app
from orchestratr.registry.model import AppSpec, Registry

SOURCE = "api"
LABEL = "registered.json"


class RuntimeApps:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._specs: list[AppSpec] = []

    def load(self) -> list[str]:
        """Read the file; return the problems of the entries left out (a hand-edited file).
        A file that is not a JSON list at all is moved aside as ``registered.json.corrupt-*``
        (and said so): the daemon starts without it."""
        try:
            raw = json.loads(read_text(self._path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            return [f"{LABEL}: cannot read: {exc.strerror or exc}"]
        except (ValueError, RecursionError) as exc:  # RecursionError: 100,000 nested "["
            return [self._move_aside(f"not valid JSON ({clip(str(exc), 200)})")]
        if not isinstance(raw, list):
            return [self._move_aside(f"expected a list of apps, got {type(raw).__name__}")]
        errors: list[str] = []
        for index, entry in enumerate(raw):
            spec = structure_app(entry, SOURCE, f"{LABEL}: [{index}]", errors, [])
            if spec is not None and first_clash(spec, self._specs) is None:
                self._specs.append(spec)
        return errors

    def _move_aside(self, why: str) -> str:
        try:
            moved = move_aside(self._path)
        except OSError as exc:
            return f"{LABEL}: {why}; it could not be moved aside ({exc.strerror or exc})"
        return f"{LABEL}: {why}; moved aside to {moved.name}, starting without it"

    def merge(self, files: Registry) -> Registry:
        """``files`` plus every registration that does not clash with them."""
        kept, warnings = [], list(files.warnings)
        for spec in self._specs:
            clash = first_clash(spec, list(files.apps))
            if clash is None:
                kept.append(spec)
            else:
                what, value = clash
                warnings.append(f"{LABEL} ({spec.name}): {what} {value!r} is now in the config "
                                "files, which win; the registration is kept but not active")
        return attrs.evolve(files, apps=files.apps + tuple(kept), warnings=tuple(warnings))

    def add(self, fields: Any, current: Registry) -> tuple[AppSpec, list[str]]:
        """Validate a registration against ``current`` and keep it; return it and its warnings.

        Raises:
            ConfigError: the fields are invalid (every problem is listed).
            ConflictError: its name or chord is taken.
        """
        errors: list[str] = []
        warnings: list[str] = []
        spec = structure_app(fields, SOURCE, "app", errors, warnings)
        if spec is None:
            raise ConfigError(errors, warnings)
        for other in current.apps:
            clash = first_clash(spec, [other])
            if clash is not None:
                what, value = clash
                raise ConflictError(f"{what} {value!r} is taken by app {other.name!r} "
                                    f"({other.declared_in})")
        if any(kept.name == spec.name for kept in self._specs):  # shadowed, but registered
            raise ConflictError(f"app {spec.name!r} is already registered (shadowed by the "
                                "config files for now); unregister it first")
        self._save([*self._specs, spec])
        self._specs.append(spec)
        return spec, warnings

    def remove(self, name: str, current: Registry) -> AppSpec:
        """Forget a registration, also one a config file's app of its name shadows (the
        file's app stays).

        Raises:
            UnknownAppError: no app has that name.
            ConflictError: the app belongs to a config file, not to the API.
        """
        spec = next((s for s in self._specs if s.name == name), None)
        if spec is None:
            active = current.get(name)
            if active is not None:
                raise ConflictError(f"app {name!r} comes from {active.declared_in}; remove it "
                                    "from that file instead")
            raise UnknownAppError(f"app {name!r} not found")
        kept = [s for s in self._specs if s.name != name]
        self._save(kept)
        self._specs = kept
        return spec

    def _save(self, specs: list[AppSpec]) -> None:
        """Write ``specs`` to the file; nothing changes in memory unless this succeeds.

        Raises:
            StorageError: the config dir cannot be written (read-only, full).
        """
        entries = [converter.unstructure(spec) for spec in specs]
        for entry in entries:
            del entry["source"]  # set again on load: registered.json holds only API apps
        try:
            write_atomically(self._path, json.dumps(entries, indent=1) + "\n")
        except OSError as exc:
            raise StorageError(f"cannot save {self._path}: {exc.strerror or exc}; nothing "
                               "was changed") from None
