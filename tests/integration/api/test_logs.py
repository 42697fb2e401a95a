"""An app's output over HTTP: ``GET /apps/{name}/logs`` (the last lines, or followed live), and
the file behind it, rotated while the app runs without losing a line, across daemon restarts.
Real daemons, real apps writing real pipes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from orchestratr import applog
from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.api.conftest import HttpApi, SseClient, port_of

CONFIG = """\
apps:
  - name: talker
    command: i=1; while [ $i -le 250 ]; do echo "line $i"; i=$((i+1)); done; sleep 60
  - name: quiet
    command: sleep 60
  - name: ticker
    command: for i in 1 2 3; do echo "tick $i"; sleep 0.2; done; sleep 60
  - name: flood
    command: seq 1 1600000; sleep 60
  - name: gated
    command: while [ ! -e {gate}/go ]; do sleep 0.02; done; seq 1 100000; echo finished; sleep 60
"""


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    path = tmp_path / "gate"
    path.mkdir()
    return path


@pytest.fixture
def logs_api(
    config_dir: Path, gate: Path, start_daemon: Callable[..., DaemonProcess]
) -> tuple[HttpApi, DaemonProcess]:
    write_config(config_dir, CONFIG.replace("{gate}", str(gate)))
    daemon = start_daemon("--no-hotkeys")
    return HttpApi(port_of(config_dir)), daemon


@pytest.fixture
def api(logs_api: tuple[HttpApi, DaemonProcess]) -> HttpApi:
    return logs_api[0]


@pytest.fixture
def follow(open_stream: Callable[..., SseClient]) -> Callable[..., SseClient]:
    """``follow(name, query)``: a reader of the app's log stream, closed after the test."""
    return lambda name, query="follow=true": open_stream(f"/apps/{name}/logs", query)


def log_file(config_dir: Path, name: str) -> Path:
    return config_dir / "logs" / "apps" / f"{name}.log"


def last_line(api: HttpApi, name: str) -> str | None:
    lines = api.get(f"/apps/{name}/logs?lines=1").body["lines"]
    return lines[0] if lines else None


class TestLines:
    def test_the_last_lines_of_an_app_with_where_they_are(
        self, api: HttpApi, config_dir: Path
    ) -> None:
        api.post("/apps/talker/launch")
        wait_for(lambda: last_line(api, "talker") == "line 250", what="all 250 lines")
        reply = api.get("/apps/talker/logs")
        assert reply.status == 200
        assert reply.body["app"] == "talker"
        assert reply.body["path"] == str(log_file(config_dir, "talker"))
        assert reply.body["lines"] == [f"line {i}" for i in range(151, 251)]  # 100 by default
        assert api.get("/apps/talker/logs?lines=3").body["lines"] == [
            "line 248", "line 249", "line 250"]
        everything = api.get("/apps/talker/logs?lines=10000").body["lines"]
        assert everything[0].startswith("--- orchestratr: ")  # the run's header
        assert everything[1:] == [f"line {i}" for i in range(1, 251)]

    def test_the_path_is_also_in_the_apps_details(self, api: HttpApi, config_dir: Path) -> None:
        assert api.app("quiet")["log_path"] == str(log_file(config_dir, "quiet"))
        # names are found whatever their case; the file is the app's, not the URL's spelling
        assert api.app("QUIET")["log_path"] == str(log_file(config_dir, "quiet"))

    def test_an_app_that_never_ran_has_no_lines(self, api: HttpApi, config_dir: Path) -> None:
        reply = api.get("/apps/quiet/logs")
        assert (reply.status, reply.body) == (200, {
            "app": "quiet", "path": str(log_file(config_dir, "quiet")), "lines": []})

    def test_an_unknown_app_is_404(self, api: HttpApi) -> None:
        reply = api.get("/apps/nope/logs")
        assert (reply.status, reply.body["code"]) == (404, "not_found")
        assert "nope" in reply.body["error"]

    @pytest.mark.parametrize(("query", "message"), [
        ("lines=10001", "lines: must be from 0 to 10000"),
        ("lines=-1", "lines: must be from 0 to 10000"),
        ("lines=many", "lines: expected a number"),
        ("follow=maybe", "follow: expected true or false"),
        ("tail=5", "unknown query parameter(s): 'tail'"),
    ])
    def test_bad_parameters_are_400(self, api: HttpApi, query: str, message: str) -> None:
        reply = api.get(f"/apps/talker/logs?{query}")
        assert (reply.status, reply.body["code"]) == (400, "bad_request")
        assert message in reply.body["error"]


class TestRotation:
    def test_a_running_app_is_rotated_at_the_limit_without_losing_a_line(
        self, api: HttpApi, config_dir: Path
    ) -> None:
        """11.5 MB in one run (the limit is 5 MiB): files of at most 5 MiB, each ending at a
        line's end, that hold every line once and in order; the app runs on."""
        api.post("/apps/flood/launch")
        wait_for(lambda: last_line(api, "flood") == "1600000", timeout=30, what="all lines")
        path = log_file(config_dir, "flood")
        files = [applog.rotated(path, 2), applog.rotated(path, 1), path]
        sizes = [f.stat().st_size for f in files]
        assert all(0 < size <= applog.LOG_MAX_BYTES for size in sizes), sizes
        assert not applog.rotated(path, 3).exists()
        contents = [f.read_bytes() for f in files]
        assert all(c.endswith(b"\n") for c in contents)
        header, _, rest = b"".join(contents).partition(b"\n")
        assert header.startswith(b"--- orchestratr: ")
        assert rest == b"".join(b"%d\n" % i for i in range(1, 1600001))
        assert api.app("flood")["state"] == "ready"

    def test_a_current_file_with_fewer_lines_is_preceded_by_the_rotated_one(
        self, api: HttpApi, config_dir: Path
    ) -> None:
        path = log_file(config_dir, "quiet")
        path.parent.mkdir(parents=True)
        applog.rotated(path, 2).write_text("older\n")
        applog.rotated(path, 1).write_text("a\nb\nc\n")
        path.write_text("d\ne\n")
        assert api.get("/apps/quiet/logs?lines=4").body["lines"] == ["b", "c", "d", "e"]
        assert api.get("/apps/quiet/logs?lines=9").body["lines"] == ["a", "b", "c", "d", "e"]
        assert api.get("/apps/quiet/logs?lines=1").body["lines"] == ["e"]


