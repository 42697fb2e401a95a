"""``orchestratr doctor``: what is wrong, with the daemon up or down, in well under 5 s.

One line per check (PASS, WARN or FAIL and why), then a summary; exit 1 if anything FAILs.
It reads the same files the daemon reads, through the daemon's own loader, so a config that
doctor passes is one the daemon accepts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shlex
import shutil
import socket
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestratr import __version__
from orchestratr.cli.render import VERDICT_COLOURS, runnable
from orchestratr.client import Client, NotRunningError, OrchestratrClientError
from orchestratr.paths import Paths

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.registry.model import AppSpec, Registry

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
API_TIMEOUT_S = 1.0
PORT_TIMEOUT_S = 0.5  # a connection to loopback is answered at once, or never
DISPLAY_TIMEOUT_S = 2.0
# Words a command may start with that no PATH lookup can find: shell builtins and keywords.
SHELL_WORDS = frozenset(
    "! ( { [ [[ : . alias bg break case cd command continue eval exit export false fg for "
    "function if read readonly return set shift source test then time trap true ulimit umask "
    "unset until wait while echo printf".split())
PREFIX_WORDS = frozenset({"exec", "env", "nohup", "setsid"})
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, WARN or FAIL
    message: str


def run(ctx: Context) -> int:
    paths = Paths.resolve(ctx.config_dir)
    client = ctx.client(timeout=API_TIMEOUT_S)
    checks = list(diagnose(paths, client))
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, FAIL)}
    summary = (f"{len(checks)} checks: {counts[PASS]} passed, {counts[WARN]} warnings, "
               f"{counts[FAIL]} failed")
    data = {"checks": [asdict(c) for c in checks], "passed": counts[PASS],
            "warned": counts[WARN], "failed": counts[FAIL]}
    ctx.out.result(data, [*_lines(ctx, checks), summary])
    return 1 if counts[FAIL] else 0


def _lines(ctx: Context, checks: list[Check]) -> list[str]:
    width = max((len(c.name) for c in checks), default=0)
    return [f"{ctx.out.paint(c.status, VERDICT_COLOURS[c.status])}  {c.name:<{width}}  {c.message}"
            for c in checks]


def diagnose(paths: Paths, client: Client) -> Iterator[Check]:
    health = _health(client)
    yield from _daemon_checks(client, health)
    if isinstance(health, dict):
        yield from _service_checks(client)
    registry = yield from _config_checks(paths)
    registry = yield from _registered_checks(paths, registry)
    for app in registry.apps:
        yield _program_check(f"{app.name}: command", app.command, app)
        if app.ready_cmd:
            yield _program_check(f"{app.name}: ready_cmd", app.ready_cmd, app)
    yield _hotkey_check(client, isinstance(health, dict))
    yield _log_dir_check(paths.log_dir)


# ------------------------------------------------------------------ daemon and port file

def _health(client: Client) -> dict[str, Any] | Exception | None:
    """The /health answer, the error it failed with, or None when no daemon is there."""
    try:
        return client.health()
    except NotRunningError:
        return None
    except OrchestratrClientError as exc:
        return exc


def _daemon_checks(client: Client, health: dict[str, Any] | Exception | None) -> Iterator[Check]:
    pid = client.daemon_pid()
    if isinstance(health, dict):
        port = client.address()[1]
        version = health.get("version")
        text = f"running: pid {pid if pid is not None else '?'}, port {port}, version {version}"
        if version != __version__:
            yield Check("daemon", WARN, f"{text}, but this command is {__version__}: restart it")
        else:
            yield Check("daemon", PASS, f"{text}, API answers")
    elif isinstance(health, Exception):
        yield Check("daemon", FAIL,
                    f"the port file's port answers, but not as orchestratr: {health}")
    elif client.daemon_alive():
        yield Check("daemon", FAIL, f"pid {pid} holds {client.pid_file}, but its API does not "
                                    "answer; see its log, or restart it")
    else:
        start = runnable(f"daemon --config-dir {client.config_dir}")
        yield Check("daemon", WARN, f"not running; start it with {start} or {runnable('install')}")
    yield _port_file_check(client, isinstance(health, dict))


def _port_file_check(client: Client, answering: bool) -> Check:
    name = "port file"
    if client.url:
        return Check(name, PASS, f"not used: $ORCHESTRATR_URL is {client.url}")
    path = client.port_file
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        if answering:
            return Check(name, FAIL, f"{path} is missing while the daemon runs")
        return Check(name, PASS, f"{path} absent, as it should be while the daemon is down")
    except (OSError, UnicodeDecodeError) as exc:
        return Check(name, FAIL, f"cannot read {path}: {exc}")
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        return Check(name, FAIL, f"{path} holds {text.strip()[:20]!r}, not a port number")
    if not answering:
        return Check(name, WARN, f"{path} says port {int(text)}, but nothing answers there: "
                                 "left by a daemon that did not exit cleanly (harmless)")
    return Check(name, PASS, f"{path}: port {int(text)}")


# ------------------------------------------------------------------ services

def _service_checks(client: Client) -> Iterator[Check]:
    """Each live service: does anything listen on its port? An app that declares a service
    it does not serve sends everyone who resolves it to a dead port."""
    try:
        records = client.services()
    except OrchestratrClientError as exc:
        yield Check("services", FAIL, f"GET /services failed: {exc}")
        return
    for record in records:
        name = f"service {record['name']}"
        where = f"{record['host']}:{record['port']}"
        if _listening(record["host"], record["port"], record["type"].endswith("._udp")):
            yield Check(name, PASS, f"app {record['app']} listens on {where}")
        else:
            yield Check(name, WARN, f"nothing listens on {where}, which app {record['app']} "
                                    f"offers as {record['type']}")


def _listening(host: str, port: int, udp: bool) -> bool:
    """TCP: a connection is accepted. UDP (connectionless): the port is bound (we cannot
    bind it ourselves)."""
    if udp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                return exc.errno == errno.EADDRINUSE
            return False
    with contextlib.suppress(OSError), socket.create_connection((host, port), PORT_TIMEOUT_S):
        return True
    return False


# ------------------------------------------------------------------ configuration

def _config_checks(paths: Paths) -> Generator[Check, None, Registry]:
    """config.yml and every apps.d file; returns the registry the daemon would run, if any."""
    from orchestratr.errors import ConfigError
    from orchestratr.registry.load import app_files, load_registry, load_without_config

    if not paths.config_file.exists():
        yield Check("config.yml", WARN, f"{paths.config_file} does not exist; the daemon writes "
                                        "a commented default at its first start")
    try:
        registry = load_registry(paths)
    except ConfigError as exc:
        if paths.config_file.exists():
            yield from (Check("config.yml", FAIL, e.removeprefix("config.yml: "))
                        for e in exc.errors)
        yield from (Check("config.yml", WARN, w.removeprefix("config.yml: "))
                    for w in exc.warnings)
        registry = load_without_config(paths)  # each apps.d file still deserves a verdict
    else:
        yield from (Check("config.yml", WARN, w.removeprefix("config.yml: "))
                    for w in registry.warnings if w.startswith("config.yml"))
        valid = sum(a.declared_in == "config" for a in registry.apps)
        yield Check("config.yml", PASS, f"valid: {valid} apps")
    for path in app_files(paths.apps_dir):
        yield _drop_in_check(f"apps.d/{path.name}", registry)
    return registry


def _registered_checks(paths: Paths, files: Registry) -> Generator[Check, None, Registry]:
    """registered.json (apps added through the API), merged as the daemon merges it."""
    from orchestratr.registry.runtime import LABEL, RuntimeApps

    runtime = RuntimeApps(paths.registered_file)
    problems = runtime.load()
    yield from (Check(LABEL, FAIL, problem.removeprefix(f"{LABEL}: ")) for problem in problems)
    merged = runtime.merge(files)
    added = [app.name for app in merged.apps[len(files.apps):]]
    yield from (Check(LABEL, WARN, w.removeprefix(f"{LABEL} "))
                for w in merged.warnings if w.startswith(LABEL))
    if added:
        count = f"{len(added)} app{'s' if len(added) != 1 else ''}"
        yield Check(LABEL, PASS, f"{count} registered at run time: {', '.join(added)}")
    return merged


def _drop_in_check(label: str, registry: Registry) -> Check:
    mine = [s for s in registry.skipped if label in s]
    if mine:
        return Check(label, FAIL, "; ".join(_without(s, label) for s in mine))
    app = next((a for a in registry.apps if a.declared_in == label), None)
    warnings = [_without(w, label) for w in registry.warnings if w.startswith(label)]
    if warnings:
        return Check(label, WARN, "; ".join(warnings))
    if app is None:
        return Check(label, WARN, "loaded no app")
    return Check(label, PASS, f"app {app.name!r}" + (f", chord {app.chord!r}" if app.chord else ""))


def _without(message: str, label: str) -> str:
    return message.removeprefix(label + ": ").removeprefix(label + " ")


# ------------------------------------------------------------------ commands on PATH

def _program_check(name: str, command: str, app: AppSpec) -> Check:
    """Is the program a command starts with there? Found the way the shell will find it: on
    the app's PATH (its env's, else this shell's, which may differ from the daemon's)."""
    program = _program(command)
    if program is None:
        return Check(name, WARN, f"cannot parse {command!r} to find its program")
    if program in SHELL_WORDS:
        return Check(name, PASS, f"starts with the shell word {program!r}")
    if any(c in program for c in "$`*?"):
        return Check(name, WARN, f"{program!r} is expanded by the shell at launch; not checked")
    if "/" in program:
        path = Path(os.path.expanduser(program))
        if not path.is_absolute() and app.cwd:
            path = Path(os.path.expanduser(app.cwd)) / path
        if path.is_file() and os.access(path, os.X_OK):
            return Check(name, PASS, f"{program} is executable")
        return Check(name, FAIL, f"{program} is not an executable file")
    search = app.env.get("PATH") or os.environ.get("PATH", os.defpath)
    found = shutil.which(program, path=search)
    if found is None:
        return Check(name, FAIL, f"{program!r} not found on PATH")
    return Check(name, PASS, f"{program} -> {found}")


def _program(command: str) -> str | None:
    """The first word the shell will run, past ``VAR=value`` and ``exec``/``env``/..."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return None
    for word in words:
        if ASSIGNMENT.match(word) or word in PREFIX_WORDS:
            continue
        return word
    return None


