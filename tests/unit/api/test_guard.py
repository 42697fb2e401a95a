"""Who may talk to the API, decided from the peer address, the target and two headers alone."""

from __future__ import annotations

import io
from email.message import Message
from http.client import parse_headers

import pytest

from orchestratr.api.errors import ApiError
from orchestratr.api.guard import admit

PORT = 9876


def headers(*lines: str) -> Message:
    """Headers as http.server parses them off the wire (repeats kept)."""
    return parse_headers(io.BytesIO("".join(f"{line}\r\n" for line in lines).encode() + b"\r\n"))


def refusal(peer: str, head: Message, target: str = "/health",
            host_required: bool = True) -> tuple[str, str] | None:
    """``(code, message)`` of the refusal, or None when the request may proceed."""
    try:
        admit(peer, target, head, PORT, host_required=host_required)
    except ApiError as exc:
        return exc.code, str(exc)
    return None


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_pass(peer: str) -> None:
    assert refusal(peer, headers(f"Host: 127.0.0.1:{PORT}")) is None


@pytest.mark.parametrize("peer", ["192.168.1.20", "10.0.0.5", "::ffff:192.168.1.20",
                                  "2001:db8::1", "not-an-address", ""])
def test_other_peers_are_refused_whatever_they_claim(peer: str) -> None:
    why = refusal(peer, headers("Host: 127.0.0.1", "Origin: http://127.0.0.1"))
    assert why == ("forbidden", "requests from non-localhost origins are rejected")


def test_http_1_0_may_send_no_host_and_no_origin() -> None:
    """HTTP/1.0 clients and scripts send neither; a browser always sends Host."""
    assert refusal("127.0.0.1", headers(), host_required=False) is None


def test_http_1_1_without_host_is_400() -> None:
    """RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request lacking Host."""
    assert refusal("127.0.0.1", headers()) == (
        "bad_request", "HTTP/1.1 requests must carry a Host header")


@pytest.mark.parametrize("hosts", [("127.0.0.1", "evil.example"), ("evil.example", "127.0.0.1"),
                                   ("localhost", "localhost")])
def test_two_host_headers_are_400_whichever_comes_first(hosts: tuple[str, str]) -> None:
    """Only the first used to be checked, while a proxy or framework might read the last."""
    why = refusal("127.0.0.1", headers(*(f"Host: {h}" for h in hosts)))
    assert why == ("bad_request", "more than one Host header")


@pytest.mark.parametrize("host", ["localhost:9877", "127.0.0.1:80", "attacker.example",
                                  "127.0.0.1.attacker.example", "localhost.", "[::2]", ""])
def test_host_must_name_us(host: str) -> None:
    code, why = refusal("127.0.0.1", headers(f"Host: {host}")) or ("", "")
    assert code == "forbidden" and "DNS rebinding" in why


@pytest.mark.parametrize("origin", ["http://localhost:9877", "https://localhost:9876",
                                    "null", "file://", "http://127.0.0.1:9876/path"])
def test_origin_must_be_this_server(origin: str) -> None:
    code, why = refusal("127.0.0.1", headers("Host: localhost", f"Origin: {origin}")) or ("", "")
    assert code == "forbidden" and "cross-site" in why


@pytest.mark.parametrize("origins", [("http://127.0.0.1", "http://evil.example"),
                                     ("http://localhost", "http://localhost")])
def test_two_origin_headers_are_403(origins: tuple[str, str]) -> None:
    why = refusal("127.0.0.1", headers("Host: localhost", *(f"Origin: {o}" for o in origins)))
    assert why == ("forbidden", "more than one Origin header")


@pytest.mark.parametrize(("target", "host_header"), [
    ("http://evil.example/health", "127.0.0.1"),        # the target's host is the one that counts
    ("http://127.0.0.1.nip.io:9876/health", "localhost"),
])
def test_an_absolute_target_naming_another_host_is_403(target: str, host_header: str) -> None:
    code, why = refusal("127.0.0.1", headers(f"Host: {host_header}"), target) or ("", "")
    assert code == "forbidden" and "DNS rebinding" in why


@pytest.mark.parametrize(("target", "path", "query"), [
    (f"http://127.0.0.1:{PORT}/apps?x=1", "/apps", "x=1"),
    ("HTTP://localhost/health", "/health", ""),
    ("http://localhost", "/", ""),
])
def test_an_absolute_target_naming_us_passes_whatever_the_host_header(
    target: str, path: str, query: str
) -> None:
    """RFC 9112 3.2.2: the target's host replaces the Host header."""
    assert admit("127.0.0.1", target, headers("Host: evil.example"), PORT) == (path, query)


def test_the_query_is_split_at_the_first_question_mark() -> None:
    target = "/apps/notes?a=b?c"
    assert admit("127.0.0.1", target, headers("Host: localhost"), PORT) == ("/apps/notes", "a=b?c")


@pytest.mark.parametrize("target", ["health", "ftp://127.0.0.1/health", "http:///health", "*"])
def test_a_target_that_is_neither_a_path_nor_an_http_url_is_400(target: str) -> None:
    assert refusal("127.0.0.1", headers("Host: localhost"), target) == (
        "bad_request", "the request target must be a path such as /health")