class TestFollow:
    def test_lines_arrive_as_written_and_each_run_is_marked(
        self, api: HttpApi, follow: Callable[..., SseClient]
    ) -> None:
        stream = follow("ticker")
        assert (stream.status, stream.headers["content-type"]) == (200, "text/event-stream")
        api.post("/apps/ticker/launch")
        first = stream.events(4)
        assert [e.type for e in first] == ["launch", "line", "line", "line"]
        # the command as configured (the file's header quotes it: the stream does not)
        assert first[0].data["command"] == 'for i in 1 2 3; do echo "tick $i"; sleep 0.2; done; sleep 60'
        assert [e.data["line"] for e in first[1:]] == ["tick 1", "tick 2", "tick 3"]
        assert all(e.data["at"].endswith("Z") for e in first)

        api.post("/apps/ticker/restart")
        again = stream.events(4, timeout=10)
        assert [e.type for e in again] == ["launch", "line", "line", "line"]
        assert [e.data["line"] for e in again[1:]] == ["tick 1", "tick 2", "tick 3"]

    def test_the_last_lines_come_first(
        self, api: HttpApi, follow: Callable[..., SseClient]
    ) -> None:
        api.post("/apps/talker/launch")
        wait_for(lambda: last_line(api, "talker") == "line 250", what="all 250 lines")
        stream = follow("talker", "follow=true&lines=2")
        backlog = stream.events(2)
        assert [(e.type, e.data["line"], e.data["at"]) for e in backlog] == [
            ("line", "line 249", None), ("line", "line 250", None)]

    def test_a_follower_crosses_rotations(
        self, api: HttpApi, follow: Callable[..., SseClient]
    ) -> None:
        """11.5 MB read by a follower slower than the app: it falls behind by more than one
        rotation, and still gets every line once, in order (read raw: the frames are many)."""
        stream = follow("flood", "follow=true&lines=0")
        api.post("/apps/flood/launch")
        expected, rest = 1, b""
        stream.sock.settimeout(10)
        while expected <= 1600000:
            chunk = stream.file.read1(1 << 20)
            assert chunk, f"the stream ended before line {expected}"
            *frames, rest = (rest + chunk).split(b"\n\n")
            for frame in frames:
                if frame.startswith(b"event: line"):
                    assert json.loads(frame.partition(b"data: ")[2])["line"] == str(expected)
                    expected += 1

    def test_an_unknown_app_is_404_before_any_stream(self, api: HttpApi) -> None:
        reply = api.get("/apps/nope/logs?follow=true")
        assert (reply.status, reply.body["code"]) == (404, "not_found")


class TestAcrossDaemons:
    def test_an_app_left_by_a_stopped_daemon_keeps_writing_to_its_file(
        self, logs_api: tuple[HttpApi, DaemonProcess], gate: Path, config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        """A drain process takes over the pipes of apps a daemon leaves running: far more than
        a pipe holds is written meanwhile, and the next daemon reads on."""
        api, daemon = logs_api
        api.post("/apps/gated/launch")
        pid = api.app("gated")["pid"]
        assert daemon.stop() == 0
        (gate / "go").touch()
        path = log_file(config_dir, "gated")
        wait_for(lambda: applog.last_line(path) == "finished", timeout=15,
                 what="the drain to copy what the app wrote")
        assert psutil.pid_exists(pid)

        start_daemon("--no-hotkeys")
        api = HttpApi(port_of(config_dir))
        assert api.app("gated")["pid"] == pid
        lines = path.read_text().split("\n")
        assert lines[1:] == [*(str(i) for i in range(1, 100001)), "finished", ""]

    def test_an_app_whose_daemon_was_killed_waits_and_loses_nothing(
        self, logs_api: tuple[HttpApi, DaemonProcess], gate: Path, config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        """With no reader left, the app is not killed by SIGPIPE: its writes wait, and the
        next daemon, adopting it, reopens its pipe and copies everything."""
        api, daemon = logs_api
        api.post("/apps/gated/launch")
        pid = api.app("gated")["pid"]
        daemon.stop(signal.SIGKILL)
        (gate / "go").touch()
        wait_for(lambda: _blocked_on_its_pipe(pid), what="the app to fill its pipe")

        start_daemon("--no-hotkeys")
        api = HttpApi(port_of(config_dir))
        wait_for(lambda: last_line(api, "gated") == "finished", timeout=15,
                 what="the new daemon to copy the rest")
        assert api.app("gated")["state"] == "ready"
        lines = log_file(config_dir, "gated").read_text().split("\n")
        assert lines[1:] == [*(str(i) for i in range(1, 100001)), "finished", ""]


def _blocked_on_its_pipe(pgid: int) -> bool:
    """Some process of the group waits to write to a full pipe."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and "pipe" in Path(
                    f"/proc/{proc.pid}/wchan").read_text():
                return True
        except OSError:
            continue
    return False
