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
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from orchestratr import __version__
from orchestratr.cli.render import Output, runnable

if TYPE_CHECKING:
    from orchestratr.client import Client, NotRunningError, OrchestratrClientError

OK, ERROR, USAGE, NOT_RUNNING, INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Arguments argparse accepted but the verb cannot use (exit 2)."""


class Parser(argparse.ArgumentParser):
    """argparse, with "did you mean" for a mistyped command."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"argument COMMAND: invalid choice: '(.*?)'", message)
        if match:
            message = f"unknown command {match.group(1)!r}{_closest(match.group(1), list(VERBS))}"
        super().error(message)


def _closest(word: str, known: Sequence[str]) -> str:
    """``; did you mean 'launch'?``, or nothing when no known word is close."""
    import difflib  # only on a mistake: 140 KiB the daemon would carry for nothing

    close = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


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
    "list": ("verbs", "list_apps", "every app: chord, state, pid, uptime, restarts, source, "
                                   "error"),
    "show": ("show", "run", "one app in full: processes, CPU, memory, last exit, log, history"),
    "logs": ("logs", "run", "an app's output (every app's without a name); -f follows it"),
    "top": ("top", "run", "a live full-screen view of every app"),
    "launch": ("verbs", "launch", "launch apps (a running one: its window is raised)"),
    "stop": ("verbs", "stop", "stop apps"),
    "restart": ("verbs", "restart", "stop apps, then launch them again"),
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
    "publish": ("messaging", "publish", "publish an event as app SOURCE"),
    "send": ("messaging", "send", "send a message to an app's inbox (--launch: start it)"),
    "inbox": ("messaging", "inbox", "print an app's inbox; -f follows it"),
    "services": ("messaging", "services", "the live services apps offer"),
    "resolve": ("messaging", "resolve", "one live service by name"),
    "browse": ("messaging", "browse", "the live services of a type; -f follows them"),
    "doctor": ("doctor", "run", "check the daemon, config, commands, hotkeys and log dir"),
    "install": ("service", "install", "start the daemon at every login"),
    "uninstall": ("service", "uninstall", "undo install"),
    "pipe": ("pipe", "run", "speak NDJSON requests and responses over stdin/stdout"),
    "completion": ("completion", "script", "print the shell completion script for bash, zsh "
                                           "or fish"),
}

# verb -> the examples at the end of its --help
EXAMPLES: dict[str, tuple[str, ...]] = {
    "daemon": ("orchestratr daemon", "orchestratr daemon --config-dir /tmp/orch --port 0"),
    "status": ("orchestratr status", "orchestratr status --json | jq .apps"),
    "list": ("orchestratr list", "orchestratr list --wide"),
    "show": ("orchestratr show notes", "orchestratr show notes --json | jq .processes"),
    "logs": ("orchestratr logs notes -n 50", "orchestratr logs -f"),
    "top": ("orchestratr top",),
    "launch": ("orchestratr launch notes", "orchestratr launch notes term"),
    "stop": ("orchestratr stop notes --wait", "orchestratr stop all"),
    "restart": ("orchestratr restart notes", "orchestratr restart all --wait"),
    "reload": ("orchestratr reload",),
    "trigger": ("orchestratr trigger n", "orchestratr trigger"),
    "pause": ("orchestratr pause",),
    "resume": ("orchestratr resume",),
    "events": ("orchestratr events --app notes --type state",
               "orchestratr events --follow --json"),
    "register": ("orchestratr register clock --command xclock --chord c",
                 "orchestratr register worker --command ./work.sh --lease 30 --restart always"),
    "unregister": ("orchestratr unregister clock", "orchestratr unregister clock --keep-running"),
    "heartbeat": ("orchestratr heartbeat worker", "orchestratr heartbeat worker --every 10"),
    "drain": ("orchestratr drain worker",),
    "revive": ("orchestratr revive worker",),
    "doctor": ("orchestratr doctor", "orchestratr doctor --json"),
    "install": ("orchestratr install", "orchestratr install --config-dir ~/orch"),
    "uninstall": ("orchestratr uninstall",),
    "pipe": ("""printf '%s\\n' '{"launch": "notes"}' | orchestratr pipe""",),
    "completion": ("orchestratr completion fish > ~/.config/fish/completions/orchestratr.fish",
                   "echo 'source <(orchestratr completion zsh)' >> ~/.zshrc"),
    "publish": ("""orchestratr publish espansr sync_complete '{"files": 3}'""",),
    "send": ("""orchestratr send notes '{"open": "todo.md"}' --from espansr --launch""",),
    "inbox": ("orchestratr inbox notes", "orchestratr inbox notes -f"),
    "services": ("orchestratr services", "orchestratr services --type _http._tcp"),
    "resolve": ("orchestratr resolve espansr-api",),
    "browse": ("orchestratr browse _http._tcp", "orchestratr browse _http._tcp -f"),
}
# verbs whose NAME arguments may be several, or `all`
SHELLS = ("bash", "zsh", "fish")  # what `completion` writes scripts for


