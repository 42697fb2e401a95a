"""``orchestratr logs [NAME] [-n N] [-f]``: an app's output, as ``pm2 logs`` and
``journalctl -u NAME -f`` show it.

With a NAME, its last N lines, then with ``--follow`` each line as the app writes it, across
its restarts (a ``--- launch`` line marks each run). Without one, every app's lines, each after
its app's name in a colour of its own (as honcho and pm2 interleave them). ``--json`` prints
one object a line: ``{"app", "line", "at"}``, or ``{"app", "launch", "at"}`` where a run
starts. Ctrl-C ends ``--follow`` with status 130.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from orchestratr.applog import MAX_LINES
from orchestratr.cli.render import PREFIX_COLOURS

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.client import Client

# (app, kind, data) from the apps' streams to the printing thread; kind: an SSE event type,
# or "refused" (the stream was refused) or "newcomer" (an app to follow from now on)
Lines = queue.SimpleQueue[tuple[str, str, dict[str, Any]]]
RETRY_S = 0.5  # a followed stream that dropped (the daemon restarting) is opened again after


def run(ctx: Context) -> int:
    from orchestratr.cli.main import UsageError

    args = ctx.args
    if not 0 <= args.lines <= MAX_LINES:
        raise UsageError(f"-n wants from 0 to {MAX_LINES} lines")
    client = ctx.client()
    if args.name is not None:  # an unknown one fails here, not in a stream that retries
        names = [client.app(args.name)["name"]]
    else:
        names = [app["name"] for app in client.apps()]
    printer = Printer(ctx, names, prefixed=args.name is None)
    if not args.follow:
        for name in names:
            for line in client.logs(name, args.lines)["lines"]:
                printer.line(name, line, None)
        return 0
    follow(client, names, args.lines, printer, alone=args.name is not None)
    return 0


class Printer:
    """Lines as people or scripts read them; each app's prefix in its own colour."""

    def __init__(self, ctx: Context, names: list[str], prefixed: bool) -> None:
        self._out = ctx.out
        self._width = 0
        self._colours: dict[str, str] = {}
        for name in names:
            self.add(name, prefixed)

    def line(self, app: str, text: str, at: str | None) -> None:
        if self._out.json_mode:
            self._out.json({"app": app, "line": text, "at": at}, compact=True)
        else:
            self._out.line(self._prefix(app) + text)

    def add(self, app: str, prefixed: bool = True) -> None:
        """An app followed from now on: its colour, and its prefix as wide as the widest
        (there are prefixes only when every app is followed)."""
        self._colours[app] = PREFIX_COLOURS[len(self._colours) % len(PREFIX_COLOURS)]
        if prefixed:
            self._width = max(self._width, len(app))

    def launch(self, app: str, command: str, at: str | None) -> None:
        if self._out.json_mode:
            self._out.json({"app": app, "launch": command, "at": at}, compact=True)
        else:
            self._out.line(self._prefix(app) + self._out.paint(f"--- launch {command!r}", "dim"))

    def _prefix(self, app: str) -> str:
        if not self._width:
            return ""
        return self._out.paint(f"{app:<{self._width}} |", self._colours.get(app)) + " "


def follow(
    client: Client, names: list[str], backlog: int, printer: Printer, alone: bool = True
) -> None:
    """Print every followed app's lines as they come, until Ctrl-C. Each app is read by a
    thread of its own; this thread prints, so lines of different apps never mix mid-line.
    A refusal (the app removed meanwhile, say) ends a lone app's follow with its error, and
    only that app's stream when every app is followed."""
    lines: Lines = queue.SimpleQueue()
    for name in names:
        _follow_app(client, name, backlog, lines)
    if not alone:  # every app: those added later too (a reload, a registration)
        threading.Thread(target=_newcomers, args=(client, set(names), lines), name="logs-apps",
                         daemon=True).start()
    while True:
        try:
            app, kind, data = lines.get(timeout=1.0)  # a timeout lets Ctrl-C through
        except queue.Empty:
            continue
        if kind == "refused":
            if alone:
                raise data["error"]
        elif kind == "newcomer":
            printer.add(app)
            _follow_app(client, app, 0, lines)
        elif kind == "launch":
            printer.launch(app, data.get("command", ""), data.get("at"))
        else:
            printer.line(app, data.get("line", ""), data.get("at"))


def _follow_app(client: Client, name: str, backlog: int, lines: Lines) -> None:
    threading.Thread(target=_pump, args=(client, name, backlog, lines), name=f"logs-{name}",
                     daemon=True).start()


def _newcomers(client: Client, known: set[str], lines: Lines) -> None:
    """Apps added while every app is followed, from the events that say so (the stream is
    opened again when it drops, as the apps' own are)."""
    from orchestratr.client import OrchestratrClientError

    def look() -> None:
        for app in client.apps():
            if app["name"] not in known:
                known.add(app["name"])
                lines.put((app["name"], "newcomer", {}))

    while True:
        try:
            with client.open_events(types=("registered", "reloaded")) as stream:
                look()  # what came before the stream was open
                for _ in stream:
                    look()
        except OrchestratrClientError:
            pass
        time.sleep(RETRY_S)


def _pump(client: Client, name: str, backlog: int, lines: Lines) -> None:
    from orchestratr.client import OrchestratrClientError

    try:
        for event in _events(client, name, backlog):
            if isinstance(event.data, dict):
                lines.put((name, event.type, event.data))
    except OrchestratrClientError as exc:
        lines.put((name, "refused", {"error": exc}))


def _events(client: Client, name: str, backlog: int) -> Iterator[Any]:
    """One app's stream, opened again (without a backlog) whenever it drops: the daemon may
    restart under a long ``logs -f``. A refusal (4xx) is raised: asking again would only get
    it again (a silent retry loop once hid a refused ``-n`` for good)."""
    from orchestratr.client import OrchestratrClientError

    while True:
        try:
            with client.open_logs(name, backlog) as stream:
                backlog = 0
                yield from stream
        except OrchestratrClientError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                raise
        time.sleep(RETRY_S)
