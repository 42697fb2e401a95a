"""What the daemon's logging writes: structlog's events straight from its processors, and a
third party's stdlib records through the same processors, to the same file and console."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import structlog

from orchestratr import logs
from tests.integration.api.conftest import daemon_logging

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


def _emit() -> None:
    log = structlog.get_logger("orchestratr.api")
    log.info("http_request", method="GET", path="/apps", status=200, duration_ms=0.5)
    log.debug("below_the_level")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("http_internal_error", path="/explode")
    logging.getLogger("transitions").warning("a %s from the stdlib", "line")
    logging.getLogger("transitions").info("below its level")


def test_events_and_stdlib_records_are_written_alike(tmp_path: Path) -> None:
    log_file = tmp_path / "o.log"
    with daemon_logging(log_file) as console:
        _emit()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all(STAMP.match(line.pop("timestamp")) for line in lines)
    trace = lines[1].pop("exception")
    assert trace.startswith("Traceback (most recent call last):")
    assert trace.endswith("ValueError: boom")
    assert lines == [
        {"method": "GET", "path": "/apps", "status": 200, "duration_ms": 0.5,
         "event": "http_request", "level": "info", "logger": "orchestratr.api"},
        {"path": "/explode", "event": "http_internal_error", "level": "error",
         "logger": "orchestratr.api"},
        {"event": "a line from the stdlib", "level": "warning", "logger": "transitions"},
    ]
    assert list(lines[0]) == ["method", "path", "status", "duration_ms", "event", "level",
                              "logger"]  # the caller's fields first, as they were given
    shown = console.getvalue()
    for text in ("http_request", "method=GET", "http_internal_error", "ValueError: boom",
                 "a line from the stdlib", "[transitions]"):
        assert text in shown
    assert "below" not in shown


def test_the_level_applies_to_both_at_once(tmp_path: Path) -> None:
    """``log_level`` changes on reload: structlog's calls and stdlib records alike."""
    log_file = tmp_path / "o.log"
    log = structlog.get_logger("orchestratr.supervisor")
    with daemon_logging(log_file):
        logs.set_level("warning")
        log.info("quiet_info")
        log.warning("loud_warning")
        logging.getLogger("orchestratr.x").info("quiet_stdlib")
        logs.set_level("debug")
        log.debug("now_debug")
        logging.getLogger("orchestratr.x").debug("now_stdlib_debug")
    events = [json.loads(line)["event"] for line in log_file.read_text().splitlines()]
    assert events == ["loud_warning", "now_debug", "now_stdlib_debug"]
