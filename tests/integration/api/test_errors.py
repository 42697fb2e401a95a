"""Every error code, the localhost hardening, and the transport: keep-alive, limits, timeouts."""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
from pathlib import Path
from typing import Any

import pytest

from orchestratr.api.server import ApiServer, _Handler
from tests.conftest import DaemonProcess
from tests.integration.api.conftest import HttpApi, daemon_logging, logged

MIB = 1024 * 1024


class TestErrorCodes:
    @pytest.mark.parametrize(
        ("path", "raw", "fragment"),
        [
            ("/apps/notes/launched", b'{"pid": ', "malformed JSON"),
            ("/apps/notes/launched", b'{"pid": "12"}', "pid"),
            ("/apps/notes/launched", b'{"pid": 12, "pdi": 1}', "unknown field(s): pdi"),
            ("/apps/notes/ready", b"[1, 2]", "expected a JSON object, got list"),
            ("/trigger", b'{"chord": 5}', "chord"),
            ("/trigger", json.dumps({"chord": "x" * 33}).encode(), "longer than 32"),
            ("/apps/..%2Fetc/launch", b"", "invalid app name"),
            ("/apps/%00/ready", b"", "invalid app name"),
            ("/apps/notes/launched", b"[" * 100_000, "nested deeper than 32"),
            ("/apps/notes/launched", b"[" * 33 + b"]" * 33, "nested deeper than 32"),
            ("/apps", b'{"name": "deep", "command": "x", "env": ' + b"{\"a\": " * 40 + b"1"
             + b"}" * 41, "nested deeper than 32"),
            # strings no spawn can take: each launched (autostart) into a 500 before
            ("/apps", b'{"name": "nul", "command": "sleep 1\\u0000", "autostart": true}',
             "NUL characters"),
            ("/apps", b'{"name": "nul", "command": "x", "env": {"A": "\\u0000"}, '
                      b'"autostart": true}', "NUL characters"),
            ("/apps", b'{"name": "half", "command": "sleep 1 \\udc98", "autostart": true}',
             "unpaired surrogates"),
        ],
    )
    def test_400_bad_request(self, api: HttpApi, path: str, raw: bytes, fragment: str) -> None:
        reply = api.call("POST", path, raw=raw, headers={"Content-Type": "application/json"})
        assert (reply.status, reply.body["code"]) == (400, "bad_request")
        assert fragment in reply.body["error"]
        assert api.app("notes")["state"] == "stopped"

    @pytest.mark.parametrize("path", ["/apps/nosuch", "/apps/nosuch/ready", "/nowhere",
                                      "/health/", "/apps/notes/explode"])
    def test_404_not_found(self, api: HttpApi, path: str) -> None:
        method = "POST" if path.endswith(("ready", "explode")) else "GET"
        reply = api.call(method, path)
        assert (reply.status, reply.body["code"]) == (404, "not_found")

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [("POST", "/health", "GET, HEAD"), ("GET", "/reload", "POST"),
         ("DELETE", "/apps", "GET, HEAD, POST"), ("GET", "/apps/notes/launch", "POST"),
         ("PUT", "/apps/notes", "DELETE, GET, HEAD"), ("OPTIONS", "/trigger", "POST"),
         ("GET", "/apps/notes/heartbeat", "POST, PUT")],
    )
    def test_405_names_the_allowed_method(
        self, api: HttpApi, method: str, path: str, allow: str
    ) -> None:
        reply = api.call(method, path)
        assert (reply.status, reply.body["code"], reply.headers["allow"]) == (
            405, "method_not_allowed", allow)

    def test_head_is_get_without_a_body(self, api: HttpApi) -> None:
        """The Go orchestratr answered HEAD with 405; HTTP says it is GET minus the body."""
        reply = api.call("HEAD", "/health")
        assert (reply.status, reply.body) == (200, None)
        assert reply.headers["content-length"] == api.get("/health").headers["content-length"]

    def test_413_for_bodies_over_1_mib_and_the_connection_is_closed(self, api: HttpApi) -> None:
        reply = api.call("POST", "/trigger", raw=b" " * (1024 * 1024 + 1),
                         headers={"Content-Type": "application/json"})
        assert (reply.status, reply.body["code"]) == (413, "payload_too_large")
        assert reply.headers["connection"] == "close"

    def test_413_reaches_a_client_that_sends_its_body_after_the_answer(self, api: HttpApi) -> None:
        """The refused body is read and dropped: closing on unread data would reset the
        connection and destroy the 413 before a client still sending could read it."""
        size = 4 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            sock.sendall(b"POST /trigger HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % size)
            readable, _, _ = select.select([sock], [], [], 5)
            assert readable, "the 413 comes before the body"
            sock.sendall(b" " * size)
            answer = sock.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "payload_too_large"

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                              None])
    @pytest.mark.parametrize("browser", [{"Sec-Fetch-Mode": "no-cors"},
                                         {"Origin": "http://127.0.0.1:{port}"}])
    def test_415_for_a_browser_body_that_is_not_json(
        self, api: HttpApi, content_type: str | None, browser: dict[str, str]
    ) -> None:
        """The Go orchestratr's B1: a page's "simple" text/plain POST launched apps. A browser
        says it is one (Origin, Sec-Fetch-*), even on a page of our own origin."""
        headers = {k: v.format(port=api.port) for k, v in browser.items()}
        if content_type:
            headers["Content-Type"] = content_type
        reply = api.call("POST", "/trigger", raw=b'{"chord": "n"}', headers=headers)
        assert (reply.status, reply.body["code"]) == (415, "unsupported_media_type")
        assert api.app("notes")["state"] == "stopped"

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                              None])
    def test_a_script_may_send_json_under_any_content_type(
        self, api: HttpApi, content_type: str | None
    ) -> None:
        """Scripts for the Go orchestratr POST with curl's default form type, or none."""
        headers = {"Content-Type": content_type} if content_type else {}
        reply = api.call("POST", "/trigger", raw=b'{"chord": "n"}', headers=headers)
        assert (reply.status, reply.body["app"]) == (200, "notes")
        assert api.app("notes")["state"] in ("launching", "launched", "ready")

    @pytest.mark.parametrize(("coding", "status"), [("gzip, chunked", 501), ("gzip", 501)])
    def test_transfer_codings_but_chunked_are_501(
        self, api: HttpApi, coding: str, status: int
    ) -> None:
        reply = api.raw(f"POST /apps/notes/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Transfer-Encoding: {coding}\r\n\r\n0\r\n\r\n".encode())
        assert (reply.status, reply.body["code"]) == (status, "not_implemented")
        assert reply.headers["connection"] == "close"

    @pytest.mark.parametrize(("path", "body"), [
        ("/trigger", {"chord": "q" * 100_000}),
        ("/apps/notes/launched", {"k" * (MIB - 20): 1}),
        ("/apps/notes/launched", {"pid": "p" * (MIB - 20)}),
        ("/apps/notes/launched", {f"key{i}": i for i in range(50_000)}),
        ("/apps", {"name": "n" * (MIB - 40), "command": "x"}),
        ("/apps", {"name": "ok", "command": "x", "chord": ["c"] * 200_000}),
    ])
    def test_errors_do_not_echo_huge_input(self, api: HttpApi, path: str, body: Any) -> None:
        """The Go orchestratr's B2 echoed an 8 MiB chord back in its 404; a 1 MB key or value
        came back whole in our 400s."""
        reply = api.post(path, body)
        assert reply.status == 400 and len(json.dumps(reply.body)) < 2500, reply.body["error"][:300]


    @pytest.mark.parametrize(("method", "path", "body"), [
        ("POST", "/apps", {"name": "ok", "command": "x", "environment": "e" * 2000}),
        ("POST", "/apps", {"name": "ok", "command": "x", "chord": "c" * 2000}),
        ("GET", "/events?" + "q" * 2000 + "=1", None),
        ("GET", "/apps/notes/logs?" + "q" * 2000 + "=1", None),
        ("GET", "/services/resolve?name=" + "s" * 2000, None),
    ])
    def test_an_error_quotes_a_few_dozen_characters_of_the_input(
        self, api: HttpApi, method: str, path: str, body: Any
    ) -> None:
        """As the README says; these quoted ~1,000 characters (issue 12, an audit)."""
        reply = api.post(path, body) if method == "POST" else api.get(path)
        assert 400 <= reply.status < 500
        longest = max(len(run) for run in re.findall(r"(e+|c+|q+|s+)", reply.body["error"]))
        assert longest <= 60, reply.body["error"][:200]

    def test_a_registration_does_not_echo_huge_unknown_fields(self, api: HttpApi) -> None:
        """Unknown fields are ignored with a warning each, which quotes the field's name."""
        body = {"name": "big", "command": "sleep 60", "u" * 100_000: 1,
                **{f"field{i}": i for i in range(2000)}}
        reply = api.post("/apps", body)
        assert reply.status == 201 and len(json.dumps(reply.body)) < 8000
        assert reply.body["warnings"][-1] == "... and 1981 more"


