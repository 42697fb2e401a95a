"""``orchestratr show NAME``: one app in full, as ``systemctl status`` and ``pm2 show`` do.

Everything comes from ``GET /apps/{name}`` (state, processes with CPU and memory, command,
where it is declared, restart policy and count, last exit, lease, uptime, log path, recent
transitions) and ``GET /apps/{name}/logs`` (its last lines); ``--json`` prints the first with
the lines under ``log_lines``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestratr.cli.render import STATE_COLOURS, duration, parse_time, size

if TYPE_CHECKING:
    from orchestratr.cli.main import Context

LOG_LINES = 10
TRANSITIONS = 8


def run(ctx: Context) -> int:
    client = ctx.client()
    app = client.app(ctx.args.name)
    log_lines = client.logs(app["name"], LOG_LINES)["lines"]
    ctx.out.result({**app, "log_lines": log_lines}, lines(ctx, app, log_lines))
    return 0


def lines(ctx: Context, app: dict[str, Any], log_lines: list[str]) -> list[str]:
    out = ctx.out
    state = out.paint(app["state"], STATE_COLOURS.get(app["state"]))
    title = app["name"] + (f" - {app['description']}" if app.get("description") else "")
    rows = [
        ("state", f"{state}{_pid(app)}{_since(app)}"),
        ("error", app.get("error")),
        ("command", app["command"]),
        ("cwd", app.get("cwd") or "- (the daemon's)"),
        ("source", app.get("source")),
        ("chord", app.get("chord")),
        ("restart", _restarts(app)),
        ("last exit", _last_exit(app.get("last_exit"))),
        ("lease", _lease(app.get("lease"))),
        ("log", app.get("log_path")),
    ]
    body = [out.paint(title, "bold")]
    # every fact has its row, "-" when it has no value (an error only when there is one)
    body += [f"  {key:<10} {'-' if value in (None, '') else value}" for key, value in rows
             if key != "error" or value]
    body += _processes(ctx, app.get("processes") or [])
    body += _history(ctx, app.get("history") or [])
    body.append(out.paint(f"last {len(log_lines)} lines of its log", "bold")
                if log_lines else out.paint("no output yet", "dim"))
    body += [f"  {line}" for line in log_lines]
    return body


def _pid(app: dict[str, Any]) -> str:
    return f" (pid {app['pid']})" if app.get("pid") else ""


def _since(app: dict[str, Any]) -> str:
    """``, up 3m02s since 12:03:04``: from its first launch (kept across daemon restarts)."""
    if app.get("uptime_secs") is None:
        return ""
    started = parse_time(app.get("started_at"))
    when = f" since {_clock(started)}" if started is not None else ""
    return f", up {duration(app['uptime_secs'])}{when}"


def _restarts(app: dict[str, Any]) -> str:
    count = app.get("restarts", 0)
    return f"{app.get('restart', 'never')}, restarted {count} time{'s' if count != 1 else ''}"


def _last_exit(last: dict[str, Any] | None) -> str | None:
    if not last:
        return None
    how = (f"killed by {last['signal']}" if last.get("signal")
           else f"status {last['code']}" if last.get("code") is not None else "status unknown")
    return f"{how} at {_clock(parse_time(last.get('at')))}"


def _lease(lease: dict[str, Any] | None) -> str | None:
    if not lease:
        return None
    left = duration(lease["expires_in_secs"])
    if lease.get("in_grace"):
        return f"unresponsive: {left} of its {duration(lease['grace_secs'])} grace left"
    return f"{duration(lease['lease_secs'])}, renew within {left}"


def _processes(ctx: Context, processes: list[dict[str, Any]]) -> list[str]:
    if not processes:
        return []
    rows = [[str(p["pid"]), f"{p['cpu_percent']:.1f}%", size(p["rss_bytes"])] for p in processes]
    return [ctx.out.paint("processes", "bold"),
            *(f"  {line}" for line in ctx.out.table(["PID", "CPU", "MEM"], rows))]


def _history(ctx: Context, history: list[dict[str, Any]]) -> list[str]:
    if not history:
        return []
    recent = history[-TRANSITIONS:]
    body = [ctx.out.paint(f"last {len(recent)} transitions", "bold")]
    for entry in recent:
        to = ctx.out.paint(entry["to"], STATE_COLOURS.get(entry["to"]))
        body.append(f"  {_clock(parse_time(entry['at']), ms=True)}  {entry['from']} -> {to} "
                    f"({entry['trigger']} by {entry['source']})")
    return body


def _clock(seconds: float | None, ms: bool = False) -> str:
    """Local time of day, with the date when it is not today."""
    if seconds is None:
        return "?"
    moment = datetime.fromtimestamp(seconds)
    text = moment.strftime("%H:%M:%S.%f")[:-3] if ms else moment.strftime("%H:%M:%S")
    if moment.date() != datetime.now().date():
        text = f"{moment:%Y-%m-%d} {text}"
    return text
