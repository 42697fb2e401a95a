"""The verbs that are one or a few API calls: status, list, launch, stop, restart, reload,
trigger, pause, resume, register, unregister, heartbeat, drain, revive.

Each prints the API's answer as is under ``--json`` and a short sentence otherwise; errors are
raised as the client's exceptions and turned into exit codes by ``main``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestratr.cli.render import STATE_COLOURS, duration, parse_time, size
from orchestratr.supervisor.states import IDLE, MOVING, QUICK_EXIT_S, RUNNING, UP, AppState

if TYPE_CHECKING:
    from orchestratr.cli.main import Context
    from orchestratr.client import Client, OrchestratrClientError



def _in(app: dict[str, Any], states: tuple[AppState, ...]) -> bool:
    """Whether the app (as the API shows it) is in one of ``states``; a state this CLI does
    not know (a newer daemon's) is in none."""
    return app["state"] in {state.value for state in states}


# ------------------------------------------------------------------ status and list

def status(ctx: Context) -> int:
    client = ctx.client()
    health = client.health()
    data = {
        "status": health.get("status"),
        "version": health.get("version"),
        **_daemon_identity(client, health),
        "config_dir": str(client.config_dir),
        "config_errors": health.get("config_errors", 0),
        "hotkeys": client.hotkeys(),
        "apps": _counts(client.apps()),
    }
    ctx.out.result(data, _status_lines(ctx, data))
    return 0


def _daemon_identity(client: Client, health: dict[str, Any]) -> dict[str, Any]:
    """pid, port and uptime, as the daemon itself tells them."""
    started = parse_time(health.get("started_at"))
    uptime = None if started is None else round(max(0.0, time.time() - started), 3)
    return {"pid": health.get("pid"), "port": client.address()[1], "uptime_secs": uptime}


def _counts(apps: list[dict[str, Any]]) -> dict[str, Any]:
    by_state = Counter(app["state"] for app in apps)
    return {"total": len(apps), "by_state": dict(sorted(by_state.items()))}


def _status_lines(ctx: Context, data: dict[str, Any]) -> list[str]:
    out = ctx.out
    pid = data["pid"] if data["pid"] is not None else "?"
    up = f", up {duration(data['uptime_secs'])}" if data["uptime_secs"] is not None else ""
    daemon = (f"{out.paint('running', 'green')} (pid {pid}, port {data['port']}, "
              f"version {data['version']}{up})")
    counts = data["apps"]
    states = ", ".join(f"{n} {out.paint(s, STATE_COLOURS.get(s))}"
                       for s, n in counts["by_state"].items())
    apps = f"{counts['total']}" + (f" ({states})" if states else "")
    config = data["config_dir"]
    if errors := data["config_errors"]:
        count = f"{errors} error" + ("s" if errors != 1 else "")
        config = (f"{out.paint('rejected', 'red')}, {count} — run `orchestratr reload` to "
                  f"see them ({config})")
    rows = [("daemon", daemon), ("config", config),
            ("hotkeys", _hotkeys_text(ctx, data["hotkeys"])), ("apps", apps)]
    return [f"{key}: {value}" for key, value in rows]  # "config: rejected, 2 errors — ..."


def _hotkeys_text(ctx: Context, hotkeys: dict[str, Any]) -> str:
    if not hotkeys.get("enabled"):
        return f"{ctx.out.paint('off', 'yellow')} ({hotkeys.get('reason') or 'not running'})"
    if hotkeys.get("paused"):
        return f"{ctx.out.paint('paused', 'yellow')} (leader {hotkeys.get('leader')})"
    grab = "keys grabbed" if hotkeys.get("suppressing") else "keys observed, not grabbed"
    return (f"{ctx.out.paint('on', 'green')} (leader {hotkeys.get('leader')}, "
            f"{hotkeys.get('backend')}, {grab})")


def list_apps(ctx: Context) -> int:
    client = ctx.client()
    apps = client.apps()
    if ctx.args.wide:
        apps = [_with_usage(client, app) for app in apps]
    if ctx.out.json_mode or not apps:
        ctx.out.result(apps, "no apps registered (add them to config.yml or apps.d/)")
        return 0
    now = time.time()
    wide = ["CPU", "MEM"] if ctx.args.wide else []
    headers = ["NAME", "CHORD", "STATE", "PID", "UPTIME", "RESTARTS", *wide, "SOURCE", "ERROR"]
    rows = [_app_row(app, now, ctx.args.wide) for app in apps]
    colours = [[None, None, STATE_COLOURS.get(app["state"]), *[None] * (len(headers) - 4), "red"]
               for app in apps]
    for line in ctx.out.table(headers, rows, colours):
        ctx.out.line(line)
    return 0


def _with_usage(client: Client, app: dict[str, Any]) -> dict[str, Any]:
    """The app with its ``processes`` (from its details), when it has any."""
    from orchestratr.client import OrchestratrClientError

    if not _in(app, UP):
        return {**app, "processes": []}
    try:
        return {**app, "processes": client.app(app["name"])["processes"]}
    except OrchestratrClientError:  # gone meanwhile
        return {**app, "processes": []}


def _app_row(app: dict[str, Any], now: float, wide: bool = False) -> list[str]:
    source = app.get("source") or "-"
    if app.get("removed"):
        source += " (removed)"
    error = " ".join((app.get("error") or "").split())  # one line, whatever the message holds
    usage = usage_cells(app.get("processes") or []) if wide else []
    return [app["name"], app.get("chord") or "-", app["state"],
            str(app["pid"]) if app.get("pid") else "-", uptime(app, now),
            str(app.get("restarts", 0)), *usage, source, error]


def uptime(app: dict[str, Any], now: float) -> str:
    """Since its process started (kept across a daemon restart), while one runs."""
    started = parse_time(app.get("started_at") or app.get("launched_at"))
    return duration(now - started) if started and _in(app, UP) else "-"


def usage_cells(processes: list[dict[str, Any]]) -> list[str]:
    """CPU and MEM of an app's processes together: ``1.5%``, ``12.3M``; ``-`` with none."""
    if not processes:
        return ["-", "-"]
    cpu = sum(p["cpu_percent"] for p in processes)
    return [f"{cpu:.1f}%", size(sum(p["rss_bytes"] for p in processes))]


# ------------------------------------------------------------------ commands

POLL_S = 0.05


@dataclass(frozen=True)
class Command:
    """A command on one app: ``act`` asks the daemon; ``settle`` makes the answer final (waits,
    when asked to) and says it in a line, or raises the app's failure."""

    act: Callable[[Client, str], dict[str, Any]]
    settle: Callable[[Context, Client, dict[str, Any]], tuple[dict[str, Any], str]]


def launch(ctx: Context) -> int:
    return each(ctx, Command(lambda client, name: client.launch(name), _launched))


def _launched(ctx: Context, client: Client, answer: dict[str, Any]) -> tuple[dict[str, Any], str]:
    answer = settle_launch(client, answer, not ctx.args.no_wait, ctx.args.timeout)
    return answer, _ack_text(ctx, answer, verb="launched")


def settle_launch(
    client: Client, answer: dict[str, Any], wait: bool = True, timeout_s: float = 2.0
) -> dict[str, Any]:
    """With ``wait``, wait (at most ``timeout_s``) until a launch that spawned has failed or
    the app has outlived its first second: a missing command must not read as launched (the
    ``launch`` and ``trigger`` verbs, and the pipe's).

    Raises:
        OrchestratrClientError: ``launch_failed``, with the app's error.
    """
    from orchestratr.client import OrchestratrClientError

    if answer.get("spawned") and wait:
        answer = _settled(client, answer, timeout_s)
        if answer["state"] == AppState.failed.value:
            raise OrchestratrClientError(f"{answer['app']} failed to launch: "
                                         f"{answer.get('error')}", code="launch_failed")
    return answer


def _settled(client: Client, answer: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The launch answer, updated with the app's state once it has failed, run QUICK_EXIT_S, or
    ``timeout_s`` is over."""
    deadline = time.monotonic() + timeout_s
    while True:
        app = client.app(answer["app"])
        started = parse_time(app.get("launched_at"))
        up = time.time() - started if started is not None else 0.0
        if (_in(app, IDLE) or time.monotonic() >= deadline
                or (_in(app, RUNNING) and up >= QUICK_EXIT_S)):
            return {**answer, "state": app["state"], "pid": app["pid"], "error": app["error"]}
        time.sleep(POLL_S)


def stop(ctx: Context) -> int:
    return each(ctx, Command(lambda client, name: client.stop(name), _stopped))


def _stopped(ctx: Context, client: Client, answer: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if ctx.args.wait:
        answer = _wait(client, answer, lambda app: _in(app, IDLE))
    return answer, _ack_text(ctx, answer)


def restart(ctx: Context) -> int:
    """The daemon answers at once: while the old process is still stopping, the answer says
    ``stopping`` and the relaunch follows. ``--wait`` waits for it."""
    return each(ctx, Command(lambda client, name: client.restart(name), _restarted))


def _restarted(
    ctx: Context, client: Client, answer: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    old = answer.get("pid")
    if ctx.args.wait and _in(answer, MOVING):  # else the answer is the new run already
        answer = _wait(client, answer, lambda app: _in(app, (AppState.failed,)) or (
            _in(app, RUNNING) and app["pid"] != old))
    if _in(answer, (AppState.stopping,)):
        return answer, f"restarting {answer['app']}: stopping pid {old}, then launching it again"
    return answer, _ack_text(ctx, answer, verb="restarted")


def each(ctx: Context, command: Command) -> int:
    """Run ``command`` on every NAME (``all``: every app): each is asked first, then each
    answer settled, one line each; exit 1 if any failed. One NAME answers as it always did
    (its error is the command's, and ``--json`` prints its answer alone)."""
    client = ctx.client()
    names = ctx.args.names
    if names == [names[0]] and names[0] != ALL:
        answer, text = command.settle(ctx, client, command.act(client, names[0]))
        ctx.out.result(answer, text)
        return 0
    asked = ask_each(client, names, lambda name: command.act(client, name))
    results = [_result(ctx, client, command, name, answer) for name, answer in asked]
    if ctx.out.json_mode:
        ctx.out.json([result for result, _ in results])
    return 0 if all(ok for _, ok in results) else 1


def ask_each(
    client: Client, names: list[str], act: Callable[[str], dict[str, Any]]
) -> list[tuple[str, dict[str, Any] | OrchestratrClientError]]:
    """``act`` on each name once, in order (``all``: every app), the CLI's and the pipe's:
    an app's refusal is its answer, the daemon not running ends them all."""
    from orchestratr.client import NotRunningError, OrchestratrClientError

    if ALL in names:
        names = [app["name"] for app in client.apps()]
    asked: list[tuple[str, dict[str, Any] | OrchestratrClientError]] = []
    for name in dict.fromkeys(names):
        try:
            asked.append((name, act(name)))
        except NotRunningError:
            raise
        except OrchestratrClientError as exc:
            asked.append((name, exc))
    return asked


def _result(
    ctx: Context, client: Client, command: Command, name: str,
    answer: dict[str, Any] | OrchestratrClientError,
) -> tuple[dict[str, Any], bool]:
    """One app's result and whether it succeeded, its line printed (a failure's on stderr)."""
    from orchestratr.cli.main import error_text
    from orchestratr.client import NotRunningError, OrchestratrClientError

    if isinstance(answer, dict):
        try:
            answer, text = command.settle(ctx, client, answer)
        except NotRunningError:
            raise
        except OrchestratrClientError as exc:
            answer = exc
        else:
            if not ctx.out.json_mode:
                ctx.out.line(text)
            return answer, True
    if not ctx.out.json_mode:
        ctx.out.note(f"orchestratr: {name}: {error_text(ctx, answer, name)}")
    return {"app": name, "error": str(answer), "code": answer.code or "error"}, False


ALL = "all"
WAIT_TIMEOUT_S = 60.0


def _wait(
    client: Client, answer: dict[str, Any], done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the app until ``done``; the answer is then shaped as the command's own was."""
    from orchestratr.client import OrchestratrClientError

    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while True:
        app = client.app(answer["app"])
        if done(app):
            return {"app": app["name"], "state": app["state"], "pid": app["pid"], "status": "ok"}
        if time.monotonic() > deadline:
            raise OrchestratrClientError(
                f"{answer['app']} is still {app['state']} after {WAIT_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def trigger(ctx: Context) -> int:
    """A chord launches as ``launch`` does: a launch that fails says so and exits 1."""
    client = ctx.client()
    answer = client.trigger(ctx.args.chord)
    if ctx.args.chord is None:
        ctx.out.result(answer, "leader pressed: the next chord key launches its app")
        return 0
    answer, text = _launched(ctx, client, answer)
    ctx.out.result(answer, text)
    return 0


def _ack(ctx: Context, answer: dict[str, Any], verb: str | None = None) -> int:
    ctx.out.result(answer, _ack_text(ctx, answer, verb))
    return 0


def _ack_text(ctx: Context, answer: dict[str, Any], verb: str | None = None) -> str:
    """``launched notes (pid 4242)``, ``notes is already running (pid 4242, ready)``, ..."""
    name, state, pid = answer["app"], answer["state"], answer.get("pid")
    with_pid = f" (pid {pid})" if pid else ""
    if answer.get("spawned") is False and _in(answer, UP):
        text = f"{name} is already running (pid {pid}, {state})"
        if "focused" in answer:
            text += ("; window raised" if answer["focused"]
                     else f"; no window raised: {answer.get('reason')}")
    elif answer.get("spawned") is False and answer.get("focused"):
        text = f"{name}: its window was raised (window: match; nothing launched)"
    elif verb is not None:
        text = f"{verb} {name}{with_pid}"
    else:
        text = f"{name}: {ctx.out.paint(state, STATE_COLOURS.get(state))}{with_pid}"
    return text


def reload(ctx: Context) -> int:
    answer = ctx.client().reload()
    lines = [f"reloaded: {len(answer.get('apps', []))} apps"]
    lines += [f"warning: {w}" for w in answer.get("warnings", [])]
    lines += [f"skipped: {s}" for s in answer.get("skipped", [])]
    ctx.out.result(answer, lines)
    return 0


def pause(ctx: Context) -> int:
    answer = ctx.client().pause_hotkeys()
    ctx.out.result(answer, f"hotkeys: {_hotkeys_text(ctx, answer)}")
    return 0


def resume(ctx: Context) -> int:
    answer = ctx.client().resume_hotkeys()
    ctx.out.result(answer, f"hotkeys: {_hotkeys_text(ctx, answer)}")
    return 0


# ------------------------------------------------------------------ run-time apps

def register(ctx: Context) -> int:
    args = ctx.args
    manifest = _manifest(args)
    answer = ctx.client().register(manifest, lease_secs=args.lease)
    lease = f", lease {args.lease}s" if args.lease else ""
    warnings = [f"warning: {w}" for w in answer.get("warnings") or []]
    ctx.out.result(answer, [f"registered {args.name}{lease}", *warnings])
    return 0


def _manifest(args: Any) -> dict[str, Any]:
    """The apps.d fields given on the command line (unset ones are left to the daemon)."""
    from orchestratr.cli.main import UsageError

    env = {}
    for pair in args.env:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    fields = {
        "name": args.name, "command": args.command, "chord": args.chord,
        "description": args.description, "ready_cmd": args.ready_cmd, "cwd": args.cwd,
        "restart": args.restart, "autostart": args.autostart, "detached": args.detached,
        "env": env or None,
    }
    return {key: value for key, value in fields.items() if value is not None}


def unregister(ctx: Context) -> int:
    answer = ctx.client().unregister(ctx.args.name, keep_running=ctx.args.keep_running)
    kept = " (its process keeps running)" if ctx.args.keep_running else ""
    ctx.out.result(answer, f"unregistered {ctx.args.name}{kept}")
    return 0


def drain(ctx: Context) -> int:
    return _ack(ctx, ctx.client().drain(ctx.args.name))


def revive(ctx: Context) -> int:
    return _ack(ctx, ctx.client().revive(ctx.args.name))


def heartbeat(ctx: Context) -> int:
    """One renewal, or with --every one per period until interrupted or refused."""
    client = ctx.client()
    every = ctx.args.every
    if every is not None and every <= 0:
        from orchestratr.cli.main import UsageError

        raise UsageError("--every wants a positive number of seconds")
    while True:
        answer = client.heartbeat(ctx.args.name)
        text = f"renewed {ctx.args.name}: expires in {duration(answer['expires_in_secs'])}"
        if every is None:
            ctx.out.result(answer, text)
            return 0
        if ctx.out.json_mode:
            ctx.out.json(answer, compact=True)
        else:
            ctx.out.line(text)
        time.sleep(every)
