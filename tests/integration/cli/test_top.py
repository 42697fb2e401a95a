"""``orchestratr top`` against a real daemon: driven headless by Textual's pilot (rows, live
updates, every key), and once in a real terminal (tmux) as a person would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestratr.cli.top import Top
from orchestratr.client import Client
from tests.conftest import DaemonProcess, write_config
from tests.integration.cli.conftest import Run, Tmux

CONFIG = """\
apps:
  - name: notes
    command: echo "notes started"; sleep 60
  - name: sleeper
    command: sleep 60
  - name: broken
    command: sleep 60
    cwd: /nonexistent/dir
"""


@pytest.fixture
def daemon(config_dir: Path, start_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    write_config(config_dir, CONFIG)
    return start_daemon("--no-hotkeys")


async def until(pilot: Any, predicate: Callable[[], object], what: str,
                timeout: float = 10.0) -> None:
    """Let the view run until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def cell(top: Top, name: str, column: str) -> str:
    return top.cells(name).get(column, "")


def rows(top: Top) -> list[str]:
    return top.rows()


def test_the_view_follows_the_daemon_and_its_keys_act(
    daemon: DaemonProcess, config_dir: Path
) -> None:
    client = Client(config_dir=config_dir)

    async def scenario() -> None:
        top = Top(Client(config_dir=config_dir))
        async with top.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: rows(top) == ["broken", "notes", "sleeper"], "the rows")
            assert cell(top, "notes", "STATE") == "stopped"

            client.launch("sleeper")  # from outside: the row follows the event stream
            await until(pilot, lambda: cell(top, "sleeper", "STATE") == "ready", "ready")
            pid = client.app("sleeper")["pid"]
            await until(pilot, lambda: cell(top, "sleeper", "PID") == str(pid), "its pid")
            await until(pilot, lambda: cell(top, "sleeper", "MEM") != "-", "its memory")

            await pilot.press("down")  # broken -> notes
            await pilot.press("l")
            await until(pilot, lambda: cell(top, "notes", "STATE") == "ready", "l launches")
            first = client.app("notes")["pid"]
            await pilot.press("r")
            await until(pilot, lambda: client.app("notes")["pid"] not in (None, first)
                        and cell(top, "notes", "PID") == str(client.app("notes")["pid"]),
                        "r restarts")
            await until(pilot, lambda: cell(top, "notes", "RESTARTS") == "1", "counted")
            await pilot.press("s")
            await until(pilot, lambda: cell(top, "notes", "STATE") == "stopped", "s stops")

            await pilot.press("o")
            log = top.query_one("#logs")
            await until(pilot, lambda: any("notes started" in str(line)
                                           for line in log.lines), "o shows its log")
            await pilot.press("escape")
            assert not log.has_class("shown")

            await pilot.press("slash", "s", "l")
            await until(pilot, lambda: rows(top) == ["sleeper"], "the filter")
            await pilot.press("escape")
            await until(pilot, lambda: len(rows(top)) == 3, "the filter cleared")

            await pilot.press("up", "up", "l")  # broken: the daemon's error is shown
            await until(pilot, lambda: cell(top, "broken", "STATE") == "failed", "it failed")
            await until(pilot, lambda: "does not exist" in cell(top, "broken", "ERROR"),
                        "the daemon's error")

            await pilot.press("q")
        assert top.return_code in (0, None)

    asyncio.run(scenario())


def test_a_restarted_daemon_is_followed_again(
    daemon: DaemonProcess, config_dir: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    async def scenario() -> None:
        top = Top(Client(config_dir=config_dir))
        async with top.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: len(rows(top)) == 3, "the rows")
            daemon.stop()
            status = top.query_one("#status")
            await until(pilot, lambda: "waiting for the daemon" in str(status.render()),
                        "the wait")
            start_daemon("--no-hotkeys")
            Client(config_dir=config_dir).launch("sleeper")
            await until(pilot, lambda: cell(top, "sleeper", "STATE") == "ready", "followed")
            await pilot.press("q")

    asyncio.run(scenario())


def test_in_a_real_terminal(
    daemon: DaemonProcess, cli: Callable[..., Run], config_dir: Path,
    tmux: Callable[..., Tmux],
) -> None:
    terminal = tmux("--config-dir", str(config_dir), "top")
    terminal.wait_for("q quit")  # the footer: keys for people
    screen = terminal.wait_for("sleeper")
    assert "NAME" in screen and "STATE" in screen
    assert cli("launch", "sleeper").code == 0
    pid = Client(config_dir=config_dir).app("sleeper")["pid"]
    terminal.wait_for(str(pid))
    terminal.keys("q")
    assert "EXIT=0" in terminal.wait_for("EXIT=")


def test_not_on_a_terminal_it_says_what_to_use(daemon: DaemonProcess,
                                                cli: Callable[..., Run]) -> None:
    run = cli("top")
    assert run.code == 2
    assert "top needs a terminal" in run.err