def _common(suppress: bool) -> Parser:
    """--config-dir and --json, accepted before or after the verb. On the verbs' parsers the
    defaults are suppressed so they do not overwrite a value given before the verb."""
    common = Parser(add_help=False)
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
    parser = Parser(
        prog="orchestratr", parents=[_common(suppress=False)],
        description="A local process supervisor for desktop apps.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 ok, 1 the daemon answered an error, 2 usage error, "
               "3 the daemon is not running, 130 interrupted.\n"
               "Run `orchestratr COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"orchestratr {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")
    common = _common(suppress=True)
    for name, (_, _, help_text) in VERBS.items():
        examples = "".join(f"  {line}\n" for line in EXAMPLES[name])
        sub = verbs.add_parser(name, help=help_text, description=help_text, parents=[common],
                               epilog=f"examples:\n{examples}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        _ARGUMENTS.get(name, lambda _: None)(sub)
    return parser


def _daemon_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, metavar="N", help="API port (0: any free port)")
    p.add_argument("--no-hotkeys", action="store_true", help="do not listen for hotkeys")
    p.add_argument("--log-file", metavar="F", help="write the JSON log here")


def _name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the app's name")


def _names_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", metavar="NAME", nargs="+",
                   help="apps' names, or `all` for every app")


def _wait_args(p: argparse.ArgumentParser) -> None:
    _names_arg(p)
    p.add_argument("--wait", action="store_true",
                   help="return once it is done (the daemon answers as soon as it has begun)")


def _launch_args(p: argparse.ArgumentParser) -> None:
    _names_arg(p)
    _wait_for_failure_args(p)


def _wait_for_failure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true",
                   help="return once the daemon has begun, without seeing whether it failed")
    p.add_argument("--timeout", type=float, default=2.0, metavar="SECS",
                   help="wait at most this long for a failure (default 2)")


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wide", action="store_true",
                   help="add CPU and MEM columns (the app's processes together)")


def _logs_args(p: argparse.ArgumentParser) -> None:
    from orchestratr.applog import DEFAULT_LINES, MAX_LINES

    p.add_argument("name", metavar="NAME", nargs="?",
                   help="the app's name; none: every app, each line after its app's name")
    p.add_argument("-n", "--lines", type=int, default=DEFAULT_LINES, metavar="N",
                   help=f"the last N lines (default {DEFAULT_LINES}, at most {MAX_LINES}; "
                        "per app without a name)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="then print lines as they are written, until Ctrl-C")


def _completion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", metavar="SHELL", choices=SHELLS,
                   help="bash, zsh or fish")


def _trigger_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("chord", metavar="CHORD", nargs="?", help="a chord key; none: the leader")
    _wait_for_failure_args(p)


def _events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", action="append", default=[], metavar="NAME",
                   help="only this app's events (repeatable)")
    p.add_argument("--type", action="append", default=[], metavar="T", dest="types",
                   help="only events of this type, e.g. state (repeatable)")
    p.add_argument("--source", action="append", default=[], metavar="APP",
                   help="only events from this source, e.g. an app that publishes (repeatable)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events; survives dropped connections and restarts")
    p.add_argument("--since", type=int, default=0, metavar="ID",
                   help="only events after this id, or its short form as printed (default: "
                        "every buffered event)")


def _register_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--command", required=True, metavar="CMD", help="run through your shell")
    p.add_argument("--chord", metavar="KEY",
                   help="the key after the leader that launches it (one character, or f1..f12, "
                        "tab, enter, ...)")
    p.add_argument("--description", metavar="TEXT", help="what the app is, for people")
    p.add_argument("--ready-cmd", metavar="CMD", help="exits 0 once the app is ready")
    p.add_argument("--cwd", metavar="DIR", help="the directory the command runs in")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="an environment variable for the app (repeatable)")
    from orchestratr.registry.model import RestartPolicy

    policies = [policy.value for policy in RestartPolicy]
    p.add_argument("--restart", choices=policies, metavar="POLICY",
                   help=f"restart it when it exits: {', '.join(policies)} (default never)")
    p.add_argument("--autostart", action="store_true", default=None,
                   help="launch it when the daemon starts (and now)")
    p.add_argument("--detached", action="store_true", default=None,
                   help="fire and forget: spawned, then reported stopped, never tracked")
    p.add_argument("--lease", type=int, metavar="SECS",
                   help="the app must heartbeat within SECS or it is taken as gone")


