"""``orchestratr top``: every app, live, in the terminal (as ``pm2 monit`` and ``htop`` show
processes), with keys to act on the selected one.

Built with Textual, which only this verb imports: every other verb, and the daemon, start
without it. The table follows the daemon's event stream, so a transition shows the moment it
is published (the row is updated from the event itself, then completed from
``GET /apps/{name}``); CPU and memory are asked for every ``USAGE_S`` seconds, and uptimes
tick once a second. Each row is a widget of its own, so a change redraws its one line, never
the whole table (which is what a transition would wait behind). A daemon that goes away is
waited for; the view says so meanwhile.

Keys: l launch (or raise), s stop, r restart, o or enter logs of the selected app (escape
closes them), / filter by name, q quit.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Footer, Input, ListItem, ListView, RichLog, Static

from orchestratr.cli.render import STATE_COLOURS, duration, parse_time, size
from orchestratr.supervisor.states import UP, AppState

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.client import Client, EventStream

USAGE_S = 2.0  # how often CPU and memory are asked for
RETRY_S = 1.0  # how soon a lost daemon is asked for again
DETAILS_S = 0.1  # rows that events changed are completed from the apps' details this often
LOG_LINES = 100
COLUMNS = ("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU", "MEM", "ERROR")
# Columns as wide as anything they show ("unresponsive", "23h59m", "100.0%", "1023.9M"), so
# a row never needs its neighbours to move; NAME is as wide as the longest name.
WIDTHS = {"STATE": 12, "PID": 7, "UPTIME": 6, "RESTARTS": 8, "CPU": 6, "MEM": 7}
RUNNING_STATES = frozenset(state.value for state in UP)


def run(ctx: Context) -> int:
    from orchestratr.cli.main import UsageError

    if ctx.out.json_mode or not sys.stdout.isatty():
        raise UsageError("top needs a terminal; scripts read `orchestratr list --json` or "
                         "`orchestratr events --follow --json`")
    ctx.client().health()  # not running: exit 3 with the usual message, before the screen
    Top(ctx.client()).run()
    return 0


class Arrived(Message):
    """An event from the daemon's stream, handed to the view's thread."""

    def __init__(self, kind: str, data: Any) -> None:
        super().__init__()
        self.kind = kind
        self.data = data


class Row(ListItem):
    """One app's line; ``values`` is what each column shows."""

    def __init__(self, name: str, cells: list[Text], text: Text) -> None:
        super().__init__(Static(text, markup=False))
        self.app_name = name
        self.values = _values(cells)
        self.text = text

    def show(self, cells: list[Text], text: Text) -> None:
        """Its line, redrawn alone (same size: no layout is redone)."""
        if text.plain != self.text.plain or text.spans != self.text.spans:
            self.values, self.text = _values(cells), text
            self.query_one(Static).update(text, layout=False)


def _values(cells: list[Text]) -> dict[str, str]:
    return {column: cell.plain for column, cell in zip(COLUMNS, cells, strict=True)}


