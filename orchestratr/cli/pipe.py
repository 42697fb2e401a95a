"""``orchestratr pipe``: the NDJSON protocol of the Koi reference over stdin and stdout.

One JSON request per line, one JSON response per line::

    {"launch": "notes"}                  -> {"launched": {"app": "notes", "state": ..., "pid": 42}}
    {"list": null}                       -> {"apps": [...]}
    {"subscribe": "*", "idle_for": 5}    -> {"event": {...}, "status": "ongoing"} ...
                                            {"subscribed": "*", "status": "finished"}
    {"stop": "nope"}                     -> {"error": "not_found", "message": "..."}

Only streaming responses carry ``status``; ``warning`` appears only when there is something to
warn about. Requests are answered in order, while subscriptions stream from their own threads,
so a script can subscribe to an app and then launch it on the same pipe. A malformed line gets
an error line and the pipe goes on. At end of input, subscriptions with an ``idle_for`` run
until it elapses, the others are finished at once, and the pipe exits 0.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from orchestratr.client import Client, EventStream, NotRunningError, OrchestratrClientError

if TYPE_CHECKING:
    from orchestratr.cli.main import Context

Reply = dict[str, Any]


def run(ctx: Context) -> int:
    return Pipe(ctx.client(), sys.stdin, sys.stdout).serve()


def _strip(answer: Any) -> Any:
    """An API answer without its ``"status": "ok"``: in the pipe, status means streaming."""
    if isinstance(answer, dict):
        return {k: v for k, v in answer.items() if k != "status"}
    return answer


class Pipe:
    def __init__(self, client: Client, requests: TextIO, responses: TextIO) -> None:
        self._client = client
        self._in = requests
        self._out = responses
        self._write_lock = threading.Lock()
        self._streams: list[tuple[EventStream, bool, threading.Thread]] = []
        self._verbs: dict[str, Callable[[Any, Reply], Reply | None]] = {
            "launch": self._launch,
            "stop": self._named("stopped", client.stop),
            "restart": self._named("restarted", client.restart),
            "ready": self._named("ready", client.notify_ready),
            "heartbeat": self._heartbeat,
            "drain": self._named("drained", client.drain),
            "revive": self._named("revived", client.revive),
            "list": lambda _, __: {"apps": client.apps()},
            "register": self._register,
            "unregister": self._unregister,
            "reload": lambda _, __: {"reloaded": _strip(client.reload())},
            "trigger": self._trigger,
            "subscribe": self._subscribe,
        }

    def serve(self) -> int:
        for number, line in enumerate(iter(self._in.readline, ""), start=1):
            if line.strip():
                reply = self.handle(line, number)
                if reply is not None:
                    self.send(reply)
        self._finish()
        return 0

    def send(self, reply: Reply) -> None:
        with self._write_lock:
            self._out.write(json.dumps(reply) + "\n")
            self._out.flush()

    def handle(self, line: str, number: int) -> Reply | None:
        """The answer to one request line (None: a subscription answers on its own)."""
        try:
            request = json.loads(line)
        except ValueError as exc:
            return _error("bad_request", f"line {number}: not JSON: {exc}")
        verbs = [key for key in request if key in self._verbs] if isinstance(request, dict) else []
        if len(verbs) != 1:
            return _error("bad_request", f"line {number}: expected an object with one of "
                                         f"{', '.join(self._verbs)}")
        verb = verbs[0]
        options = {k: v for k, v in request.items() if k != verb}
        try:
            return self._verbs[verb](request[verb], options)
        except ValueError as exc:
            return _error("bad_request", f"line {number}: {verb}: {exc}")
        except NotRunningError as exc:
            return _error("not_running", str(exc))
        except OrchestratrClientError as exc:
            reply = _error(exc.code or "error", str(exc))
            if exc.errors:
                reply["errors"] = exc.errors
            return reply

    # ------------------------------------------------------------ requests

    def _named(self, key: str, call: Callable[[str], Any]) -> Callable[[Any, Reply], Reply]:
        return lambda value, _: {key: _strip(call(_name(value)))}

    def _launch(self, value: Any, _: Reply) -> Reply:
        answer = _strip(self._client.launch(_name(value)))
        reply: Reply = {"launched": answer}
        if answer.get("spawned") is False:
            reply["warning"] = f"{answer['app']} was already running; nothing was spawned"
        return reply

    def _trigger(self, value: Any, _: Reply) -> Reply:
        if value is not None and not isinstance(value, str):
            raise ValueError("wants a chord (a string), or null for the leader")
        return {"triggered": _strip(self._client.trigger(value))}

    def _heartbeat(self, value: Any, _: Reply) -> Reply:
        answer = self._client.heartbeat(_name(value))
        return {"renewed": {"name": answer.get("renewed"),
                            "expires_in_secs": answer.get("expires_in_secs")}}

    def _register(self, value: Any, _: Reply) -> Reply:
        if not isinstance(value, dict):
            raise ValueError("wants a manifest object, e.g. {\"name\": ..., \"command\": ...}")
        manifest = {k: v for k, v in value.items() if k != "lease_secs"}
        answer = self._client.register(manifest, lease_secs=value.get("lease_secs"))
        return {"registered": _strip(answer)}

    def _unregister(self, value: Any, options: Reply) -> Reply:
        name = _name(value)
        self._client.unregister(name, keep_running=bool(options.get("keep_running")))
        return {"removed": name}

    def _subscribe(self, value: Any, options: Reply) -> None:
        """Stream events of one app (or ``"*"``) from a thread; ``idle_for`` seconds without
        an event end the stream, otherwise it runs until the end of input."""
        target = _name(value)
        idle_for = options.get("idle_for")
        if idle_for is not None and (not isinstance(idle_for, int | float) or idle_for <= 0):
            raise ValueError("idle_for wants a positive number of seconds")
        types = options.get("type") or ()
        stream = self._client.open_events(
            () if target == "*" else (target,), [types] if isinstance(types, str) else types,
            idle_for=idle_for or 0)
        worker = threading.Thread(target=self._relay, args=(target, stream, idle_for is None),
                                  daemon=True)
        self._streams.append((stream, idle_for is not None, worker))
        worker.start()

    def _relay(self, target: str, stream: EventStream, unbounded: bool) -> None:
        for event in stream:
            reply: Reply = {"event": event.record(), "status": "ongoing"}
            if event.type == "reset":
                reply["warning"] = "the daemon no longer held every event asked for; some were lost"
            self.send(reply)
        reply = {"subscribed": target, "status": "finished"}
        if unbounded and not stream.closed:
            reply["warning"] = "the stream ended before the input did: the daemon went away"
        self.send(reply)

    def _finish(self) -> None:
        """End of input: let idle-limited streams run out, finish the others now."""
        for stream, ends_by_itself, _ in self._streams:
            if not ends_by_itself:
                stream.close()
        for _, _, worker in self._streams:
            worker.join()


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("wants an app name (a string)")
    return value


def _error(code: str, message: str) -> Reply:
    return {"error": code, "message": message}
