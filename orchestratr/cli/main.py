"""The ``orchestratr`` command: argument parsing, dispatch and exit codes.

Every verb but ``daemon``, ``doctor``, ``install`` and ``uninstall`` is a client of the running
daemon's HTTP API (``orchestratr.client``), so the command line and the API cannot disagree.
Verb modules are imported only when their verb runs: a client verb starts without loading the
daemon's dependencies.

Exit codes: 0 success, 1 the daemon answered an error (or a check failed), 2 usage error,
3 the daemon is not running.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestratr import __version__
from orchestratr.cli.render import Output

if TYPE_CHECKING:
    from orchestratr.client import Client, NotRunningError

OK, ERROR, USAGE, NOT_RUNNING = 0, 1, 2, 3


class UsageError(Exception):
    """Arguments argparse accepted but the verb cannot use (exit 2)."""


@dataclass
class Context:
    """What every verb gets: its arguments, where to print, and how to reach the daemon."""

    args: argparse.Namespace
    out: Output

    @property
    def config_dir(self) -> str | None:
        """The config dir given with --config-dir, if any (else the client's default rules)."""
        return self.args.config_dir

    def client(self, timeout: float = 5.0) -> Client:
        from orchestratr.client import Client

        return Client(config_dir=self.config_dir, timeout=timeout)


# verb -> (module in orchestratr.cli, function, one-line help). Imported on use only.
VERBS: dict[str, tuple[str, str, str]] = {
    "daemon": ("daemon_verb", "run", "run the supervisor in the foreground"),
    "status": ("verbs", "status", "daemon pid, port, version, uptime, hotkeys, app counts"),
    "list": ("verbs", "list_apps", "every app: chord, state, pid, uptime, source, error"),
    "launch": ("verbs", "launch", "launch an app (a running one: its window is raised)"),
    "stop": ("verbs", "stop", "stop an app"),
    "restart": ("verbs", "restart", "stop an app, then launch it again"),
    "reload": ("verbs", "reload", "reload the configuration now"),
    "trigger": ("verbs", "trigger", "launch the app on CHORD, or press the leader"),
    "pause": ("verbs", "pause", "pause hotkeys (release every key grab)"),
    "resume": ("verbs", "resume", "resume hotkeys"),
    "events": ("events", "run", "print lifecycle events; --follow streams them"),
    "register": ("verbs", "register", "add an app at run time, optionally with a lease"),
    "unregister": ("verbs", "unregister", "remove an app added at run time"),
    "heartbeat": ("verbs", "heartbeat", "renew an app's lease (--every N to keep it up)"),
    "drain": ("verbs", "drain", "take an app as unresponsive: its grace period starts"),
    "revive": ("verbs", "revive", "cancel a drain: the app is ready again"),
    "doctor": ("doctor", "run", "check the daemon, config, commands, hotkeys and log dir"),
    "install": ("service", "install", "start the daemon at every login"),
    "uninstall": ("service", "uninstall", "undo install"),
    "pipe": ("pipe", "run", "speak NDJSON requests and responses over stdin/stdout"),
}


def _common(suppress: bool) -> argparse.ArgumentParser:
    """--config-dir and --json, accepted before or after the verb. On the verbs' parsers the
    defaults are suppressed so they do not overwrite a value given before the verb."""
    common = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    common.add_argument(
        "--config-dir", metavar="DIR", default=default,
        help="the daemon's config dir (default: $ORCHESTRATR_CONFIG_DIR, else the platform's "
             "user config dir)")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
        help="machine-readable output")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestratr", parents=[_common(suppress=False)],
        description="A local process supervisor for desktop apps.",
        epilog="Exit codes: 0 ok, 1 the daemon answered an error, 2 usage error, "
               "3 the daemon is not running.")
    parser.add_argument("--version", action="version", version=f"orchestratr {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    common = _common(suppress=True)
    for name, (_, _, help_text) in VERBS.items():
        sub = verbs.add_parser(name, help=help_text, description=help_text, parents=[common])
        _ARGUMENTS.get(name, lambda _: None)(sub)
    return parser


def _daemon_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, metavar="N", help="API port (0: any free port)")
    p.add_argument("--no-hotkeys", action="store_true", help="do not listen for hotkeys")
    p.add_argument("--log-file", metavar="F", help="write the JSON log here")


