"""Services in manifests: validated with the rest of an app, unique across apps."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestratr.errors import ConfigError
from orchestratr.registry.load import load_registry
from orchestratr.registry.model import ServiceSpec
from tests.unit.registry.test_load import setup


def test_a_manifest_declares_services(tmp_path: Path) -> None:
    registry = load_registry(setup(tmp_path, """\
        apps:
          - name: notes
            command: x
            services: [{name: notes-api, type: _http._tcp, port: 8080, txt: {version: 1}}]
        """))
    assert registry.apps[0].services == (ServiceSpec("notes-api", "_http._tcp", 8080,
                                                     {"version": "1"}),)


@pytest.mark.parametrize(("service", "fragment"), [
    ("{name: a, type: _http._tcp, port: 0}", "services[0].port: 0 is not a port"),
    ("{name: a, type: http, port: 80}", "services[0].type: 'http' must look like _http._tcp"),
    ("{name: a, type: _http._tcp}", "services[0].port: required field missing"),
    ("{name: '', type: _http._tcp, port: 80}", "services[0].name"),
])
def test_invalid_services_are_config_errors(tmp_path: Path, service: str,
                                            fragment: str) -> None:
    paths = setup(tmp_path, f"apps:\n  - name: a\n    command: x\n    services: [{service}]\n")
    with pytest.raises(ConfigError) as info:
        load_registry(paths)
    assert any(fragment in e for e in info.value.errors), info.value.errors


def test_a_service_name_is_one_apps(tmp_path: Path) -> None:
    paths = setup(tmp_path, """\
        apps:
          - {name: a, command: x, services: [{name: API, type: _http._tcp, port: 1}]}
          - {name: b, command: x, services: [{name: api, type: _http._tcp, port: 2}]}
        """)
    with pytest.raises(ConfigError) as info:
        load_registry(paths)
    assert "config.yml: duplicate service name 'api': apps a and b" in info.value.errors


def test_a_drop_in_taking_a_config_service_name_loses(tmp_path: Path) -> None:
    registry = load_registry(setup(
        tmp_path, "apps:\n  - {name: a, command: x, services: [{name: api, type: _x._tcp, "
                  "port: 1}]}\n",
        **{"b.yml": "name: b\ncommand: x\nservices: [{name: API, type: _x._tcp, port: 2}]\n"}))
    assert [a.name for a in registry.apps] == ["a"]
    assert any("service 'API' is also in config.yml" in w for w in registry.warnings)
