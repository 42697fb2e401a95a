"""The one map from error codes to HTTP statuses, and the error body every non-2xx carries.

Messages are clipped: many quote what the client sent, and the Go orchestratr's B2 echoed an
8 MiB chord back in its error. The converter clips each quoted value; this is the backstop.
"""

from __future__ import annotations

from typing import Any

from orchestratr.errors import OrchestratrError, clip

STATUS: dict[str, int] = {
    "bad_request": 400,
    "invalid_config": 400,
    "forbidden": 403,
    "request_timeout": 408,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_transition": 409,
    "conflict": 409,
    "payload_too_large": 413,
    "uri_too_long": 414,
    "unsupported_media_type": 415,
    "headers_too_large": 431,
    "internal_error": 500,
    "launch_failed": 500,
    "storage_failed": 507,
    "not_implemented": 501,
    "unavailable": 503,
    "http_version_not_supported": 505,
}


MAX_MESSAGE = 1000  # characters of an error message, and of each entry of ``errors``
MAX_ECHO = 200  # characters of the client's own text in an error message, warning or log line


class ApiError(OrchestratrError):
    """An error raised by the HTTP layer itself (routing, parsing, the guard)."""

    def __init__(
        self, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.headers = headers or {}


def status_of(exc: OrchestratrError) -> int:
    return STATUS.get(exc.code, 500)


def error_body(exc: OrchestratrError) -> dict[str, Any]:
    """``{"error", "code"}``, plus the list of problems for an invalid config."""
    body: dict[str, Any] = {"error": clip(str(exc), MAX_MESSAGE), "code": exc.code}
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list):
        body["errors"] = [clip(str(e), MAX_MESSAGE) for e in errors]
    return body
