"""The verbs by which apps (and people) talk through the daemon: ``publish``, ``send``, ``inbox``
and the services ``services``, ``resolve`` and ``browse``.

Streams (``inbox -f``, ``browse -f``) print one line per event, NDJSON under ``--json``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchestratr.cli.events import clock

if TYPE_CHECKING:
    from orchestratr.cli.main import Context


def _json_arg(text: str | None, what: str, default: Any) -> Any:
    from orchestratr.cli.main import UsageError

    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not JSON: {exc}") from None


# ------------------------------------------------------------------ events and messages

def publish(ctx: Context) -> int:
    from orchestratr.cli.main import UsageError

    args = ctx.args
    data = _json_arg(args.data, "DATA", {})
    if not isinstance(data, dict):
        raise UsageError("DATA must be a JSON object, e.g. '{\"count\": 3}'")
    answer = ctx.client().publish(args.source, args.type, data)
    ctx.out.result(answer, f"published {args.type} from {args.source} (#{answer['id']})")
    return 0


def send(ctx: Context) -> int:
    args = ctx.args
    data = _json_arg(args.data, "DATA", {})
    answer = ctx.client().send(args.name, data, sender=args.sender, launch=args.launch)
    readers = answer["delivered"]
    text = (f"sent to {args.name} (#{answer['id']}): "
            + (f"delivered to {readers} reader{'s' if readers != 1 else ''}" if readers
               else "kept in its inbox until it reads it"))
    if answer.get("launched"):
        text += f"; {args.name} launched"
    ctx.out.result(answer, text)
    return 0


def inbox(ctx: Context) -> int:
    """The whole inbox (it counts as unread still); ``-f`` then follows it as its app would,
    so what arrives while it runs counts as read."""
    client = ctx.client()
    shown = client.messages(ctx.args.name, since=ctx.args.since)
    for message in shown:
        _message(ctx, message)
    if ctx.args.follow:
        last = shown[-1]["id"] if shown else None
        for message in client.inbox(ctx.args.name, since=last):
            _message(ctx, message)
    elif not shown and not ctx.out.json_mode:
        ctx.out.note(f"no messages for {ctx.args.name}")
    return 0


def _message(ctx: Context, message: dict[str, Any]) -> None:
    if ctx.out.json_mode:
        ctx.out.json(message, compact=True)
    else:
        sender = message.get("from") or "-"
        ctx.out.line(f"{clock(message.get('at'))}  #{message['id']}  from {sender}  "
                     f"{json.dumps(message.get('data'))}")


# ------------------------------------------------------------------ services

def services(ctx: Context) -> int:
    records = ctx.client().services(ctx.args.type)
    if ctx.out.json_mode or not records:
        what = f" of type {ctx.args.type}" if ctx.args.type else ""
        ctx.out.result(records, f"no live services{what}")
        return 0
    rows = [[r["name"], r["type"], r["app"], f"{r['host']}:{r['port']}", _txt(r)]
            for r in records]
    for line in ctx.out.table(["NAME", "TYPE", "APP", "ADDRESS", "TXT"], rows):
        ctx.out.line(line)
    return 0


def resolve(ctx: Context) -> int:
    record = ctx.client().resolve(ctx.args.name)
    ctx.out.result(record, _describe(record))
    return 0


def browse(ctx: Context) -> int:
    """The live services of a type; ``-f`` keeps printing them as they come and go."""
    client = ctx.client()
    if not ctx.args.follow:
        for record in client.services(ctx.args.type):
            _change(ctx, "found", record)
        return 0
    with client.browse(ctx.args.type, idle_for=0) as stream:
        for event in stream:
            if event.type in ("found", "removed"):
                _change(ctx, event.type, event.data)
    return 0


def _change(ctx: Context, kind: str, record: dict[str, Any]) -> None:
    if ctx.out.json_mode:
        ctx.out.json({kind: record}, compact=True)
    else:
        colour = "green" if kind == "found" else "yellow"
        ctx.out.line(f"{ctx.out.paint(f'{kind:<7}', colour)}  {_describe(record)}")


def _describe(record: dict[str, Any]) -> str:
    """``notes-api  _http._tcp  127.0.0.1:8080  app notes  version=1``."""
    txt = _txt(record)
    return (f"{record['name']}  {record['type']}  {record['host']}:{record['port']}  "
            f"app {record['app']}" + (f"  {txt}" if txt else ""))


def _txt(record: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in (record.get("txt") or {}).items())
