"""Real headless Chromium on pages of other loopback origins, trying what issue 12 saw it do:
launch and stop apps and reload the config through a no-cors fetch, ``navigator.sendBeacon``
and an auto-submitted HTML form. Every attempt must reach the daemon and be refused 403.

The page that matters most is ``http://127.0.0.1`` (port 80, bound when we can: root, as in
CI): the guard once took a loopback origin without a port for ours. ``http://localhost:<port>``
(another port of ours) is the common case of a local dev server. One Chromium runs both: the
port-80 page holds the other in an iframe. Each attempt tags its target (``?via=form&page=...``)
so the daemon's log says which way, from which page, was refused: a request the guard lets
through is logged by its routed path, without the tag.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import DaemonProcess, wait_for
from tests.integration.api.conftest import HttpApi

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
ATTEMPTS = ("/apps/notes/launch", "/apps/sleeper/stop", "/reload")
WAYS = ("fetch", "beacon", "form")
ATTACK = """<!doctype html><meta charset="utf-8"><title>attack</title><body>
{frame}
<script>
const daemon = "http://127.0.0.1:{daemon_port}";
const paths = {paths};
const tag = (way) => "?via=" + way + "&page=" + encodeURIComponent(location.origin);
paths.forEach((path, i) => {{
  fetch(daemon + path + tag("fetch"), {{method: "POST", mode: "no-cors", body: "{{}}",
                         headers: {{"Content-Type": "text/plain"}}}}).catch(() => {{}});
  navigator.sendBeacon(daemon + path + tag("beacon"), "{{}}");
  const sink = document.createElement("iframe");
  sink.name = "sink" + location.port + "-" + i;
  document.body.appendChild(sink);
  const form = document.createElement("form");
  form.method = "POST";
  form.enctype = "text/plain";
  form.action = daemon + path + tag("form");
  form.target = sink.name;
  document.body.appendChild(form);
  form.submit();
}});
</script>
"""


class _Pages(BaseHTTPRequestHandler):
    """Serves the attack page; ``server.frame`` is the HTML of an iframe to embed, or ''."""

    server: Any

    def do_GET(self) -> None:
        body = ATTACK.format(frame=self.server.frame, daemon_port=self.server.daemon_port,
                             paths=list(ATTEMPTS)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the daemon's log is what the test reads."""


@contextlib.contextmanager
def page_server(port: int, daemon_port: int, frame: str = "") -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Pages)
    server.daemon_threads = True
    server.frame = frame  # type: ignore[attr-defined]
    server.daemon_port = daemon_port  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def chromium(url: str, profile: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Headless Chromium on ``url`` in a fresh profile and a process group of its own, which
    is ended whole (renderers, GPU and network services included) when the test is done."""
    proc = subprocess.Popen(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _port_80_free() -> bool:
    """Whether this test may serve ``http://127.0.0.1`` (root, and nobody else on port 80)."""
    try:
        with page_server(80, 0):
            return True
    except OSError:
        return False


@pytest.fixture
def served(serve: Callable[..., tuple[HttpApi, DaemonProcess]]) -> tuple[HttpApi, DaemonProcess]:
    if shutil.which("chromium") is None:
        pytest.fail("the browser tests need Debian's chromium (make test installs it)")
    return serve()


def test_pages_of_other_loopback_origins_are_refused_by_every_means(
    served: tuple[HttpApi, DaemonProcess], tmp_path: Path
) -> None:
    api, daemon = served
    sleeper_pid = api.post("/apps/sleeper/launch").body["pid"]
    api.wait_state("sleeper", "ready")
    port_80 = _port_80_free()
    with contextlib.ExitStack() as stack:
        inner = stack.enter_context(page_server(0, api.port))
        inner_url = f"http://localhost:{inner.server_address[1]}/"
        url, pages = inner_url, [inner_url.rstrip("/")]
        if port_80:
            stack.enter_context(page_server(80, api.port, f'<iframe src="{inner_url}"></iframe>'))
            url = "http://127.0.0.1/"
            pages.append(url.rstrip("/"))
        stack.enter_context(chromium(url, tmp_path / "profile"))

        def attempts() -> list[dict[str, Any]]:
            return [e for e in daemon.events()
                    if e["event"] == "http_request" and e["path"].split("?")[0] in ATTEMPTS]

        expected = [f"{path}?via={way}&page={quote(page, safe='')}"
                    for path in ATTEMPTS for way in WAYS for page in pages]
        wait_for(lambda: len(attempts()) >= len(expected), 30,
                 what=f"{len(expected)} attempts logged, got {attempts()}")
    assert {e["path"]: e["status"] for e in attempts()} == dict.fromkeys(expected, 403)
    assert api.app("notes")["state"] == "stopped"
    assert (api.app("sleeper")["state"], api.app("sleeper")["pid"]) == ("ready", sleeper_pid)
    assert not [e for e in daemon.events() if e["event"] == "reloaded" and e["source"] == "api"]
