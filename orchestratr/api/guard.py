"""Who may talk to the API: loopback peers, naming us by a loopback host, from no foreign page.

The peer check is the seed's rule. The Host check stops DNS rebinding (a page whose domain
suddenly resolves to 127.0.0.1 still sends its own name as Host). The Origin check stops a page
in the user's browser from posting to us cross-site; no CORS headers are ever sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LOOPBACK_ORIGINS = ("http://127.0.0.1", "http://localhost", "http://[::1]")


def refusal(peer: str, headers: Mapping[str, str], port: int) -> str | None:
    """Why this request is refused (a 403 message), or None when it may proceed."""
    if not _loopback_peer(peer):
        return "requests from non-localhost origins are rejected"
    host = headers.get("Host")
    if host is not None and not _names_us(host, LOOPBACK_HOSTS, port):
        return "Host header must name 127.0.0.1, localhost or [::1] (DNS rebinding protection)"
    origin = headers.get("Origin")
    if origin is not None and not _names_us(origin, LOOPBACK_ORIGINS, port):
        return "cross-site requests are rejected (Origin is not this server)"
    return None


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
