"""``orchestratr pipe``: the NDJSON protocol of the Koi reference over stdin and stdout.

One JSON request per line, one JSON response per line::

    {"launch": "notes"}                  -> {"launched": {"app": "notes", "state": ..., "pid": 42}}
    {"list": null}                       -> {"apps": [...]}
    {"subscribe": "*", "idle_for": 5}    -> {"event": {...}, "status": "ongoing"} ...
                                            {"subscribed": "*", "status": "finished"}
    {"stop": "nope"}                     -> {"error": "not_found", "message": "..."}
    {"publish": {"source", "type", "data"}}         -> {"published": {"id": N}}
    {"send": {"to", "from", "data", "launch"}}      -> {"sent": {"id", "delivered"}}
    {"inbox": "notes"}                   -> {"message": {...}, "status": "ongoing"} ...
                                            {"inbox": "notes", "status": "finished"}
    {"browse": "_http._tcp"}             -> {"found": {...}, "status": "ongoing"},
                                            {"removed": {...}, ...} ... then "finished"
    {"resolve": "notes-api"}             -> {"resolved": {...}}

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

from orchestratr.cli.verbs import ALL, ask_each
from orchestratr.client import (
    Client,
    Event,
    EventStream,
    NotRunningError,
    OrchestratrClientError,
)

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
        self._talk = Talk(self, client)
        self._verbs: dict[str, Callable[[Any, Reply], Reply | None]] = {
            "launch": self._launch,
            "stop": lambda value, _: self._on_each("stopped", value, client.stop),
            "restart": lambda value, _: self._on_each("restarted", value, client.restart),
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
            "publish": self._talk.publish,
            "send": self._talk.send,
            "inbox": self._talk.inbox,
            "browse": self._talk.browse,
            "resolve": lambda value, _: {"resolved": client.resolve(_text(value, "a service "
                                                                                 "name"))},
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

    def _launch(self, value: Any, options: Reply) -> Reply:
        if _several(value):
            return self._on_each("launched", value, lambda name: self._settle(
                self._client.launch(name), options))
        answer = _strip(self._settle(self._client.launch(_name(value)), options))
        reply: Reply = {"launched": answer}
        if answer.get("spawned") is False:
            reply["warning"] = f"{answer['app']} was already running; nothing was spawned"
        return reply

    def _on_each(self, key: str, value: Any, call: Callable[[str], Any]) -> Reply:
        """One app's answer, or, for a list of names or ``"all"`` (every app), a list of
        answers, one each, a failure as ``{"app", "error", "message"}`` (as the CLI's verbs
        take several names and ``all``)."""
        if not _several(value):
            return {key: _strip(call(_name(value)))}
        names = value if isinstance(value, list) else [value]
        if ALL not in names:
            names = [_name(name) for name in names]
        return {key: [_strip(answer) if isinstance(answer, dict) else
                      {"app": name, "error": answer.code or "error", "message": str(answer)}
                      for name, answer in ask_each(self._client, names, call)]}

    def _trigger(self, value: Any, options: Reply) -> Reply:
        if value is not None and not isinstance(value, str):
            raise ValueError("wants a chord (a string), or null for the leader")
        answer = self._client.trigger(value)
        return {"triggered": _strip(answer if value is None else self._settle(answer, options))}

    def _settle(self, answer: dict[str, Any], options: Reply) -> dict[str, Any]:
        """With ``"wait": true``, as the launch verb: the answer once the launch failed or the
        app outlived its first second (at most 2 s). Without, at once: a pipe's requests are
        answered in order, and a subscription on it already shows what follows."""
        from orchestratr.cli.verbs import settle_launch

        wait = options.get("wait", False)
        if not isinstance(wait, bool):
            raise ValueError("wait wants true or false")
        if not wait:
            return answer
        settled = settle_launch(self._client, answer)
        return {key: settled.get(key, value) for key, value in answer.items()}

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
        if target != "*":
            self._client.app(target)  # no such app: not_found, as `events --app` says
        idle_for = options.get("idle_for")
        if idle_for is not None and (not isinstance(idle_for, int | float) or idle_for <= 0):
            raise ValueError("idle_for wants a positive number of seconds")
        stream = self._client.open_events(
            () if target == "*" else (target,), _texts(options, "type"),
            idle_for=idle_for or 0, sources=_texts(options, "source"))
        self.follow(stream, idle_for is not None, _event_reply, {"subscribed": target})

    def follow(self, stream: EventStream, ends_by_itself: bool,
               reply: Callable[[Event], Reply | None], finished: Reply) -> None:
        """Relay ``stream`` from a thread: ``reply`` turns each event into a line (None: no
        line), ``finished`` (with its status) is the last. A stream that does not end by
        itself is closed at the end of input."""
        worker = threading.Thread(target=self._relay, daemon=True,
                                  args=(stream, not ends_by_itself, reply, finished))
        self._streams.append((stream, ends_by_itself, worker))
        worker.start()

    def _relay(self, stream: EventStream, unbounded: bool,
               reply: Callable[[Event], Reply | None], finished: Reply) -> None:
        for event in stream:
            line = reply(event)
            if line is not None:
                self.send({**line, "status": "ongoing"})
        last = {**finished, "status": "finished"}
        if unbounded and not stream.closed:
            last["warning"] = "the stream ended before the input did: the daemon went away"
        self.send(last)

    def _finish(self) -> None:
        """End of input: let idle-limited streams run out, finish the others now."""
        for stream, ends_by_itself, _ in self._streams:
            if not ends_by_itself:
                stream.close()
        for _, _, worker in self._streams:
            worker.join()


def _event_reply(event: Event) -> Reply:
    reply: Reply = {"event": event.record()}
    if event.type == "reset":
        reply["warning"] = "the daemon no longer held every event asked for; some were lost"
    return reply


def _texts(options: Reply, key: str) -> list[str]:
    """A filter given as one string or a list of them (``"type"``, ``"source"``)."""
    value = options.get(key) or []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"{key} wants a string or a list of strings")
    return values


def _several(value: Any) -> bool:
    """A list of app names, or ``"all"``."""
    return isinstance(value, list) or value == ALL


def _name(value: Any) -> str:
    return _text(value, "an app name")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"wants {what} (a string)")
    return value


def _idle_for(options: Reply) -> float | None:
    idle_for = options.get("idle_for")
    if idle_for is not None and (isinstance(idle_for, bool)
                                 or not isinstance(idle_for, int | float) or idle_for < 0):
        raise ValueError("idle_for wants a number of seconds (0: until the end of input)")
    return idle_for


class Talk:
    """The requests by which apps talk through the daemon (issue 15)."""

    def __init__(self, pipe: Pipe, client: Client) -> None:
        self._pipe = pipe
        self._client = client

    def publish(self, value: Any, _: Reply) -> Reply:
        if not isinstance(value, dict):
            raise ValueError('wants {"source": APP, "type": T, "data": {...}}')
        answer = self._client.publish(_text(value.get("source"), "a source app"),
                                      _text(value.get("type"), "a type"), value.get("data"))
        return {"published": answer}

    def send(self, value: Any, _: Reply) -> Reply:
        if not isinstance(value, dict):
            raise ValueError('wants {"to": APP, "from": APP, "data": ..., "launch": false}')
        launch = value.get("launch", False)
        if not isinstance(launch, bool):
            raise ValueError("launch wants true or false")
        sender = value.get("from")
        receiver = value.get("to", value.get("name", value.get("app")))  # any of the three
        answer = self._client.send(_text(receiver, "a receiver, as to"),
                                   value.get("data"), launch=launch,
                                   sender=None if sender is None else _text(sender, "an app"))
        return {"sent": answer}

    def inbox(self, value: Any, options: Reply) -> None:
        """The unread messages at once, then new ones as they come, until ``idle_for``
        seconds pass without one or, without it, until the end of input."""
        name = _name(value)
        idle_for = _idle_for(options)
        unread = self._client.messages(name)
        for message in unread:
            self._pipe.send({"message": message, "status": "ongoing"})
        stream = self._client.open_inbox(name, unread[-1]["id"] if unread else None,
                                         idle_for=idle_for or 0)
        self._pipe.follow(stream, bool(idle_for), _message_reply, {"inbox": name})

    def browse(self, value: Any, options: Reply) -> None:
        """Koi's browse: each live service as found, then found and removed, until
        ``idle_for`` seconds (default 5; 0: until the end of input) pass without a change."""
        type_ = _text(value, "a service type such as _http._tcp")
        idle_for = _idle_for(options)
        stream = self._client.browse(type_, idle_for)
        self._pipe.follow(stream, idle_for != 0, _change_reply, {"browsed": type_})


def _message_reply(event: Event) -> Reply | None:
    if event.type == "reset":
        return {"warning": "the inbox no longer held every message after the last one read"}
    return {"message": event.data} if event.type == "message" else None


def _change_reply(event: Event) -> Reply | None:
    return {event.type: event.data} if event.type in ("found", "removed") else None


def _error(code: str, message: str) -> Reply:
    return {"error": code, "message": message}
