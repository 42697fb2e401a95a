"""A client for orchestratr's HTTP API, for apps in Python and for the CLI.

Standard library only: an app may copy this one file into its own tree. It finds the daemon
through the port file the daemon writes after binding, so nobody hard-codes a port::

    from orchestratr import client

    client.notify_launched("notes", pid=os.getpid())
    client.notify_ready("notes")

Apps talk to each other through it too: ``publish`` an event, ``send`` a message to another
app's inbox (launching it if asked), read your own with ``inbox``, and find the services other
apps offer with ``services``, ``resolve`` and ``browse``.

Every call returns the parsed JSON answer, or raises :class:`OrchestratrClientError` (or its
subclass :class:`NotRunningError` when no daemon answers).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit

__all__ = [
    "Client",
    "Event",
    "EventStream",
    "NotRunningError",
    "OrchestratrClientError",
    "apps",
    "browse",
    "declare_services",
    "default_config_dir",
    "health",
    "inbox",
    "launch",
    "notify_launched",
    "notify_ready",
    "notify_stopped",
    "platform_config_dir",
    "publish",
    "resolve",
    "send",
    "services",
    "stop",
    "xdg_config_home",
]

CONFIG_DIR_ENV = "ORCHESTRATR_CONFIG_DIR"
URL_ENV = "ORCHESTRATR_URL"
DEFAULT_TIMEOUT_S = 5.0


class OrchestratrClientError(Exception):
    """orchestratr answered an error, or could not be reached.

    ``status`` is the HTTP status (None when there was no answer), ``code`` the API's
    machine-readable error code, such as ``not_found`` or ``invalid_transition``, and ``errors``
    the list of problems an ``invalid_config`` answer carries.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        errors: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.errors = errors or []


class NotRunningError(OrchestratrClientError):
    """No daemon answers: there is no port file, or nothing listens on its port."""


