"""Import boundaries: the supervisor core knows nothing of HTTP, keys or the OS's processes;
the adapters (api, hotkeys, processes) know nothing of each other; X11 stays in its room."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "orchestratr"

# module prefix -> the only places allowed to import it
ALLOWED = {
    "pynput": ("hotkeys/x11/",),
    "Xlib": ("hotkeys/x11/", "desktop/"),
    "jeepney": ("desktop/",),
    "psutil": ("processes/",),
    "http.server": ("api/server.py",),
    "transitions": ("supervisor/",),
    "yaml": ("registry/load.py",),
    "cattrs": ("convert.py", "registry/load.py", "api/errors.py"),
    "watchdog": ("registry/watch.py",),
}
SUPERVISOR_MAY_NOT_IMPORT = ("orchestratr.api", "orchestratr.hotkeys", "orchestratr.processes",
                             "orchestratr.desktop",
                             "orchestratr.daemon", "orchestratr.registry.load",
                             "orchestratr.registry.watch", "subprocess")

ADAPTERS = ("api", "hotkeys", "processes")  # thin layers over the core: none imports another


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_third_party_imports_stay_in_their_room(path: Path) -> None:
    rel = str(path.relative_to(PACKAGE))
    for name in imports(path):
        for prefix, places in ALLOWED.items():
            if name == prefix or name.startswith(prefix + "."):
                assert rel.startswith(places), f"{rel} imports {name}; only {places} may"


def test_supervisor_depends_only_inward() -> None:
    for path in (PACKAGE / "supervisor").rglob("*.py"):
        for name in imports(path):
            assert not name.startswith(SUPERVISOR_MAY_NOT_IMPORT), f"{path.name} imports {name}"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_do_not_import_each_other(adapter: str) -> None:
    others = tuple(f"orchestratr.{other}" for other in ADAPTERS if other != adapter)
    for path in (PACKAGE / adapter).rglob("*.py"):
        for name in imports(path):
            assert not name.startswith(others), f"{adapter}/{path.name} imports {name}"


def test_the_registry_and_the_converter_import_no_hotkeys() -> None:
    """Config validation owns the key grammar (registry/keys.py); hotkeys read it from there."""
    for path in [*(PACKAGE / "registry").rglob("*.py"), PACKAGE / "convert.py"]:
        for name in imports(path):
            assert not name.startswith("orchestratr.hotkeys"), f"{path.name} imports {name}"


def test_structlog_is_configured_in_one_place() -> None:
    configured = [p for p in MODULES if "structlog.configure(" in p.read_text()]
    assert [p.relative_to(PACKAGE).as_posix() for p in configured] == ["logs.py"]


def test_client_is_standard_library_only() -> None:
    """Apps vendor client.py as one file: it may import nothing but the standard library."""
    import sys

    roots = {name.split(".")[0] for name in imports(PACKAGE / "client.py")}
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots
