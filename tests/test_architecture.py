"""The layer rules, read from the imports (an ``ast`` scan) and the string literals of the code.

The supervisor is the core and imports no adapter; ``api/``, ``hotkeys/`` and ``processes/``
are thin adapters that do not import each other; each third-party library stays in its room;
the client and the CLI reach the daemon only over HTTP; state names are spelled in one module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from orchestratr.supervisor.states import AppState

PACKAGE = Path(__file__).resolve().parent.parent / "orchestratr"
MODULES = sorted(PACKAGE.rglob("*.py"))
IDS = [str(p.relative_to(PACKAGE)) for p in MODULES]

# module prefix -> the only places allowed to import it
ALLOWED = {
    "pynput": ("hotkeys/x11/",),
    "Xlib": ("hotkeys/x11/",),
    "psutil": ("processes/",),
    "http.server": ("api/server.py",),
    "transitions": ("supervisor/machine.py",),
    "yaml": ("registry/load.py",),
    "cattrs": ("convert.py", "registry/load.py", "api/errors.py"),
    "watchdog": ("registry/watch.py",),
    "jeepney": ("desktop/notifications.py",),
    "textual": ("cli/top.py",),  # only `orchestratr top` loads it
    "rich": ("cli/top.py",),  # Textual's own renderer; nothing else may load it
}
ADAPTERS = ("orchestratr.api", "orchestratr.hotkeys", "orchestratr.processes",
            "orchestratr.desktop")
CORE_MAY_NOT_IMPORT = (*ADAPTERS, "orchestratr.daemon", "orchestratr.registry.load",
                       "orchestratr.registry.watch", "orchestratr.registry.runtime",
                       "orchestratr.cli", "subprocess", "http", "socket", "psutil")
# What the CLI's client verbs may use of the package: the client, and vocabulary modules that
# load no daemon machinery (state names, the manifest's fields).
CLI_MAY_IMPORT = ("orchestratr.cli", "orchestratr.client", "orchestratr.supervisor.states",
                  "orchestratr.registry.model", "orchestratr.paths", "orchestratr.errors",
                  "orchestratr.applog",  # the log limits (standard library only)
                  "orchestratr.supervisor.bus")  # the event type names, for completion
# Verbs that work without a daemon, by running it or by using its own loaders.
CLI_STANDALONE = ("cli/daemon_verb.py", "cli/doctor.py")
# String literals equal to a state name that are not states, each with why.
NOT_A_STATE = {
    ("client.py", "launched"): "the POST /apps/{name}/launched endpoint",
    ("client.py", "ready"): "the POST /apps/{name}/ready endpoint",
    ("client.py", "stopped"): "the POST /apps/{name}/stopped endpoint",
    ("api/wire.py", "launched"): "a key of the Go orchestratr's /state answer",
    ("api/wire.py", "ready"): "a key of the Go orchestratr's /state answer",
    ("cli/doctor.py", "failed"): "the count of failed checks",
    ("cli/messaging.py", "launched"): "the key of a message's answer: its receiver was launched",
    ("cli/pipe.py", "launched"): "the pipe's answer to a launch request",
    ("cli/pipe.py", "ready"): "the pipe's request (and answer) that says an app is ready",
    ("cli/pipe.py", "stopped"): "the pipe's answer to a stop request",
    ("cli/verbs.py", "launched"): "the verb in 'launched notes (pid 4242)'",
}
STATE_NAMES_LIVE_IN = ("supervisor/states.py", "api/openapi.py")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_third_party_imports_stay_in_their_room(path: Path) -> None:
    rel = _rel(path)
    for name in imports(path):
        for prefix, places in ALLOWED.items():
            if _under(name, (prefix,)):
                assert rel.startswith(places), f"{rel} imports {name}; only {places} may"


def test_the_core_imports_no_adapter() -> None:
    for path in (PACKAGE / "supervisor").rglob("*.py"):
        for name in imports(path):
            assert not _under(name, CORE_MAY_NOT_IMPORT), f"{path.name} imports {name}"


@pytest.mark.parametrize("package", ["api", "hotkeys", "processes"])
def test_adapters_do_not_import_each_other(package: str) -> None:
    others = tuple(a for a in ADAPTERS if a != f"orchestratr.{package}")
    for path in (PACKAGE / package).rglob("*.py"):
        for name in imports(path):
            assert not _under(name, others), f"{_rel(path)} imports {name}"


def test_the_registry_knows_no_keys_and_no_core() -> None:
    for path in (PACKAGE / "registry").rglob("*.py"):
        for name in imports(path):
            assert not _under(name, (*ADAPTERS, "orchestratr.supervisor")), (
                f"{_rel(path)} imports {name}")


def test_the_converter_knows_no_model() -> None:
    """The registry imports the converter, so the converter imports no registry (no cycle)."""
    for name in imports(PACKAGE / "convert.py"):
        assert not _under(name, ("orchestratr.registry", *ADAPTERS)), name


def test_structlog_is_configured_in_one_place() -> None:
    configured = [p for p in MODULES if "structlog.configure(" in p.read_text()]
    assert [_rel(p) for p in configured] == ["logs.py"]


def test_client_is_standard_library_only() -> None:
    """Apps vendor client.py as one file: it may import nothing but the standard library."""
    roots = {name.split(".")[0] for name in imports(PACKAGE / "client.py")}
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots


def test_the_cli_reaches_the_daemon_only_through_the_client() -> None:
    for path in (PACKAGE / "cli").rglob("*.py"):
        if _rel(path) in CLI_STANDALONE:
            continue
        for name in imports(path):
            if _under(name, ("orchestratr",)) and name != "orchestratr":
                assert _under(name, CLI_MAY_IMPORT), f"{_rel(path)} imports {name}"


def test_vocabulary_modules_are_standard_library_only() -> None:
    """The CLI imports these: they must not drag in the daemon's libraries."""
    roots = {name.split(".")[0] for name in imports(PACKAGE / "supervisor" / "states.py")}
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_state_names_are_spelled_in_one_module(path: Path) -> None:
    """Adding or renaming a state is an edit of states.py: nobody else spells one."""
    rel = _rel(path)
    if rel in STATE_NAMES_LIVE_IN:
        return
    names = {state.value for state in AppState}
    spelled = {node.value for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and node.value in names}
    assert spelled <= {name for where, name in NOT_A_STATE if where == rel}, (
        f"{rel} spells state names {sorted(spelled)}; import them from supervisor/states.py")


def _state_members(node: ast.AST) -> int:
    """How many ``AppState.<name>`` (or ``S.<name>``) references a literal holds."""
    return sum(isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name)
               and item.value.id in ("AppState", "S") for item in getattr(node, "elts", []))


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_state_groups_are_named_in_one_module(path: Path) -> None:
    """A tuple, list or set of two or more states is a group: it gets a name in states.py."""
    if _rel(path) == "supervisor/states.py":
        return
    literals = [node for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and _state_members(node) > 1]
    assert not literals, (f"{_rel(path)}:{literals[0].lineno} spells a group of states; "
                          "name it in supervisor/states.py")


def test_descriptors_are_waited_on_through_poll() -> None:
    """select.select refuses descriptors past 1,024, which a daemon running 1,000 apps holds;
    every wait goes through ``fds.readable``."""
    waiting = [_rel(p) for p in MODULES if "select.select(" in p.read_text()]
    assert waiting == [], waiting


# Threads started without ``threads.supervised``, each with why its death is not silent.
UNSUPERVISED_THREADS = {
    "threads.py": "the supervisor of threads itself",
    "supervisor/core.py": "autostart workers: they end with the start-up; each launch is guarded",
    "api/dispatch.py": "request workers: each job is guarded (http_worker_error)",
    "api/server.py": "one per event stream, ending with it; its errors end that stream only",
    "hotkeys/x11/display.py": "the display probe: bounded in time, its answer or its timeout",
    "hotkeys/x11/grab.py": "the grab: its failure is logged and the service grabs again",
    "cli/pipe.py": "the CLI's, not the daemon's", "cli/logs.py": "the CLI's, not the daemon's",
    "cli/daemon_verb.py": "prints the daemon's start once, then ends",
}


def test_long_lived_threads_run_supervised() -> None:
    """No thread dies silently (issue 11): the lease clock and the API's dispatcher once
    did, as plain threads."""
    plain = {_rel(p) for p in MODULES if "threading.Thread(" in p.read_text()}
    assert plain - set(UNSUPERVISED_THREADS) == set()
