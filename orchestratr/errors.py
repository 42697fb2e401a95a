"""Every error orchestratr reports on purpose.

Each class carries a snake_case ``code`` that the API and CLI show as is. This module imports
nothing from the package so that any layer can raise these without import loops.
"""

from __future__ import annotations


def clip(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with a note of how much was left out: what a
    client or a file sent is quoted back, never all of it."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


ECHO = 40  # characters of what a client or a file sent that a message quotes back


def quoted(value: object, limit: int = ECHO) -> str:
    """``repr(value)``, cut to ``limit`` characters: what was sent, recognisable, never all."""
    return clip(repr(value), limit)


class OrchestratrError(Exception):
    """Base class: a failure with a message meant for the user."""

    code = "internal_error"


class ConfigError(OrchestratrError):
    """The configuration is invalid; ``errors`` lists every problem, one line each."""

    code = "invalid_config"

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        count = len(self.errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"config validation failed with {count} error(s):\n{lines}")


class BadRequestError(OrchestratrError):
    """A request (an API body, a parameter) that cannot be understood."""

    code = "bad_request"


class NoSuchProcessError(BadRequestError):
    """An app announced a pid that is not running."""


class UnadoptablePidError(BadRequestError):
    """A pid orchestratr must never track as an app: stopping the app would signal it.

    pid 0 and 1, the daemon itself and its ancestors (the shell or service manager that
    started it) are refused, so ``stop`` can never make the daemon kill itself or its session.
    """


class UnknownAppError(OrchestratrError):
    """No app with that name (or chord) is registered."""

    code = "not_found"


class UnknownServiceError(OrchestratrError):
    """No live service has that name."""

    code = "not_found"


class ConflictError(OrchestratrError):
    """The request clashes with what exists: a name or chord taken, an app owned by a file."""

    code = "conflict"


class InvalidTransitionError(OrchestratrError):
    """A trigger that the app's current state does not allow."""

    code = "invalid_transition"

    def __init__(self, app: str, state: str, trigger: str, reason: str = "") -> None:
        self.app, self.state, self.trigger = app, state, trigger
        why = f": {reason}" if reason else ""
        super().__init__(f"app {app!r} is {state}; cannot {trigger}{why}")


class LaunchError(OrchestratrError):
    """A command could not be started (the app is now ``failed``)."""

    code = "launch_failed"


class UnavailableError(OrchestratrError):
    """The daemon cannot do this right now (it is starting up): try again shortly."""

    code = "unavailable"


class StorageError(OrchestratrError):
    """A file the daemon must write could not be written (a read-only or full config dir);
    nothing was changed."""

    code = "storage_failed"


class DaemonRunningError(OrchestratrError):
    """Another daemon already holds the lock on this config dir."""

    code = "already_running"

    def __init__(self, pid: int | None, lock_file: str) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"another orchestratr daemon ({who}) is already running on this config dir "
            f"(lock {lock_file}); stop it first or use --config-dir"
        )
