"""``orchestratr events``: the daemon's lifecycle events, buffered or followed live.

Events are printed one per line in both forms (NDJSON under ``--json``), since a followed
stream has no end to close a JSON array with. ``--follow`` reads the SSE stream through
``Client.follow_events``: a dropped connection is resumed with ``Last-Event-ID`` and a restarted
daemon is read from its first event, so nothing is lost while the command runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestratr.cli.render import STATE_COLOURS, parse_time

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.client import Client

PAGE = 500
SHOWN_ELSEWHERE = ("id", "type", "at", "app", "from", "to", "trigger", "source", "detail")


def run(ctx: Context) -> int:
    args = ctx.args
    client = ctx.client()
    records = _followed(ctx, client) if args.follow else _buffered(client, args.since)
    for record in records:
        if _wanted(record, args.app, args.types):
            _print(ctx, record)
    return 0


def _buffered(client: Client, since: int) -> Iterator[dict[str, Any]]:
    """Every buffered event after ``since``, a page at a time."""
    while True:
        page = client.events(since=since, limit=PAGE)
        yield from (normalised(e) for e in page)
        if len(page) < PAGE:
            return
        since = page[-1]["id"]


def _followed(ctx: Context, client: Client) -> Iterator[dict[str, Any]]:
    args = ctx.args
    events = client.follow_events(args.app, args.types, since=args.since,
                                  on_wait=lambda why: ctx.out.note(f"waiting for the daemon: {why}"))
    for event in events:
        if event.type == "reset":
            ctx.out.note("warning: the daemon no longer holds every event since the last one "
                         "seen; some were lost")
        yield event.record()


def normalised(event: dict[str, Any]) -> dict[str, Any]:
    """One flat record whatever the wire nests: ``{"id", "type", ...data}``."""
    data = event.get("data")
    if isinstance(data, dict):
        return {**{k: v for k, v in event.items() if k != "data"}, **data}
    return dict(event)


def _wanted(record: dict[str, Any], apps: list[str], types: list[str]) -> bool:
    """Filters again on this side: the buffered endpoint may not filter at all."""
    if apps and record.get("app") not in apps:
        return False
    return not types or record.get("type") in types


def _print(ctx: Context, record: dict[str, Any]) -> None:
    if ctx.out.json_mode:
        ctx.out.json(record, compact=True)
    else:
        ctx.out.line(describe(ctx, record))


def describe(ctx: Context, record: dict[str, Any]) -> str:
    """``12:03:04.123  #57  state  notes  stopped -> launching (launch by api)``."""
    when = _clock(record.get("at"))
    head = f"{when}  #{record.get('id')}  {record.get('type', '?'):<12}  {record.get('app') or '-'}"
    if "to" in record:
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


def _clock(at: Any) -> str:
    """Local wall-clock time of an event (``at`` is epoch seconds or RFC 3339)."""
    seconds = at if isinstance(at, int | float) else parse_time(at if isinstance(at, str) else None)
    if seconds is None:
        return "--:--:--.---"
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")[:-3]