# ------------------------------------------------------------------ hotkeys and logs

def _hotkey_check(client: Client, daemon_up: bool) -> Check:
    """The running daemon's own answer when there is one; else whether this session could
    have hotkeys (asked in a thread: a display that never answers must not stall doctor)."""
    name = "hotkeys"
    if daemon_up:
        try:
            status = client.hotkeys()
        except OrchestratrClientError as exc:
            return Check(name, FAIL, f"GET /hotkeys failed: {exc}")
        if status.get("enabled"):
            grab = "keys grabbed" if status.get("suppressing") else "keys observed, not grabbed"
            paused = " (paused)" if status.get("paused") else ""
            return Check(name, PASS, f"{status.get('backend')}, leader {status.get('leader')}, "
                                     f"{grab}{paused}")
        return Check(name, WARN, f"off in the daemon: {status.get('reason')}; {_fallback()}")
    from orchestratr.hotkeys.backend import default_backend

    backend = default_backend()
    reason = backend.unavailable_reason(DISPLAY_TIMEOUT_S)  # bounded: a hung X server
    if reason is None:
        return Check(name, PASS, f"{backend.needs}: hotkeys can run here")
    return Check(name, WARN, f"unavailable here: {reason}; {_fallback()}")


def _fallback() -> str:
    from orchestratr.hotkeys.backend import FALLBACK

    return FALLBACK



def _log_dir_check(log_dir: Path) -> Check:
    name = "log dir"
    probe = log_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return Check(name, FAIL, f"{probe} is not a directory, so {log_dir} cannot be made")
    if not os.access(probe, os.W_OK | os.X_OK):
        return Check(name, FAIL, f"{probe} is not writable, so logs cannot go to {log_dir}")
    if probe == log_dir:
        return Check(name, PASS, f"{log_dir} is writable")
    return Check(name, PASS, f"{log_dir} will be created (under writable {probe})")
