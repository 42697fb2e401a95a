"""``orchestratr events``: buffered, filtered, and followed across dropped connections and a
daemon restart, without losing an event."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from tests.conftest import DaemonProcess, wait_for, write_config
from tests.integration.cli.conftest import ORCHESTRATR, Run, Shared, clean_env, run_cli

CONFIG = ("apps:\n  - name: notes\n    chord: n\n    command: sleep 60\n"
          "  - name: other\n    command: sleep 60\n")


def consecutive(records: list[dict[str, Any]]) -> bool:
    """One daemon numbers its events one by one: a gap is a lost event, a repeat a double."""
    ids = [r["id"] for r in records]
    return ids == list(range(ids[0], ids[0] + len(ids)))


def transitions(records: list[dict[str, Any]], app: str) -> list[tuple[str, str]]:
    return [(r["from"], r["to"]) for r in records if r.get("app") == app and r["type"] == "state"]


class TestBuffered:
    def test_human_and_json(self, shared_daemon: Shared) -> None:
        assert shared_daemon.cli("launch", "sleeper").code == 0
        assert shared_daemon.cli("stop", "sleeper", "--wait").code == 0
        records = [json.loads(line) for line in
                   shared_daemon.cli("events", "--json", "--app", "sleeper").lines]
        assert transitions(records, "sleeper") == [
            ("stopped", "launching"), ("launching", "launched"), ("launched", "ready"),
            ("ready", "stopping"), ("stopping", "stopped")]
        assert {r["app"] for r in records} == {"sleeper"}
        ids = [r["id"] for r in records]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        launch = next(r for r in records if r.get("to") == "launching")
        assert (launch["trigger"], launch["source"]) == ("launch", "api")
        human = shared_daemon.cli("events", "--app", "sleeper").lines
        assert len(human) == len(records)
        first = human[records.index(launch)]
        assert f"#{launch['id'] % 10**6:06d}" in first and "sleeper" in first  # the short id
        assert first.endswith("stopped -> launching (launch by api)")

    def test_type_and_since_filters(self, shared_daemon: Shared) -> None:
        assert shared_daemon.cli("reload").code == 0
        everything = [json.loads(x) for x in shared_daemon.cli("events", "--json").lines]
        reloads = [json.loads(x) for x in
                   shared_daemon.cli("events", "--json", "--type", "reloaded").lines]
        assert reloads and {r["type"] for r in reloads} == {"reloaded"}
        assert reloads == [r for r in everything if r["type"] == "reloaded"]
        middle = everything[len(everything) // 2]["id"]
        later = [json.loads(x) for x in
                 shared_daemon.cli("events", "--json", "--since", str(middle)).lines]
        assert later == [r for r in everything if r["id"] > middle]


class Follower:
    """``orchestratr events --follow --json`` in the background; its lines arrive on a queue."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([*ORCHESTRATR, "events", "--follow", "--json", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=clean_env(env), preexec_fn=_ctrl_c_works)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notes: list[str] = []  # stderr, as it comes
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_notes, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def _read_notes(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.notes.append(line)

    def until(self, predicate: Callable[[dict[str, Any]], bool],
              timeout: float = 10) -> list[dict[str, Any]]:
        """Every record up to and including the first that matches."""
        seen = []
        while True:
            try:
                record = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no matching event; saw {seen}; stderr: {self.stop()}")
            seen.append(record)
            if predicate(record):
                return seen

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return "".join(self.notes)


def _ctrl_c_works() -> None:
    """A test harness may start us with SIGINT ignored (as a shell does for `cmd &`), and the
    follower would inherit that; a person's terminal delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def reached(app: str, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get("app") == app and r.get("to") == state


@pytest.fixture
def follower() -> Iterator[Callable[..., Follower]]:
    made: list[Follower] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Follower:
        made.append(Follower(*args, env=env))
        return made[-1]

    yield make
    for f in made:
        if f.proc.poll() is None:
            f.stop()


class TestFollow:
    def test_follows_live_events_and_survives_a_daemon_restart(
        self, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess], follower: Callable[..., Follower],
    ) -> None:
        write_config(config_dir, CONFIG)
        first = start_daemon("--no-hotkeys")
        follow = follower("--config-dir", str(config_dir))
        assert cli("launch", "notes").code == 0
        assert cli("stop", "notes", "--wait").code == 0
        before = follow.until(reached("notes", "stopped"))
        assert before[0]["type"] == "reloaded"  # the daemon's first event: all of them, in order
        assert consecutive(before), "the buffered events, then the live ones"
        first.stop()
        start_daemon("--no-hotkeys")
        assert cli("launch", "notes").code == 0
        after = follow.until(reached("notes", "ready"))
        # The new daemon published its first event before its API was up: the follower reads
        # the new daemon from its start, not from "after the old daemon's last id".
        assert after[0]["type"] == "reloaded" and after[0]["id"] > before[-1]["id"]
        assert consecutive(after)
        assert transitions(after, "notes") == [
            ("stopped", "launching"), ("launching", "launched"), ("launched", "ready")]
        stderr = follow.stop()
        assert "waiting for the daemon" in stderr
        assert follow.proc.returncode == 130

    def test_a_dropped_connection_loses_no_event(
        self, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess], follower: Callable[..., Follower],
    ) -> None:
        write_config(config_dir, CONFIG)
        start_daemon("--no-hotkeys")
        port = int((config_dir / "port").read_text())
        with Proxy(port) as proxy:
            follow = follower(env={"ORCHESTRATR_URL": f"http://127.0.0.1:{proxy.port}"})
            assert cli("launch", "notes").code == 0
            seen = follow.until(reached("notes", "ready"))
            proxy.cut()  # the connection drops, and reconnecting fails for a while
            assert cli("launch", "other").code == 0  # events while the follower is away
            assert cli("stop", "other", "--wait").code == 0
            proxy.relay()
            seen += follow.until(reached("other", "stopped"))
        assert consecutive(seen), "an event was lost or repeated"
        assert ("launching", "launched") in transitions(seen, "other")


class Proxy:
    """A TCP relay to the daemon that can drop every connection, and then hang up on new ones
    (accept and close at once) until it is told to relay again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.refusing = False
        self._conns: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._conns += [client, upstream]
            # The daemon checks that Host names its own address (DNS rebinding): say so.
            host = (f"127.0.0.1:{self.port}".encode(), f"127.0.0.1:{self.target}".encode())
            for a, b, rewrite in ((client, upstream, host), (upstream, client, None)):
                threading.Thread(target=self._pump, args=(a, b, rewrite), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rewrite: tuple[bytes, bytes] | None) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data.replace(*rewrite) if rewrite else data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Drop every connection and hang up on new ones."""
        self.refusing = True
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conns.clear()

    def relay(self) -> None:
        self.refusing = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._listener.close()


def test_follow_waits_for_a_daemon_that_is_not_up_yet(
    config_dir: Path, follower: Callable[..., Follower],
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    """As after a disconnect: it says it waits, then reads the daemon from its first event."""
    follow = follower("--config-dir", str(config_dir))
    wait_for(lambda: "waiting for the daemon" in "".join(follow.notes), what="the notice")
    write_config(config_dir, CONFIG)
    start_daemon("--no-hotkeys")
    follow.until(lambda r: r.get("type") == "reloaded")
    assert follow.proc.poll() is None
    assert "waiting for the daemon: " in follow.stop()


def test_without_follow_no_daemon_is_exit_3(tmp_path: Path) -> None:
    run = run_cli("--config-dir", str(tmp_path), "events")
    assert run.code == 3 and "no port file at" in run.err
