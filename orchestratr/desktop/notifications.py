"""Failures shown where the user looks: desktop notifications (the freedesktop Notifications
service, ``org.freedesktop.Notifications.Notify`` on the session bus, spoken with jeepney).

The notifier follows the event bus; nothing calls it. One notification per incident: an app's
failures (a failed launch, each crash of a crash loop, an expired lease) update one bubble
through ``replaces_id``, as do the config's rejections. No session bus or no notification
server: nothing is shown, and that is logged once, at debug. Each later notice tries again
(notices are rare; a failed connect costs a refused socket), so a daemon started at login
before the bus or the notification server notifies once they are there; that is logged at
debug too. Without ``DBUS_SESSION_BUS_ADDRESS`` the bus is looked for where libdbus and
sd-bus look, ``$XDG_RUNTIME_DIR/bus``. jeepney is imported at the first notification, so a
daemon that never fails never loads it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import attrs
import structlog

from orchestratr.supervisor.bus import BusEvent, EventBus, Subscription
from orchestratr.supervisor.states import AppState
from orchestratr.threads import supervised

log = structlog.get_logger("orchestratr.desktop")

APP_NAME = "orchestratr"
EXPIRE_MS = 10_000
MAX_BODY = 400  # characters: a bubble, not a log
MAX_LISTED = 3  # config errors named in one bubble
CALL_TIMEOUT_S = 2.0


@attrs.frozen
class Notice:
    incident: str  # notices of one incident replace each other
    summary: str
    body: str
    urgency: int = 1  # 0 low, 1 normal, 2 critical (the spec's hint)


def notice_for(event: BusEvent) -> Notice | None:
    """What the user should be told about ``event``, if anything."""
    data = event.data
    if event.type == "state" and data.get("to") == AppState.failed.value:
        app, detail = data["app"], data.get("detail") or {}
        if detail.get("restart_in_ms") is not None or detail.get("crash_loop"):
            return None  # a restart follows, or the crash loop's own transition says it all
        error = detail.get("error") or "no error recorded"
        if data.get("trigger") == "crash_loop":
            return Notice(f"app:{app}", f"{app} keeps crashing", str(error), urgency=2)
        return Notice(f"app:{app}", f"{app} failed", str(error), urgency=2)
    if event.type == "lease_expired":
        app = data["app"]
        return Notice(f"app:{app}", f"{app} stopped answering",
                      "its heartbeat lease expired; it is unresponsive for its grace period")
    if event.type in ("reload_failed", "config_skipped"):
        errors = [str(e) for e in data.get("errors", [])]
        what = "config rejected" if event.type == "reload_failed" else "drop-in left out"
        listed = "\n".join(errors[:MAX_LISTED])
        more = f"\n... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        return Notice("config", f"orchestratr: {what}", listed + more, urgency=2)
    if event.type == "hotkey" and data.get("action") == "unavailable":
        return Notice("hotkeys", "orchestratr: hotkeys unavailable", str(data.get("reason")))
    return None


class Notifier:
    """Follows ``bus`` on its own thread and shows each notice while ``enabled()``."""

    def __init__(self, bus: EventBus, enabled: Callable[[], bool],
                 address: str = "SESSION") -> None:
        self._bus = bus
        self._enabled = enabled
        self._address = address
        self._ids: dict[str, int] = {}  # incident -> the server's id of its bubble
        self._connection: Any = None
        self._silent = False  # no bus or no server: said once, quiet until they are back
        self._subscription: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        self._subscribe()
        self._thread = supervised("notifications", self._follow)

    def _subscribe(self) -> None:
        self._subscription = self._bus.subscribe(accept=lambda e: notice_for(e) is not None)

    def stop(self) -> None:
        self._stopping = True
        if self._subscription is not None:
            self._subscription.close()
        if self._thread is not None:
            self._thread.join(timeout=CALL_TIMEOUT_S + 1)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _follow(self) -> None:
        """Until ``stop``: a subscription cut off for falling behind is taken up again."""
        while True:
            self._run()
            if self._stopping:
                return
            log.warning("notifications_resubscribed", reason="fell behind the event bus")
            self._subscribe()

    def _run(self) -> None:
        assert self._subscription is not None
        for event in self._subscription:
            notice = notice_for(event)
            if notice is None or not self._enabled():
                continue
            try:
                self.show(notice)
            except Exception as exc:  # noqa: BLE001 - a notification must not end the thread
                log.warning("notification_failed", incident=notice.incident, error=repr(exc))
                self._drop_connection()

    def show(self, notice: Notice) -> int | None:
        """Send one notification; the server's id, or None when nobody can show it."""
        connection = self._connect()
        if connection is None:
            return None
        from jeepney import DBusAddress, new_method_call

        service = DBusAddress("/org/freedesktop/Notifications",
                              bus_name="org.freedesktop.Notifications",
                              interface="org.freedesktop.Notifications")
        body = notice.body if len(notice.body) <= MAX_BODY else notice.body[:MAX_BODY] + "…"
        message = new_method_call(
            service, "Notify", "susssasa{sv}i",
            (APP_NAME, self._ids.get(notice.incident, 0), "dialog-error", notice.summary, body,
             [], {"urgency": ("y", notice.urgency)}, EXPIRE_MS))
        reply = connection.send_and_get_reply(message, timeout=CALL_TIMEOUT_S)
        if reply.header.message_type.name == "error":
            self._quiet(f"the notification server refused: {reply.body}")
            return None
        self._ids[notice.incident] = reply.body[0]
        if self._silent:
            self._silent = False
            log.debug("notifications_available")
        log.debug("notified", incident=notice.incident, id=reply.body[0])
        return int(reply.body[0])

    def _connect(self) -> Any:
        if self._connection is None:
            address = self._bus_address()
            if address == "SESSION" and not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
                # nowhere to connect: jeepney (0.3 MiB) is not loaded just to find that out
                self._quiet("no session bus: DBUS_SESSION_BUS_ADDRESS is not set and "
                            "$XDG_RUNTIME_DIR/bus does not exist")
                return None
            try:
                from jeepney.io.blocking import open_dbus_connection

                self._connection = open_dbus_connection(bus=address)
            except Exception as exc:  # noqa: BLE001 - no bus: OSError, ...
                self._quiet(f"no session bus: {exc!r}")
        return self._connection

    def _bus_address(self) -> str:
        """The session bus: the environment's, else the systemd user bus's socket."""
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if self._address != "SESSION" or os.environ.get("DBUS_SESSION_BUS_ADDRESS") or not (
                runtime and os.path.exists(os.path.join(runtime, "bus"))):
            return self._address
        return "unix:path=" + os.path.join(runtime, "bus")

    def _quiet(self, why: str) -> None:
        """Nobody shows notifications here now: say so once per outage, at debug."""
        if not self._silent:
            log.debug("notifications_unavailable", reason=why)
        self._silent = True
        self._ids.clear()  # the bubbles of a server that is gone: the next one starts anew
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