class TestHardening:
    @pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io",
                                      "localhost:1", "0.0.0.0"])
    def test_a_foreign_host_header_is_403(self, api: HttpApi, host: str) -> None:
        reply = api.get("/apps", headers={"Host": host.format(port=api.port)})
        assert (reply.status, reply.body["code"]) == (403, "forbidden")
        assert "DNS rebinding" in reply.body["error"]

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.1:{port}",
                                      "LOCALHOST:{port}", "[::1]:{port}"])
    def test_loopback_host_headers_pass(self, api: HttpApi, host: str) -> None:
        assert api.get("/health", headers={"Host": host.format(port=api.port)}).status == 200

    @pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://127.0.0.1",
                                        "http://127.0.0.1:1", "http://localhost.evil.example"])
    def test_a_foreign_origin_is_403_and_nothing_happens(self, api: HttpApi, origin: str) -> None:
        reply = api.post("/apps/notes/launch", headers={"Origin": origin})
        assert (reply.status, reply.body["code"]) == (403, "forbidden")
        assert api.app("notes")["state"] == "stopped"
        assert not any(h.startswith("access-control-") for h in reply.headers)

    @pytest.mark.parametrize(("method", "path", "origin"), [
        ("POST", "/apps/notes/launch", "http://evil.example"),  # 403 before the body is read
        ("POST", "/nowhere", None),                               # 404 before the body is read
        ("GET", "/health", None),                                 # a body no GET reads
    ])
    def test_an_unread_body_never_passes_for_a_second_request(
        self, api: HttpApi, method: str, path: str, origin: str | None
    ) -> None:
        """A page could slip a request past the Origin check by hiding one without an Origin in
        the body of a refused one: a body left unread must never be parsed as a request."""
        hidden = (b"POST /apps/notes/launch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Length: 0\r\n\r\n")
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        head += f"Origin: {origin}\r\n" if origin else ""
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            sock.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(hidden) + hidden)
            answer = sock.makefile("rb").read()
        assert answer.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in answer
        assert api.app("notes")["state"] == "stopped"

    @pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}",
                                        "http://[::1]:{port}", "HTTP://LOCALHOST:{port}"])
    def test_our_own_origin_passes(self, api: HttpApi, origin: str) -> None:
        reply = api.get("/health", headers={"Origin": origin.format(port=api.port)})
        assert reply.status == 200
        assert not any(h.startswith("access-control-") for h in reply.headers)

    @pytest.mark.parametrize("origin", [
        "http://localhost", "http://127.0.0.1", "http://[::1]",  # port 80: another origin
        "http://localhost:1", "http://127.0.0.1:{port}0", "https://localhost:{port}", "null"])
    @pytest.mark.parametrize(("method", "path"), [
        ("POST", "/apps/notes/launch"), ("POST", "/reload"), ("GET", "/apps")])
    def test_another_loopback_origin_is_refused(
        self, api: HttpApi, origin: str, method: str, path: str
    ) -> None:
        """A page on http://localhost (port 80) passed as ours and launched apps."""
        reply = api.call(method, path, raw=b"{}", headers={
            "Origin": origin.format(port=api.port), "Content-Type": "application/json"})
        assert (reply.status, reply.body["code"]) == (403, "forbidden")
        assert api.app("notes")["state"] == "stopped"

    @pytest.mark.parametrize("site", ["cross-site", "same-site", "Cross-Site"])
    def test_a_foreign_sec_fetch_site_is_refused(self, api: HttpApi, site: str) -> None:
        """A no-cors fetch or a beacon from another site, whatever Origin it carries."""
        reply = api.call("POST", "/apps/notes/launch", raw=b"{}", headers={
            "Sec-Fetch-Site": site, "Content-Type": "application/json"})
        assert (reply.status, reply.body["code"]) == (403, "forbidden")
        assert api.app("notes")["state"] == "stopped"

    @pytest.mark.parametrize("site", ["same-origin", "none"])
    def test_our_own_or_no_site_passes(self, api: HttpApi, site: str) -> None:
        """``none``: typed into the address bar; ``same-origin``: a page the daemon served."""
        reply = api.get("/health", headers={"Sec-Fetch-Site": site})
        assert reply.status == 200

    @pytest.mark.parametrize(("head", "status", "message"), [
        ("Host: 127.0.0.1\r\nHost: evil.example", 400, "more than one Host header"),
        ("Host: evil.example\r\nHost: 127.0.0.1", 400, "more than one Host header"),
        ("", 400, "HTTP/1.1 requests must carry a Host header"),
        ("Host: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nOrigin: http://evil.example", 403,
         "more than one Origin header"),
    ])
    def test_ambiguous_or_missing_host_and_origin_are_refused(
        self, api: HttpApi, head: str, status: int, message: str
    ) -> None:
        """Only the first Host or Origin used to be checked, while anything in front of us (or
        a later version of us) might read the other; browsers never send two."""
        request = f"POST /apps/notes/launch HTTP/1.1\r\n{head}\r\nConnection: close\r\n\r\n"
        reply = api.raw(request.replace("\r\n\r\nConnection", "\r\nConnection").encode())
        assert (reply.status, reply.body["error"]) == (status, message)
        assert api.app("notes")["state"] == "stopped"

    def test_http_1_0_may_omit_host(self, api: HttpApi) -> None:
        reply = api.raw(b"GET /health HTTP/1.0\r\n\r\n")
        assert (reply.status, reply.body["status"]) == (200, "ok")

    @pytest.mark.parametrize(("target", "status"), [
        ("http://evil.example/apps/notes/launch", 403),
        ("http://127.0.0.1.nip.io/apps/notes/launch", 403),
        ("ftp://127.0.0.1/apps/notes/launch", 400),
        ("apps/notes/launch", 400),
    ])
    def test_an_absolute_target_is_checked_like_a_host(
        self, api: HttpApi, target: str, status: int
    ) -> None:
        """``POST http://evil.example/...`` was routed by its path while only the (loopback)
        Host header was checked; RFC 9112 says the target's host replaces that header."""
        reply = api.raw(f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Connection: close\r\n\r\n".encode())
        assert reply.status == status
        assert api.app("notes")["state"] == "stopped"

    def test_an_absolute_target_naming_us_is_served(self, api: HttpApi) -> None:
        reply = api.raw(f"GET http://localhost:{api.port}/apps/notes/state HTTP/1.1\r\n"
                        "Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        assert (reply.status, reply.body["name"]) == (200, "notes")

    def test_a_non_loopback_peer_is_403(self, api_server: ApiServer) -> None:
        """The listener is loopback-only, so a foreign peer is staged at the handler: a real
        TCP connection, with the address the handler is told it came from."""
        with socket.create_server(("127.0.0.1", 0)) as listener:
            ours = socket.create_connection(listener.getsockname())
            theirs, _ = listener.accept()
        with ours, theirs:
            ours.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            handler = _Handler(theirs, ("192.0.2.7", 40000), api_server._server)
            assert handler.serve() is False  # refused and closed
            handler.finish()
            theirs.shutdown(socket.SHUT_WR)
            answer = ours.makefile("rb").read().decode()
        assert answer.startswith("HTTP/1.1 403"), answer
        body = json.loads(answer.split("\r\n\r\n", 1)[1])
        assert body == {"error": "requests from non-localhost origins are rejected",
                        "code": "forbidden"}

    def test_500_hides_the_traceback_and_logs_it(self, api_server: ApiServer,
                                                 tmp_path: Path) -> None:
        """The traceback must reach the daemon's log file and console, not just be asked for:
        rendered on the log thread, ``exc_info=True`` found no exception there."""
        with daemon_logging(tmp_path / "daemon.log") as console:
            conn = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=5)
            conn.request("GET", "/explode")
            response = conn.getresponse()
            body = json.loads(response.read())
        assert response.status == 500
        assert body == {"error": "internal error (see the daemon log)", "code": "internal_error"}
        [event] = logged(tmp_path / "daemon.log", "http_internal_error")
        assert event["path"] == "/explode"
        assert event["exception"].startswith("Traceback (most recent call last):")
        assert event["exception"].endswith("RuntimeError: secret detail")
        assert "in explode" in event["exception"]
        assert "RuntimeError: secret detail" in console.getvalue()


class TestTransport:
    def test_keep_alive_serves_many_requests_on_one_connection(self, api: HttpApi) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        conn.connect()
        sock = conn.sock
        for path in ("/health", "/apps", "/apps/notes/state", "/nowhere", "/health"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.getheader("Connection") != "close"
        assert conn.sock is sock  # never reconnected
        conn.close()

    def test_every_request_is_logged(self, serve: Any) -> None:
        api, daemon = serve()
        api.get("/apps/notes/state")
        api.post("/apps/nosuch/ready")
        daemon: DaemonProcess
        ok = daemon.wait_event("http_request", path="/apps/notes/state")
        missing = daemon.wait_event("http_request", path="/apps/nosuch/ready")
        assert (ok["method"], ok["status"], missing["status"]) == ("GET", 200, 404)
        assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] < 50