class Top(App[None]):
    """The view. ``client`` reaches the daemon; ``shown`` records, per app, when a row last
    changed (wall clock), which the tests and the benchmark read."""

    TITLE = "orchestratr top"
    CSS = """
    #status { height: 1; padding: 0 1; background: $boost; }
    #filter { display: none; }
    #filter.shown { display: block; }
    #logs { display: none; height: 40%; border-top: solid $accent; }
    #logs.shown { display: block; }
    #header { height: 1; padding: 0 1; text-style: bold; }
    #apps { height: 1fr; }
    Row { padding: 0 1; height: 1; }
    Row Static, #header { text-wrap: nowrap; text-overflow: ellipsis; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "launch", "launch/raise"),
        Binding("s", "stop", "stop"),
        Binding("r", "restart", "restart"),
        Binding("o", "logs", "logs"),  # enter too (the list's own key: a row selected)
        Binding("slash", "filter", "filter"),
        Binding("escape", "close", "close", show=False),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client
        self.apps: dict[str, dict[str, Any]] = {}
        self.shown: dict[str, float] = {}
        self.pattern = ""
        self._stale: set[str] = set()  # rows changed by events, to complete from details
        self._where = ""
        self._status = ""
        self._events: EventStream | None = None
        self._log_stream: EventStream | None = None
        self._log_app: str | None = None
        self._quitting = threading.Event()
        self._name_width = len("NAME")
        self._rows: dict[str, Row] = {}  # by app name, in the order shown

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("connecting...", id="status", markup=False)
            yield Input(placeholder="filter by name", id="filter")
            yield Static(id="header", markup=False)
            yield ListView(id="apps")
            yield RichLog(id="logs", max_lines=2000, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ListView).focus()
        self.follow_events()
        self.set_interval(1.0, self.tick)
        self.set_interval(USAGE_S, self.ask_usage)
        self.set_interval(DETAILS_S, self.refresh_stale)

    def on_unmount(self) -> None:
        self._quitting.set()
        if self._events is not None:
            self._events.close()
        self._stop_logs()

    # ---------------------------------------------------------------- the table

    def load(self, apps: list[dict[str, Any]], where: str) -> None:
        """A full listing (at start, and after the daemon came back, maybe on another port)."""
        self.apps = {app["name"]: app for app in apps}
        self._where = where
        self.redraw()
        self.status(self._summary())
        self.ask_usage()

    def redraw(self) -> None:
        """Rows for the apps the filter lets through, the cursor kept on its app."""
        selected = self.selected()
        self._name_width = max([len("NAME"), *(len(name) for name in self.apps)])
        self.query_one("#header", Static).update(self._line(
            [Text(column) for column in COLUMNS]))
        rows = self.query_one(ListView)
        rows.clear()
        shown = [name for name in sorted(self.apps) if self.pattern in name.casefold()]
        self._rows = {name: self._new_row(name) for name in shown}
        rows.extend(self._rows.values())
        now = time.time()
        self.shown.update((name, now) for name in shown)
        if shown:  # once the new rows are mounted
            index = shown.index(selected) if selected in shown else 0
            self.call_after_refresh(setattr, rows, "index", index)

    def update(self, name: str, fields: dict[str, Any]) -> None:
        """An app changed: its row shows it now."""
        app = self.apps.get(name)
        if app is None or len(name) > self._name_width:
            self.apps[name] = {**(app or {"name": name}), **fields}
            self.redraw()
            return
        app.update(fields)
        self._show(name)

    def _new_row(self, name: str) -> Row:
        cells = self._cells(self.apps[name])
        return Row(name, cells, self._line(cells))

    def _show(self, name: str) -> None:
        row = self._row(name)
        if row is not None:
            cells = self._cells(self.apps[name])
            row.show(cells, self._line(cells))
            self.shown[name] = time.time()

    def _row(self, name: str) -> Row | None:
        return self._rows.get(name)

    def _line(self, cells: list[Text]) -> Text:
        """The cells in their columns, each padded to its width."""
        line = Text(no_wrap=True, overflow="ellipsis")
        for column, cell in zip(COLUMNS, cells, strict=True):
            width = self._name_width if column == "NAME" else WIDTHS.get(column)
            if width is not None:
                cell = cell.copy()
                cell.truncate(width, pad=True)
            line.append_text(cell)
            if column != COLUMNS[-1]:
                line.append("  ")
        return line

    def cells(self, name: str) -> dict[str, str]:
        """What the app's row shows, by column (for tests and the benchmark); {} when it
        shows no row."""
        row = self._row(name)
        return {} if row is None else row.values

    def rows(self) -> list[str]:
        """The apps shown, in order."""
        return list(self._rows)

    def _cells(self, app: dict[str, Any]) -> list[Text]:
        """The row's cells, as Text (never markup: an error quoting ``[Errno 2]`` keeps
        it)."""
        state = app.get("state", "?")
        running = state in RUNNING_STATES
        processes = app.get("processes") or [] if running else []
        cpu = f"{sum(p['cpu_percent'] for p in processes):.1f}%" if processes else "-"
        mem = size(sum(p["rss_bytes"] for p in processes)) if processes else "-"
        started = parse_time(app.get("started_at") or app.get("launched_at"))
        return [
            Text(app["name"]),
            Text(state, style=STATE_COLOURS.get(state) or ""),
            Text(str(app["pid"]) if app.get("pid") and running else "-"),
            Text(duration(time.time() - started) if started and running else "-"),
            Text(str(app.get("restarts", 0))),
            Text(cpu),
            Text(mem),
            Text(" ".join((app.get("error") or "").split()), style="red"),
        ]

    def tick(self) -> None:
        """Uptimes move on."""
        for name, app in self.apps.items():
            if app.get("state") in RUNNING_STATES:
                self._show(name)

    def selected(self) -> str | None:
        row = self.query_one(ListView).highlighted_child
        return row.app_name if isinstance(row, Row) else None

    def status(self, text: str) -> None:
        """The line above the table. Its size never changes, so no layout is redone: that
        would redraw every row, and the next transition would wait behind it."""
        if text != self._status:
            self._status = text
            self.query_one("#status", Static).update(text, layout=False)

    # ---------------------------------------------------------------- the daemon

    @work(thread=True, exclusive=True, group="events")
    def follow_events(self) -> None:
        """Follow the event stream while the view is open. The stream is opened before the
        listing is read, so no transition falls between them; after a drop (the daemon
        restarted) both are read again."""
        from orchestratr.client import OrchestratrClientError

        while not self._quitting.is_set():
            try:
                with self.client.open_events() as stream:
                    self._events = stream
                    self._from_thread(self.load, self.client.apps(), self._address())
                    for event in stream:  # handed over without waiting: a burst is not held up
                        self.post_message(Arrived(event.type, event.data))
            except OrchestratrClientError as exc:
                self._from_thread(self.status, f"waiting for the daemon: {exc}")
            self._quitting.wait(RETRY_S)

    def _from_thread(self, function: Any, *args: Any) -> None:
        """Run ``function`` on the view's thread (from a worker); nothing once it closes."""
        if self._quitting.is_set():
            return
        try:
            self.call_from_thread(function, *args)
        except RuntimeError:  # it closed meanwhile
            if not self._quitting.is_set():
                raise

    def on_arrived(self, message: Arrived) -> None:
        self.apply_event(message.kind, message.data)

    def apply_event(self, kind: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        name = data.get("app")
        if kind == "state" and name:
            # what the event itself says; the app's details complete it (refresh_stale)
            detail = data.get("detail") or {}
            fields: dict[str, Any] = {"state": data.get("to")}
            if data.get("to") not in RUNNING_STATES:
                fields["processes"] = []
            fields.update((key, detail[key]) for key in ("pid", "error") if key in detail)
            self.update(name, fields)
            self._stale.add(name)
        elif kind in ("registered", "unregistered", "reloaded"):
            self.reload_all()
        self.status(self._summary())

    def refresh_stale(self) -> None:
        """Complete the rows that events changed from the apps' details (pid, uptime,
        restarts, error, usage): once for a burst of transitions, not once for each."""
        if self._stale:
            names, self._stale = sorted(self._stale), set()
            self.ask_details(names)

    @work(thread=True, group="details")
    def ask_details(self, names: list[str]) -> None:
        from orchestratr.client import OrchestratrClientError

        for name in names:
            try:
                detail = self.client.app(name)
            except OrchestratrClientError:
                continue
            self._from_thread(self.update, name, detail)

    @work(thread=True, exclusive=True, group="reload")
    def reload_all(self) -> None:
        from orchestratr.client import OrchestratrClientError

        try:
            apps = self.client.apps()
        except OrchestratrClientError:
            return
        self._from_thread(self.load, apps, self._address())

    @work(thread=True, exclusive=True, group="usage")
    def ask_usage(self) -> None:
        """CPU and memory of the apps that run."""
        from orchestratr.client import OrchestratrClientError

        found = {}
        for name, app in list(self.apps.items()):
            if app.get("state") not in RUNNING_STATES:
                continue
            try:
                found[name] = self.client.app(name)["processes"]
            except OrchestratrClientError:
                continue
        self._from_thread(self._usage, found)  # one redraw for them all

    def _usage(self, found: dict[str, list[dict[str, Any]]]) -> None:
        for name, processes in found.items():
            self.update(name, {"processes": processes})

    def _address(self) -> str:
        return self.client.url or f"port {self.client.address()[1]}"

    def _summary(self) -> str:
        states = [app.get("state") for app in self.apps.values()]
        running = sum(state in RUNNING_STATES for state in states)
        failed = states.count(AppState.failed.value)
        text = f"{len(states)} apps: {running} running, {failed} failed · {self._where}"
        return text + (f" · filter: {self.pattern}" if self.pattern else "")

    # ---------------------------------------------------------------- keys

    def action_launch(self) -> None:
        self._command("launch")

    def action_stop(self) -> None:
        self._command("stop")

    def action_restart(self) -> None:
        self._command("restart")

    def _command(self, verb: str) -> None:
        name = self.selected()
        if name is not None:
            self.send(verb, name)

    @work(thread=True, group="commands")
    def send(self, verb: str, name: str) -> None:
        from orchestratr.client import OrchestratrClientError

        try:
            answer = getattr(self.client, verb)(name)
        except OrchestratrClientError as exc:
            self._from_thread(self.status, f"{verb} {name}: {exc}")
            return
        text = f"{verb} {name}: {answer.get('state')}"
        if answer.get("spawned") is False and answer.get("state") in RUNNING_STATES:
            text = f"{name} is already running (pid {answer.get('pid')})"
        self._from_thread(self.status, text)

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("shown")
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.pattern = event.value.strip().lower()
        self.redraw()
        self.status(self._summary())

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.query_one(ListView).focus()

    def on_list_view_selected(self, _: ListView.Selected) -> None:
        self.action_logs()

    def action_logs(self) -> None:
        name = self.selected()
        if name is None:
            return
        panel = self.query_one("#logs", RichLog)
        panel.clear()
        panel.add_class("shown")
        panel.write(Text(f"--- {name}: last {LOG_LINES} lines, then as written "
                         "(escape closes)", style="bold"))
        self._stop_logs()
        self._log_app = name
        self.follow_logs(name)

    @work(thread=True, exclusive=True, group="logs")
    def follow_logs(self, name: str) -> None:
        from orchestratr.client import OrchestratrClientError

        try:
            stream = self.client.open_logs(name, LOG_LINES)
        except OrchestratrClientError as exc:
            self._from_thread(self.status, f"logs of {name}: {exc}")
            return
        self._log_stream = stream
        with stream:
            for event in stream:
                if self._log_app != name or not isinstance(event.data, dict):
                    return
                text = (Text(f"--- launch {event.data.get('command')!r}", style="dim")
                        if event.type == "launch" else Text(event.data.get("line", "")))
                self._from_thread(self._log_line, name, text)

    def _log_line(self, name: str, text: Text) -> None:
        if self._log_app == name:
            self.query_one("#logs", RichLog).write(text)

    def _stop_logs(self) -> None:
        self._log_app = None
        if self._log_stream is not None:
            self._log_stream.close()
            self._log_stream = None

    def action_close(self) -> None:
        """Escape: close the filter field or the logs."""
        field = self.query_one("#filter", Input)
        if field.has_class("shown"):
            field.remove_class("shown")
            field.value = ""
            self.query_one(ListView).focus()
            return
        self._stop_logs()
        self.query_one("#logs", RichLog).remove_class("shown")
