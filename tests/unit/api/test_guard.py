"""Who may talk to the API, decided from the peer address and two headers alone."""

from __future__ import annotations

import pytest

from orchestratr.api.guard import refusal

PORT = 9876


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_pass(peer: str) -> None:
    assert refusal(peer, {"Host": f"127.0.0.1:{PORT}"}, PORT) is None


@pytest.mark.parametrize("peer", ["192.168.1.20", "10.0.0.5", "::ffff:192.168.1.20",
                                  "2001:db8::1", "not-an-address", ""])
def test_other_peers_are_refused_whatever_they_claim(peer: str) -> None:
    why = refusal(peer, {"Host": "127.0.0.1", "Origin": "http://127.0.0.1"}, PORT)
    assert why == "requests from non-localhost origins are rejected"


def test_no_host_and_no_origin_pass() -> None:
    """HTTP/1.0 clients and scripts send neither; a browser always sends Host."""
    assert refusal("127.0.0.1", {}, PORT) is None


@pytest.mark.parametrize("host", ["localhost:9877", "127.0.0.1:80", "attacker.example",
                                  "127.0.0.1.attacker.example", "localhost.", "[::2]"])
def test_host_must_name_us(host: str) -> None:
    assert "DNS rebinding" in (refusal("127.0.0.1", {"Host": host}, PORT) or "")


@pytest.mark.parametrize("origin", ["http://localhost:9877", "https://localhost:9876",
                                    "null", "file://", "http://127.0.0.1:9876/path"])
def test_origin_must_be_this_server(origin: str) -> None:
    why = refusal("127.0.0.1", {"Host": "localhost", "Origin": origin}, PORT)
    assert "cross-site" in (why or "")
