"""Who may talk to the API: loopback peers, naming us by a loopback host, from no foreign page.

The peer check is the seed's rule. The Host check stops DNS rebinding (a page whose domain
suddenly resolves to 127.0.0.1 still sends its own name as Host). The Origin check stops a page
in the user's browser from posting to us cross-site; no CORS headers are ever sent. Only our
own origins pass, port included: a page on ``http://localhost`` (port 80) is another site, and
real Chromium on one launched apps here through no-cors fetch, sendBeacon and a form. A
browser's ``Sec-Fetch-Site: cross-site`` or ``same-site`` is refused as well.

Browsers send exactly one Host and at most one Origin. Anything that could be read two ways is
refused rather than guessed at: two Host headers, or none on HTTP/1.1, are 400 (RFC 9112 says
so); two Origin headers are 403. An absolute-form target (``GET http://host/path``) names its
own host, which RFC 9112 says replaces the Host header, so that is the host checked.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import urlsplit

from orchestratr.api.errors import ApiError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LOOPBACK_ORIGINS = ("http://127.0.0.1", "http://localhost", "http://[::1]")
FOREIGN_FETCH_SITES = ("cross-site", "same-site")  # Sec-Fetch-Site values of another origin


class Headers(Protocol):
    """What the guard reads of a request's headers (``email.message.Message`` has it)."""

    def get_all(self, name: str, failobj: list[str]) -> list[str]: ...

    def __iter__(self) -> Iterator[str]: ...


def admit(
    peer: str, target: str, headers: Headers, port: int, host_required: bool = True
) -> tuple[str, str]:
    """The path and query of a request that may proceed.

    ``host_required`` is false for HTTP/1.0, whose clients (and scripts) may send no Host.

    Raises:
        ApiError: forbidden (403) or bad_request (400), saying why.
    """
    if not _loopback_peer(peer):
        raise ApiError("forbidden", "requests from non-localhost origins are rejected")
    path, query, authority = _split_target(target)
    hosts = headers.get_all("Host", [])
    if len(hosts) > 1:
        raise ApiError("bad_request", "more than one Host header")
    host = authority if authority is not None else next(iter(hosts), None)
    if host is None and host_required:
        raise ApiError("bad_request", "HTTP/1.1 requests must carry a Host header")
    if host is not None and not _names_us(host, LOOPBACK_HOSTS, port):
        raise ApiError("forbidden", "Host header must name 127.0.0.1, localhost or [::1] "
                                    "(DNS rebinding protection)")
    origins = headers.get_all("Origin", [])
    if len(origins) > 1:
        raise ApiError("forbidden", "more than one Origin header")
    if origins and not _is_our_origin(origins[0], port):
        raise ApiError("forbidden", "cross-site requests are rejected (Origin is not this "
                                    "server)")
    sites = {s.strip().lower() for s in headers.get_all("Sec-Fetch-Site", [])}
    if sites & set(FOREIGN_FETCH_SITES):
        raise ApiError("forbidden", "cross-site requests are rejected (Sec-Fetch-Site)")
    return path, query


def from_browser(headers: Headers) -> bool:
    """Whether a browser sent the request: browsers send ``Origin`` on every cross-origin
    request and POST, and ``Sec-Fetch-*`` on every request; curl and scripts send neither."""
    return bool(headers.get_all("Origin", [])) or any(
        name.lower().startswith("sec-fetch-") for name in headers)


def _split_target(target: str) -> tuple[str, str, str | None]:
    """A request target as ``(path, query, authority)``; ``authority`` is the host an
    absolute-form target names, None for the usual ``/path``."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query, None
    parts = urlsplit(target)
    if parts.scheme.lower() != "http" or not parts.netloc:
        raise ApiError("bad_request", "the request target must be a path such as /health")
    return parts.path or "/", parts.query, parts.netloc


@functools.lru_cache(maxsize=64)  # one peer per connection, parsed again for each request
def _loopback_peer(peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _names_us(value: str, allowed: tuple[str, ...], port: int) -> bool:
    value = value.strip().lower()
    return any(value in (base, f"{base}:{port}") for base in allowed)


def _is_our_origin(origin: str, port: int) -> bool:
    """``http://<loopback host>:<our port>``; without a port only if ours is 80."""
    origin = origin.strip().lower()
    return any(origin == f"{base}:{port}" or (port == 80 and origin == base)
               for base in LOOPBACK_ORIGINS)
