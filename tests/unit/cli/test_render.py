"""Durations, tables and the colour rules of the command line's human output."""

from __future__ import annotations

import io

import pytest

from orchestratr.cli.render import Output, duration, parse_time, wants_colour


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.9, "0s"), (42, "42s"), (60, "1m00s"), (192, "3m12s"), (3599, "59m59s"),
    (3600, "1h00m"), (7500, "2h05m"), (86400, "1d00h"), (3 * 86400 + 4 * 3600 + 59, "3d04h"),
    (-5, "0s"),
])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_parse_time_reads_the_apis_utc_timestamps() -> None:
    assert parse_time("1970-01-01T00:01:00Z") == 60
    assert parse_time("1970-01-01T00:00:01.5+00:00") == 1.5
    assert parse_time(None) is None
    assert parse_time("yesterday") is None


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert wants_colour(Tty()) is True
    assert wants_colour(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert wants_colour(Tty()) is False
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: an empty value does not count
    assert wants_colour(Tty()) is True
    monkeypatch.setenv("TERM", "dumb")
    assert wants_colour(Tty()) is False


def test_table_pads_before_painting_so_columns_align(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Output(json_mode=False, out=Tty())
    lines = out.table(["NAME", "STATE", "ERROR"],
                      [["a", "ready", ""], ["longer-name", "failed", "boom"]],
                      [[None, "green", None], [None, "red", "red"]])
    assert lines[1] == "a            \x1b[32mready \x1b[0m"
    assert lines[2] == "longer-name  \x1b[31mfailed\x1b[0m  \x1b[31mboom\x1b[0m"
    plain = Output(json_mode=False, out=io.StringIO()).table(
        ["NAME", "STATE", "ERROR"], [["a", "ready", ""], ["longer-name", "failed", "boom"]])
    assert plain == ["NAME         STATE   ERROR", "a            ready", "longer-name  failed  boom"]


def test_errors_go_to_stderr_for_people_and_stdout_as_json() -> None:
    out, err = io.StringIO(), io.StringIO()
    Output(False, out, err).error("bad config", "invalid_config", ["one", "two"])
    assert out.getvalue() == "" and err.getvalue() == "orchestratr: bad config\n  - one\n  - two\n"
    out, err = io.StringIO(), io.StringIO()
    Output(True, out, err).error("bad config", "invalid_config", ["one"])
    assert err.getvalue() == ""
    assert out.getvalue() == ('{\n  "error": "bad config",\n  "code": "invalid_config",\n'
                              '  "errors": [\n    "one"\n  ]\n}\n')