def _unregister_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--keep-running", action="store_true", help="do not stop its process")


def _heartbeat_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--every", type=float, metavar="SECS",
                   help="renew every SECS seconds until interrupted")


def _publish_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="the app publishing it (registered)")
    p.add_argument("type", metavar="TYPE", help="the event's type, e.g. sync_complete")
    p.add_argument("data", metavar="JSON", nargs="?", help="a JSON object (default {})")


def _send_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("data", metavar="JSON", nargs="?", help="any JSON value (default {})")
    p.add_argument("--from", dest="sender", metavar="APP", help="the sending app (registered)")
    p.add_argument("--launch", action="store_true",
                   help="launch the receiver if it is not running; it reads the message then")


def _inbox_args(p: argparse.ArgumentParser) -> None:
    _name_arg(p)
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new messages (they then count as read)")
    p.add_argument("--since", type=int, default=0, metavar="ID",
                   help="only messages after this id (default: the whole inbox)")


def _services_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--type", metavar="T", help="only this type, e.g. _http._tcp")


def _resolve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the service's name")


def _browse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("type", metavar="TYPE", help="the service type, e.g. _http._tcp")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing services as they are found and removed")


_ARGUMENTS = {
    "daemon": _daemon_args,
    "list": _list_args,
    "show": _name_arg,
    "logs": _logs_args,
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
    "publish": _publish_args,
    "send": _send_args,
    "inbox": _inbox_args,
    "services": _services_args,
    "resolve": _resolve_args,
    "browse": _browse_args,
    "completion": _completion_args,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["__complete"]:  # the shell completion scripts ask here
        from orchestratr.cli.completion import complete

        return complete(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return INTERRUPTED
    if args.verb is None:
        parser.print_help()
        return OK
    # Nothing here speaks TLS (the API is plain HTTP on loopback), yet http.client and
    # structlog's asyncio load OpenSSL if they can: start-up time, and ~4 MiB in the daemon.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    from orchestratr.client import NotRunningError, OrchestratrClientError

    out = Output(args.json)
    ctx = Context(args, out)
    module, function, _ = VERBS[args.verb]
    try:
        verb = getattr(importlib.import_module(f"orchestratr.cli.{module}"), function)
        return verb(ctx)
    except UsageError as exc:
        out.note(f"orchestratr {args.verb}: error: {exc}")
        return USAGE
    except NotRunningError as exc:
        out.error(not_running_message(exc, ctx.client()), "not_running")
        return NOT_RUNNING
    except OrchestratrClientError as exc:
        out.error(error_text(ctx, exc), exc.code or "error", exc.errors)
        return ERROR
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`orchestratr events -f | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


def error_text(ctx: Context, exc: OrchestratrClientError, name: str | None = None) -> str:
    """The daemon's error as a person reads it: said once (an ``invalid_config`` message
    lists its errors, which are printed one a line after it), and for an app that is not
    there (``name``, else the verb's one NAME), with the names that are (only for people:
    ``--json`` keeps the daemon's answer)."""
    text = str(exc).split("\n")[0] if exc.errors else str(exc)
    if exc.code == "not_found" and not ctx.out.json_mode:
        text += suggest_app(ctx, name or _one_name(ctx.args))
    return text


def _one_name(args: argparse.Namespace) -> str | None:
    names = getattr(args, "names", None) or [getattr(args, "name", None)]
    return names[0] if len(names) == 1 else None


def suggest_app(ctx: Context, name: str | None) -> str:
    """``; did you mean 'notes'?`` or ``; known apps: a, b``, for a name the daemon lacks."""
    if not name:
        return ""
    from orchestratr.client import OrchestratrClientError

    try:
        known = [app["name"] for app in ctx.client(timeout=1.0).apps()]
    except OrchestratrClientError:
        return ""
    if name in known:
        return ""
    return _closest(name, known) or (
        f"; known apps: {', '.join(known)}" if known else "; no apps are registered")


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
    start = "daemon"
    if client.config_dir != platform_config_dir():
        start += f" --config-dir {client.config_dir}"
    return (f"the daemon is not running ({where}). Start it with {runnable(start)}, "
            f"or run {runnable('install')} to start it at every login")