def _name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the app's name")


def _wait_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--wait", action="store_true",
                   help="return once it is done (the daemon answers as soon as it has begun)")


def _launch_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--no-wait", action="store_true",
                   help="return once the daemon has begun, without seeing whether it failed")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECS",
                   help="wait at most this long for a failure (default 2)")


def _trigger_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("chord", metavar="CHORD", nargs="?", help="a chord key; none: the leader")


def _events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", action="append", default=[], metavar="NAME",
                   help="only this app's events (repeatable)")
    p.add_argument("--type", action="append", default=[], metavar="T", dest="types",
                   help="only events of this type, e.g. state (repeatable)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events; survives dropped connections and restarts")
    p.add_argument("--since", type=int, default=0, metavar="ID",
                   help="only events after this id (default: every buffered event)")


def _register_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--command", required=True, metavar="CMD", help="run through your shell")
    p.add_argument("--chord", metavar="KEY")
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--ready-cmd", metavar="CMD", help="exits 0 once the app is ready")
    p.add_argument("--cwd", metavar="DIR")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="repeatable")
    from orchestratr.registry.model import RestartPolicy

    p.add_argument("--restart", choices=[policy.value for policy in RestartPolicy])
    p.add_argument("--autostart", action="store_true", default=None)
    p.add_argument("--detached", action="store_true", default=None)
    p.add_argument("--lease", type=int, metavar="SECS",
                   help="the app must heartbeat within SECS or it is taken as gone")


def _unregister_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--keep-running", action="store_true", help="do not stop its process")


def _heartbeat_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--every", type=float, metavar="SECS",
                   help="renew every SECS seconds until interrupted")


_ARGUMENTS = {
    "daemon": _daemon_args,
    "launch": _launch_args,
    "stop": _wait_args,
    "restart": _wait_args,
    "trigger": _trigger_args,
    "events": _events_args,
    "register": _register_args,
    "unregister": _unregister_args,
    "heartbeat": _heartbeat_args,
    "drain": _name_arg,
    "revive": _name_arg,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Nothing here speaks TLS (the API is plain HTTP on loopback), yet http.client and
    # structlog's asyncio load OpenSSL if they can: start-up time, and ~4 MiB in the daemon.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    from orchestratr.client import NotRunningError, OrchestratrClientError

    out = Output(args.json)
    ctx = Context(args, out)
    module, function, _ = VERBS[args.verb]
    verb = getattr(importlib.import_module(f"orchestratr.cli.{module}"), function)
    try:
        return verb(ctx)
    except UsageError as exc:
        out.note(f"orchestratr {args.verb}: error: {exc}")
        return USAGE
    except NotRunningError as exc:
        out.error(not_running_message(exc, ctx.client()), "not_running")
        return NOT_RUNNING
    except OrchestratrClientError as exc:
        out.error(str(exc), exc.code or "error", exc.errors)
        return ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`orchestratr events -f | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


def not_running_message(exc: NotRunningError, client: Client) -> str:
    """Why no daemon answers, where its port file was looked for, and how to start one."""
    from orchestratr.client import platform_config_dir

    if client.url:
        return f"the daemon is not running: nothing answers at {client.url} ($ORCHESTRATR_URL)"
    if client.port_file.exists():
        why = str(exc).removeprefix("orchestratr is not running").strip(" ()")
        where = f"{why}; port file {client.port_file}"
    else:
        where = f"no port file at {client.port_file}"
    start = "orchestratr daemon"
    if client.config_dir != platform_config_dir():
        start += f" --config-dir {client.config_dir}"
    return (f"the daemon is not running ({where}). Start it with `{start}`, "
            "or run `orchestratr install` to start it at every login")