def default_config_dir() -> Path:
    """The daemon's config dir, as the daemon computes it (platformdirs' user config dir)."""
    chosen = os.environ.get(CONFIG_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    return platform_config_dir()


def platform_config_dir() -> Path:
    """The platform's user config dir for orchestratr, whatever the environment overrides."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "orchestratr" / "orchestratr"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "orchestratr"
    return xdg_config_home() / "orchestratr"


def xdg_config_home() -> Path:
    """Where per-user configuration lives on Linux and other XDG desktops."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base).expanduser()


class Client:
    """One daemon, found by ``url``, else ``$ORCHESTRATR_URL``, else the port file.

    The port file is read on every request, so a client outlives daemon restarts even when the
    daemon comes back on another port.
    """

    def __init__(
        self,
        url: str | None = None,
        config_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        # An explicit config dir names one daemon: a stray $ORCHESTRATR_URL must not win over it.
        self._url = url or (None if config_dir is not None else os.environ.get(URL_ENV)) or None
        self._config_dir = (
            Path(config_dir).expanduser().absolute() if config_dir is not None else None)
        self.timeout = timeout

    @property
    def url(self) -> str | None:
        """The explicit address, when the daemon is not found through the port file."""
        return self._url

    @property
    def config_dir(self) -> Path:
        return self._config_dir or default_config_dir()

    @property
    def port_file(self) -> Path:
        return self.config_dir / "port"

    @property
    def pid_file(self) -> Path:
        """Holds the daemon's pid while it runs (it doubles as the daemon's lock)."""
        return self.config_dir / "orchestratr.pid"

    def daemon_pid(self) -> int | None:
        """The pid in the pid file, or None (no file, not a number, or an explicit URL)."""
        if self._url:
            return None
        try:
            return int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the daemon. Raises NotRunningError when it cannot be known."""
        if self._url:
            parts = urlsplit(self._url)
            return parts.hostname or "127.0.0.1", parts.port or 80
        try:
            text = self.port_file.read_text(encoding="ascii")
        except FileNotFoundError:
            raise NotRunningError(f"orchestratr is not running (no {self.port_file})") from None
        except OSError as exc:
            raise NotRunningError(f"cannot read {self.port_file}: {exc}") from None
        try:
            return "127.0.0.1", int(text.strip())
        except ValueError:
            raise NotRunningError(f"{self.port_file} does not hold a port number") from None

    def daemon_alive(self) -> bool:
        """Does the pid file name a live process? (The API may still be starting or stuck.)"""
        pid = self.daemon_pid()
        if pid is None or sys.platform == "win32":  # os.kill(pid, 0) terminates on Windows
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, though not ours
        return True

    # ------------------------------------------------------------ endpoints

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def apps(self) -> list[dict[str, Any]]:
        # A daemon with no apps at all has answered an empty body (its /apps cache starts as
        # an empty key with an empty body): that is no apps, not an error.
        return self.request("GET", "/apps") or []

    def app(self, name: str) -> dict[str, Any]:
        """One app with its recent transition history."""
        return self.request("GET", _app_path(name))

    def state(self, name: str) -> dict[str, Any]:
        return self.request("GET", _app_path(name, "state"))

    def notify_launched(
        self, name: str, pid: int | None = None, services: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Tell orchestratr the app started; with ``pid``, orchestratr tracks that process;
        with ``services`` (``[{"name", "type", "port", "txt"}]``), that is what it offers."""
        body: dict[str, Any] = {} if pid is None else {"pid": pid}
        if services is not None:
            body["services"] = services
        return self.request("POST", _app_path(name, "launched"), body)

    def notify_ready(self, name: str) -> dict[str, Any]:
        return self.request("POST", _app_path(name, "ready"), {})

    def notify_stopped(self, name: str) -> dict[str, Any]:
        return self.request("POST", _app_path(name, "stopped"), {})

    def launch(self, name: str) -> dict[str, Any]:
        """Launch the app, or return the running instance (``spawned`` is false then)."""
        return self.request("POST", _app_path(name, "launch"), {})

    def stop(self, name: str) -> dict[str, Any]:
        return self.request("POST", _app_path(name, "stop"), {})

    def restart(self, name: str) -> dict[str, Any]:
        return self.request("POST", _app_path(name, "restart"), {})

    def reload(self) -> dict[str, Any]:
        return self.request("POST", "/reload", {})

    def trigger(self, chord: str | None = None) -> dict[str, Any]:
        """Launch the app on ``chord``; without one, act as a leader-key press."""
        return self.request("POST", "/trigger", {} if chord is None else {"chord": chord})

    def hotkeys(self) -> dict[str, Any]:
        return self.request("GET", "/hotkeys")

    def pause_hotkeys(self) -> dict[str, Any]:
        """Release every key grab until :meth:`resume_hotkeys`."""
        return self.request("POST", "/hotkeys/pause", {})

    def resume_hotkeys(self) -> dict[str, Any]:
        return self.request("POST", "/hotkeys/resume", {})

    def register(self, manifest: dict[str, Any], lease_secs: int | None = None) -> dict[str, Any]:
        """Add an app at run time (the fields of an apps.d manifest). With ``lease_secs`` the
        app must :meth:`heartbeat` within that many seconds or it is taken as gone."""
        body = dict(manifest) if lease_secs is None else {**manifest, "lease_secs": lease_secs}
        return self.request("POST", "/apps", body)

    def unregister(self, name: str, keep_running: bool = False) -> dict[str, Any]:
        """Remove an app; its process is stopped unless ``keep_running``."""
        query = "?keep_running=true" if keep_running else ""
        return self.request("DELETE", _app_path(name) + query)

    def heartbeat(self, name: str) -> dict[str, Any]:
        """Renew the app's lease: ``{"renewed": name, "expires_in_secs": N}``."""
        return self.request("PUT", _app_path(name, "heartbeat"), {})

    def drain(self, name: str) -> dict[str, Any]:
        return self.request("POST", _app_path(name, "drain"), {})

    def revive(self, name: str) -> dict[str, Any]:
        return self.request("POST", _app_path(name, "revive"), {})

    def events(
        self,
        since: int = 0,
        limit: int | None = None,
        apps: Iterable[str] = (),
        types: Iterable[str] = (),
        sources: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """Buffered events after id ``since`` (0: all), oldest first, each ``{"id", "type",
        "data"}``; first a ``reset`` entry if some of them are no longer buffered."""
        query = [("since", str(since))] + [("app", a) for a in apps]
        query += [("type", t) for t in types] + [("source", s) for s in sources]
        if limit is not None:
            query.append(("limit", str(limit)))
        return self.request("GET", "/events?" + urlencode(query))

    def open_events(
        self,
        apps: Iterable[str] = (),
        types: Iterable[str] = (),
        last_event_id: int | None = None,
        idle_for: float | None = None,
        sources: Iterable[str] = (),
    ) -> EventStream:
        """Open the live event stream (SSE). After ``last_event_id`` the daemon first replays
        what followed it; ``idle_for`` seconds without an event end the stream (0: never)."""
        query = [("app", a) for a in apps] + [("type", t) for t in types]
        query += [("source", s) for s in sources]
        if idle_for is not None:
            query.append(("idle_for", str(idle_for)))
        return self._stream("/events/stream" + ("?" + urlencode(query) if query else ""),
                            last_event_id)

    def logs(self, name: str, lines: int | None = None) -> dict[str, Any]:
        """The app's last ``lines`` lines of output (the daemon's default: 100):
        ``{"app", "path", "lines"}``."""
        query = "" if lines is None else f"?lines={lines}"
        return self.request("GET", _app_path(name, "logs") + query)

    def open_logs(self, name: str, lines: int = 0) -> EventStream:
        """Follow the app's output, after its last ``lines`` lines: ``line`` events
        (``{"line", "at"}``), and a ``launch`` event (``{"command", "at"}``) where a run
        starts. The stream outlives the app's restarts."""
        return self._stream(_app_path(name, "logs") + f"?follow=true&lines={lines}")

    def follow_events(
        self,
        apps: Iterable[str] = (),
        types: Iterable[str] = (),
        since: int | None = None,
        on_wait: Callable[[str], None] | None = None,
        retry_s: float = 0.1,
        sources: Iterable[str] = (),
        wait: bool = False,
    ) -> Iterator[Event]:
        """Every event from now (or after id ``since``) on, for as long as the caller iterates.

        A dropped connection is resumed with ``Last-Event-ID`` so no event is lost; while the
        daemon is away the stream waits for it (``on_wait`` hears why, once per outage). A new
        daemon (a new pid in the pid file) is read from its first event. Raises NotRunningError
        if no daemon answers at the first attempt (with ``wait``, it waits for one as for a
        daemon that went away), OrchestratrClientError if one refuses.
        """
        apps, types, sources = tuple(apps), tuple(types), tuple(sources)
        last_id, known_pid, connected, waiting = since, self.daemon_pid(), False, False
        while True:
            try:
                pid = self.daemon_pid()
                if connected and pid != known_pid:
                    last_id, known_pid = 0, pid  # a new daemon: its first event is news
                stream = self.open_events(apps, types, last_id, idle_for=0, sources=sources)
            except OrchestratrClientError as exc:
                if exc.status is not None or not (connected or wait):  # it said no, or none yet
                    raise
                if on_wait is not None and not waiting:
                    on_wait(str(exc))
                waiting = True
                if not connected and last_id is None:
                    last_id = 0  # the daemon still to come: read it from its first event
                time.sleep(retry_s)
                continue
            if self.daemon_pid() != pid:  # it restarted as we connected: start over
                stream.close()
                continue
            connected, waiting = True, False
            with stream:
                for event in stream:
                    if event.id is not None:
                        last_id = event.id
                    yield event

    # ------------------------------------------------------------ apps talking

    def publish(self, source: str, type: str, data: dict[str, Any] | None = None
                ) -> dict[str, Any]:
        """Publish an event as app ``source`` (registered): every reader of the event stream
        filtering on its type or source gets it. Returns ``{"id": N}``."""
        return self.request("POST", "/events",
                            {"source": source, "type": type, "data": data or {}})

    def send(self, name: str, data: Any = None, sender: str | None = None,
             launch: bool = False) -> dict[str, Any]:
        """Post a message to app ``name``'s inbox, as app ``sender``. With ``launch``, a
        stopped receiver is launched for it. Returns ``{"id", "delivered"}`` (the readers
        it reached at once), plus ``"launched": true`` when the receiver was launched."""
        body: dict[str, Any] = {"data": {} if data is None else data, "launch": launch}
        if sender is not None:
            body["from"] = sender
        return self.request("POST", _app_path(name, "message"), body)

    def messages(self, name: str, since: int | None = None) -> list[dict[str, Any]]:
        """The inbox's messages after id ``since`` (None: those no reader was sent yet,
        which are then read), each ``{"id", "from", "data", "at"}``."""
        query = "?poll=true" + ("" if since is None else f"&since={since}")
        return self.request("GET", _app_path(name, "messages") + query)

    def open_inbox(self, name: str, last_event_id: int | None = None,
                   idle_for: float | None = None) -> EventStream:
        """App ``name``'s inbox as a live stream (SSE) of ``message`` events: after
        ``last_event_id``, or, without one, from the first message no reader was sent."""
        query = "" if idle_for is None else f"?idle_for={idle_for}"
        return self._stream(_app_path(name, "messages") + query, last_event_id)

    def inbox(self, name: str, since: int | None = None, retry_s: float = 0.1
              ) -> Iterator[dict[str, Any]]:
        """Every message to ``name`` from now on (after id ``since``; None: starting with the
        unread ones), as ``{"id", "from", "data", "at"}``, for as long as the caller iterates.
        A dropped connection is resumed after the last id received, also while the daemon
        restarts (raises NotRunningError if none answers at first)."""
        last_id, connected = since, False
        while True:
            try:
                stream = self.open_inbox(name, last_id, idle_for=0)
            except OrchestratrClientError as exc:
                if not connected or exc.status is not None:
                    raise
                time.sleep(retry_s)
                continue
            connected = True
            with stream:
                for event in stream:
                    if event.id is not None:
                        last_id = event.id
                    if event.type == "message":
                        yield event.data

    def services(self, type: str | None = None) -> list[dict[str, Any]]:
        """The live services (of ``type``, like ``_http._tcp``), each ``{"name", "type",
        "app", "host", "port", "txt"}``."""
        query = "" if type is None else "?" + urlencode({"type": type})
        return self.request("GET", "/services" + query)

    def resolve(self, name: str) -> dict[str, Any]:
        """The live service called ``name``; OrchestratrClientError (404) if there is none."""
        return self.request("GET", "/services/resolve?" + urlencode({"name": name}))

    def browse(self, type: str | None = None, idle_for: float | None = None
               ) -> EventStream:
        """A live stream of services: each live one as a ``found`` event, then ``found`` and
        ``removed`` as apps start and stop (``event.data`` is the record). It ends after
        ``idle_for`` seconds without a change (None: the daemon's 5 s; 0: never)."""
        query = [("type", type)] if type is not None else []
        if idle_for is not None:
            query.append(("idle_for", str(idle_for)))
        return self._stream("/services/browse" + ("?" + urlencode(query) if query else ""))

    def declare_services(self, name: str, services: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace what app ``name`` offers; live at once if it runs."""
        return self.request("PUT", _app_path(name, "services"), {"services": services})

    def _stream(self, path: str, last_event_id: int | None = None) -> EventStream:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        conn, response, sock = self._open("GET", path, None, headers, timeout=None)
        if response.status != 200:
            raw = response.read()
            conn.close()
            _parse(response.status, raw)  # raises the daemon's error
            raise OrchestratrClientError(f"stream answered HTTP {response.status}")
        return EventStream(conn, response, sock)

    # ------------------------------------------------------------ transport

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and return its parsed JSON answer.

        Raises:
            NotRunningError: nothing answers.
            OrchestratrClientError: the answer is an error, or is not JSON.
        """
        conn, response, _ = self._open(method, path, body, {"Accept": "application/json"})
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise OrchestratrClientError(f"orchestratr failed: {exc}") from None
        finally:
            conn.close()
        return _parse(response.status, raw)

    def _open(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        timeout: float | None = -1.0,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, socket.socket | None]:
        """Send a request and read the answer's head; the caller reads the body and closes.
        ``timeout`` None blocks forever (streams); the default is the client's timeout. The
        socket is returned too: for an answer that ends with the connection, http.client lets
        go of it once the head is read, yet a stream must be able to shut it down."""
        host, port = self.address()
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            headers = {**headers, "Content-Type": "application/json"}
        conn = http.client.HTTPConnection(
            host, port, timeout=self.timeout if timeout == -1.0 else timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            sock = conn.sock
            return conn, conn.getresponse(), sock
        except ConnectionRefusedError:
            conn.close()
            raise NotRunningError(f"orchestratr is not running (nothing on port {port})") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise OrchestratrClientError(f"orchestratr on port {port} failed: {exc}") from None


@dataclass(frozen=True)
class Event:
    """One server-sent event: its id (None if it had none), type and parsed JSON data."""

    id: int | None
    type: str
    data: Any

    def record(self) -> dict[str, Any]:
        """The event as one flat JSON object: ``id``, ``type`` and the data's fields. A data
        field named like the event's own is kept as ``data_<name>`` (a service record's
        ``type`` once replaced ``service_found`` with ``_http._tcp``)."""
        fields = self.data if isinstance(self.data, dict) else {"data": self.data}
        own = {"id": self.id, "type": self.type}
        return own | {(f"data_{k}" if k in own else k): v for k, v in fields.items()}


class EventStream:
    """An open ``text/event-stream`` answer. Iterating yields :class:`Event` until the daemon
    ends the stream or the connection drops; ``close()`` ends it from any thread."""

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        sock: socket.socket | None,
    ) -> None:
        self._conn = conn
        self._response = response
        self._sock = sock
        self.closed = False  # by close(), as opposed to by the daemon or the network

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in another thread
            except OSError:
                pass
        self._conn.close()

    def __iter__(self) -> Iterator[Event]:
        fields: dict[str, list[str]] = {}
        while True:
            try:
                raw = self._response.readline()
            except (OSError, ValueError, http.client.HTTPException):
                return  # dropped, or closed by close()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                if not line.startswith(":"):  # ":" starts a comment (a keep-alive)
                    key, _, value = line.partition(":")
                    fields.setdefault(key, []).append(value.removeprefix(" "))
                continue
            if "data" in fields:
                yield _event(fields)
            fields = {}


def _event(fields: dict[str, list[str]]) -> Event:
    text = "\n".join(fields["data"])
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    ident = (fields.get("id") or [""])[-1]
    return Event(
        id=int(ident) if ident.isdigit() else None,
        type=(fields.get("event") or ["message"])[-1],
        data=data,
    )


def _app_path(name: str, action: str | None = None) -> str:
    path = f"/apps/{quote(name, safe='')}"
    return f"{path}/{action}" if action else path


def _parse(status: int, raw: bytes) -> Any:
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        raise OrchestratrClientError(f"answer is not JSON (HTTP {status})", status) from None
    if 200 <= status < 300:
        return data
    if isinstance(data, dict) and "error" in data:
        errors = data.get("errors")
        raise OrchestratrClientError(
            str(data["error"]), status, data.get("code"),
            [str(e) for e in errors] if isinstance(errors, list) else None)
    raise OrchestratrClientError(f"HTTP {status}", status)


def health() -> dict[str, Any]:
    return Client().health()


def apps() -> list[dict[str, Any]]:
    return Client().apps()


def notify_launched(
    name: str, pid: int | None = None, services: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return Client().notify_launched(name, pid, services)


def notify_ready(name: str) -> dict[str, Any]:
    return Client().notify_ready(name)


def notify_stopped(name: str) -> dict[str, Any]:
    return Client().notify_stopped(name)


def launch(name: str) -> dict[str, Any]:
    return Client().launch(name)


def stop(name: str) -> dict[str, Any]:
    return Client().stop(name)


def publish(source: str, type: str, data: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    return Client().publish(source, type, data)


def send(name: str, data: Any = None, sender: str | None = None,
         launch: bool = False) -> dict[str, Any]:
    return Client().send(name, data, sender=sender, launch=launch)


def inbox(name: str, since: int | None = None) -> Iterator[dict[str, Any]]:
    return Client().inbox(name, since)


def services(type: str | None = None) -> list[dict[str, Any]]:
    return Client().services(type)


def resolve(name: str) -> dict[str, Any]:
    return Client().resolve(name)


def browse(type: str | None = None, idle_for: float | None = None
           ) -> EventStream:
    return Client().browse(type, idle_for)


def declare_services(name: str, services: list[dict[str, Any]]) -> dict[str, Any]:
    return Client().declare_services(name, services)
