"""A client for orchestratr's HTTP API, for apps in Python and for the CLI.

Standard library only: an app may copy this one file into its own tree. It finds the daemon
through the port file the daemon writes after binding, so nobody hard-codes a port::

    from orchestratr import client

    client.notify_launched("notes", pid=os.getpid())
    client.notify_ready("notes")

Every call returns the parsed JSON answer, or raises :class:`OrchestratrClientError` (or its
subclass :class:`NotRunningError` when no daemon answers).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = [
    "Client",
    "NotRunningError",
    "OrchestratrClientError",
    "apps",
    "default_config_dir",
    "health",
    "launch",
    "notify_launched",
    "notify_ready",
    "notify_stopped",
    "stop",
]

CONFIG_DIR_ENV = "ORCHESTRATR_CONFIG_DIR"
URL_ENV = "ORCHESTRATR_URL"
DEFAULT_TIMEOUT_S = 5.0


class OrchestratrClientError(Exception):
    """orchestratr answered an error, or could not be reached.

    ``status`` is the HTTP status (None when there was no answer) and ``code`` the API's
    machine-readable error code, such as ``not_found`` or ``invalid_transition``.
    """

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotRunningError(OrchestratrClientError):
    """No daemon answers: there is no port file, or nothing listens on its port."""


def default_config_dir() -> Path:
    """The daemon's config dir, as the daemon computes it (platformdirs' user config dir)."""
    chosen = os.environ.get(CONFIG_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "orchestratr" / "orchestratr"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "orchestratr"
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base).expanduser() / "orchestratr"


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
        self._url = url or os.environ.get(URL_ENV) or None
        self._config_dir = Path(config_dir) if config_dir is not None else None
        self.timeout = timeout

    @property
    def port_file(self) -> Path:
        return (self._config_dir or default_config_dir()) / "port"

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

    # ------------------------------------------------------------ endpoints

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def apps(self) -> list[dict[str, Any]]:
        return self.request("GET", "/apps")

    def app(self, name: str) -> dict[str, Any]:
        """One app with its recent transition history."""
        return self.request("GET", _app_path(name))

    def state(self, name: str) -> dict[str, Any]:
        return self.request("GET", _app_path(name, "state"))

    def notify_launched(self, name: str, pid: int | None = None) -> dict[str, Any]:
        """Tell orchestratr the app started; with ``pid``, orchestratr tracks that process."""
        body = {} if pid is None else {"pid": pid}
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

    # ------------------------------------------------------------ transport

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and return its parsed JSON answer.

        Raises:
            NotRunningError: nothing answers.
            OrchestratrClientError: the answer is an error, or is not JSON.
        """
        host, port = self.address()
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except ConnectionRefusedError:
            raise NotRunningError(f"orchestratr is not running (nothing on port {port})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise OrchestratrClientError(f"orchestratr on port {port} failed: {exc}") from None
        finally:
            conn.close()
        return _parse(response.status, raw)


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
        raise OrchestratrClientError(str(data["error"]), status, data.get("code"))
    raise OrchestratrClientError(f"HTTP {status}", status)


def health() -> dict[str, Any]:
    return Client().health()


def apps() -> list[dict[str, Any]]:
    return Client().apps()


def notify_launched(name: str, pid: int | None = None) -> dict[str, Any]:
    return Client().notify_launched(name, pid)


def notify_ready(name: str) -> dict[str, Any]:
    return Client().notify_ready(name)


def notify_stopped(name: str) -> dict[str, Any]:
    return Client().notify_stopped(name)


def launch(name: str) -> dict[str, Any]:
    return Client().launch(name)


def stop(name: str) -> dict[str, Any]:
    return Client().stop(name)
