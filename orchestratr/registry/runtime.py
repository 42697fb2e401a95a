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
from orchestratr.errors import ConfigError, ConflictError, UnknownAppError
from orchestratr.paths import write_atomically
from orchestratr.registry.load import first_clash, structure_app
from orchestratr.registry.model import AppSpec, Registry

SOURCE = "api"
LABEL = "registered.json"


class RuntimeApps:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._specs: list[AppSpec] = []

    def load(self) -> list[str]:
        """Read the file; return the problems of the entries left out (a hand-edited file)."""
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            return [f"{LABEL}: cannot read: {exc}"]
        if not isinstance(raw, list):
            return [f"{LABEL}: expected a list of apps, got {type(raw).__name__}"]
        errors: list[str] = []
        for index, entry in enumerate(raw):
            spec = structure_app(entry, SOURCE, f"{LABEL}: [{index}]", errors, [])
            if spec is not None and first_clash(spec, self._specs) is None:
                self._specs.append(spec)
        return errors

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
        self._specs.append(spec)
        self._save()
        return spec, warnings

    def remove(self, name: str, current: Registry) -> AppSpec:
        """Forget a registration.

        Raises:
            UnknownAppError: no app has that name.
            ConflictError: the app belongs to a config file, not to the API.
        """
        active = current.get(name)
        if active is not None and active.declared_in != SOURCE:
            raise ConflictError(f"app {name!r} comes from {active.declared_in}; remove it from "
                                "that file instead")
        spec = next((s for s in self._specs if s.name == name), None)
        if spec is None:
            raise UnknownAppError(f"app {name!r} not found")
        self._specs.remove(spec)
        self._save()
        return spec

    def _save(self) -> None:
        entries = [converter.unstructure(spec) for spec in self._specs]
        for entry in entries:
            del entry["source"]  # set again on load: registered.json holds only API apps
        write_atomically(self._path, json.dumps(entries, indent=1) + "\n")
