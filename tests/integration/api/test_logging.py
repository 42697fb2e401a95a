"""The daemon's log as requests fill it: written in batches, rotated by size, nothing lost."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import structlog

from orchestratr import logs
from tests.conftest import wait_for
from tests.integration.api.conftest import daemon_logging, logged


def test_the_file_rotates_at_its_size_and_keeps_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size is counted as lines are written (RotatingFileHandler formatted every record
    twice to know it): no file may pass the limit, and no line may be lost or torn."""
    monkeypatch.setattr(logs, "LOG_MAX_BYTES", 4000)
    log_file = tmp_path / "daemon.log"
    with daemon_logging(log_file):
        for n in range(100):
            structlog.get_logger("orchestratr.api").info("http_request", n=n)
    files = sorted(tmp_path.glob("daemon.log*"))
    assert 3 <= len(files) <= 1 + logs.LOG_BACKUPS
    assert all(f.stat().st_size <= 4000 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(e["n"] for e in lines) == list(range(100))


def test_a_line_reaches_the_file_soon_after_a_lull(tmp_path: Path) -> None:
    """The writer waits a moment for the rest of a burst, but an idle daemon's next line is not
    held back until the next one comes."""
    log_file = tmp_path / "daemon.log"
    with daemon_logging(log_file):
        time.sleep(0.1)  # a lull, the condition under test: the writer goes back to sleep
        structlog.get_logger("orchestratr.api").info("http_request", n=1)
        started = time.monotonic()
        wait_for(lambda: logged(log_file, "http_request"), timeout=2, what="the line")
        assert time.monotonic() - started < 0.5
