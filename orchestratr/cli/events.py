"""``orchestratr events``: the daemon's lifecycle events, buffered or followed live.

Events are printed one per line in both forms (NDJSON under ``--json``), since a followed
stream has no end to close a JSON array with. ``--follow`` reads the SSE stream through
``Client.follow_events``: a dropped connection is resumed with ``Last-Event-ID`` and a restarted
daemon is read from its first event, so nothing is lost while the command runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestratr.cli.render import STATE_COLOURS, parse_time
from orchestratr.client import Event

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.client import Client

PAGE = 500
NOTICES = ("reset", "overflow")  # about the stream itself, not the apps
SHOWN_ELSEWHERE = ("id", "type", "at", "app", "from", "to", "trigger", "source", "detail")
# Ids are 16 digits (microseconds since 1970 when the daemon started, counting up by one):
# text shows the last SHORT digits, unique among the 10,000 events a daemon keeps.
SHORT = 10**6


def run(ctx: Context) -> int:
    from orchestratr.client import NotRunningError

    args = ctx.args
    client = ctx.client()
    try:
        _check_apps(ctx, client)
        if 0 < args.since < SHORT:
            args.since = _full_id(client, args.since)
    except NotRunningError:
        if not args.follow:
            raise  # a follower waits for the daemon instead
    records = _followed(ctx, client) if args.follow else _buffered(ctx, client)
    for record in records:  # filtered by the daemon already
        if record.get("type") in NOTICES:
            _notice(ctx, record)
        else:
            _print(ctx, record)
    return 0


def _check_apps(ctx: Context, client: Client) -> None:
    """Filtering on an app that does not exist prints nothing forever: say so instead."""
    from orchestratr.cli.main import suggest_app
    from orchestratr.client import OrchestratrClientError
    from orchestratr.registry.model import name_key

    if not ctx.args.app:
        return
    known = {name_key(app["name"]) for app in client.apps()}
    for name in ctx.args.app:
        if name_key(name) not in known:
            raise OrchestratrClientError(f"app {name!r} not found{suggest_app(ctx, name)}",
                                         404, "not_found")


def _full_id(client: Client, short: int) -> int:
    """The buffered event's id that ends in ``short`` (as text output shows ids)."""
    ids = [e["id"] for e in client.events(since=0, limit=2) if e["id"] is not None]  # no reset
    if not ids:
        return short
    base = ids[0] - ids[0] % SHORT + short
    return base if base >= ids[0] else base + SHORT


def short_id(event_id: Any) -> str:
    return f"#{event_id % SHORT:06d}" if isinstance(event_id, int) else "#-"


def _buffered(ctx: Context, client: Client) -> Iterator[dict[str, Any]]:
    """Every buffered event after ``--since``, a page at a time."""
    since = ctx.args.since
    while True:
        page = client.events(since=since, limit=PAGE, apps=ctx.args.app, types=ctx.args.types,
                             sources=ctx.args.source)
        yield from (Event(e["id"], e["type"], e["data"]).record() for e in page)
        if len(page) < PAGE:
            return
        since = page[-1]["id"]


def _followed(ctx: Context, client: Client) -> Iterator[dict[str, Any]]:
    args = ctx.args
    note = ctx.out.note
    events = client.follow_events(args.app, args.types, since=args.since, wait=True,
                                  on_wait=lambda why: note(f"waiting for the daemon: {why}"),
                                  sources=args.source)
    for event in events:
        yield event.record()


def _notice(ctx: Context, record: dict[str, Any]) -> None:
    """A reset (events were lost) is part of the record for scripts and a warning for people;
    an overflow only means the stream is resumed, which follow_events does on its own."""
    if record["type"] == "overflow":
        return
    if ctx.out.json_mode:
        _print(ctx, record)
    else:
        ctx.out.note("warning: some events are no longer held by the daemon (or came from an "
                     "earlier daemon); what follows is what it still has")


def _print(ctx: Context, record: dict[str, Any]) -> None:
    if ctx.out.json_mode:
        ctx.out.json(record, compact=True)
    else:
        ctx.out.line(describe(ctx, record))


def describe(ctx: Context, record: dict[str, Any]) -> str:
    """``12:03:04.123  #200057  state  notes  stopped -> launching (launch by api)``."""
    when = clock(record.get("at"))
    who = record.get("app") or (record.get("source") if "data" in record else None)  # an app's
    head = f"{when}  {short_id(record.get('id'))}  {record.get('type', '?'):<12}  {who or '-'}"
    if "data" in record and "app" not in record:  # an event an app published
        text = json.dumps(record["data"])
    elif "to" in record:
        to = str(record["to"])
        text = f"{record.get('from')} -> {ctx.out.paint(to, STATE_COLOURS.get(to))}"
        text += f" ({record.get('trigger')} by {record.get('source')})"
        detail = record.get("detail") or {}
        if isinstance(detail, dict) and detail:
            text += " " + _pairs(detail)
    else:
        text = _pairs({k: v for k, v in record.items() if k not in SHOWN_ELSEWHERE})
    return f"{head}  {text}".rstrip()


def _pairs(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in fields.items())


def clock(at: Any) -> str:
    """Local wall-clock time of an event (``at`` is RFC 3339)."""
    seconds = parse_time(at if isinstance(at, str) else None)
    if seconds is None:
        return "--:--:--.---"
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")[:-3]
