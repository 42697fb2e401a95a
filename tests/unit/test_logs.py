"""The log formatter's fast path writes what structlog's ProcessorFormatter would."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from orchestratr import logs
from tests.integration.api.conftest import daemon_logging


@pytest.fixture
def records(tmp_path: Path) -> Iterator[list[logging.LogRecord]]:
    """What the daemon's logging hands its writer: real records from structlog and stdlib."""
    caught: list[logging.LogRecord] = []
    with daemon_logging(tmp_path / "o.log"):
        logging.getLogger().handlers[0].emit = caught.append  # type: ignore[method-assign]
        yield caught


def unstamped(line: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TIME", line)


def _emit(caught: list[logging.LogRecord]) -> None:
    log = structlog.get_logger("orchestratr.api")
    log.info("http_request", method="GET", path="/apps", status=200, duration_ms=0.5)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("http_internal_error", path="/explode")
    logging.getLogger("transitions").warning("a %s from the stdlib", "line")


@pytest.mark.parametrize("renderer", [structlog.processors.JSONRenderer(),
                                      structlog.dev.ConsoleRenderer(colors=False)])
def test_the_fast_path_writes_what_processor_formatter_writes(
    records: list[logging.LogRecord], renderer: structlog.typing.Processor
) -> None:
    _emit(records)
    assert len(records) == 3
    reference = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=logs._SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    fast = logs._formatter(renderer)
    for record in records:  # a stdlib record is stamped as it is formatted: not compared
        assert unstamped(fast.format(record)) == unstamped(reference.format(record))
    assert "ValueError: boom" in fast.format(records[1])
