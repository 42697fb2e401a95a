"""How the command line shows things: JSON for scripts, aligned text for people.

Colour is used only when the stream is a terminal, ``NO_COLOR`` is unset or empty
(https://no-color.org) and ``TERM`` is not ``dumb``, so piped output is always plain.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from orchestratr.supervisor.states import AppState

CODES = {"green": "32", "yellow": "33", "red": "31", "dim": "2", "bold": "1", "blue": "34",
         "magenta": "35", "cyan": "36"}
# Each app's lines in `orchestratr logs` carry its name in one of these, in turn
PREFIX_COLOURS = ("cyan", "magenta", "blue", "yellow", "green")
STATE_COLOURS = {
    AppState.ready.value: "green",
    AppState.launched.value: "yellow",
    AppState.launching.value: "yellow",
    AppState.stopping.value: "yellow",
    AppState.unresponsive.value: "yellow",
    AppState.failed.value: "red",
    AppState.stopped.value: "dim",
}
VERDICT_COLOURS = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}


def runnable(args: str) -> str:
    """A hint's command, ```orchestratr ARGS```, and, where ``orchestratr`` on PATH is not
    this program (before ``make install``), how to run it as it was run now."""
    command = f"`orchestratr {args}`"
    here = invocation()
    return command if here is None else f"{command} (not on PATH here: `{here} {args}`)"


@functools.cache
def invocation() -> str | None:
    """How to run this program again, when ``orchestratr`` on PATH is another one or none
    (None: it is this one)."""
    found = shutil.which("orchestratr")
    if found is not None and _runs_this_python(found):
        return None
    script = sys.argv[0]
    if not script or script.endswith(("__main__.py", "-c")) or not os.path.exists(script):
        return f"{sys.executable} -m orchestratr"
    return script


def _runs_this_python(script: str) -> bool:
    """Whether a console script's ``#!`` line names the interpreter running now."""
    try:
        with open(script, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    words = first[2:].split() if first.startswith(b"#!") else []
    return bool(words) and os.path.normpath(os.fsdecode(words[0])) == os.path.normpath(
        sys.executable)


def wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``3d04h``: two units at most, as people read uptimes."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def size(count: float) -> str:
    """``812K``, ``12.3M``, ``1.2G``: bytes as ``top`` shows memory."""
    kib = count / 1024
    if kib < 1024:
        return f"{kib:.0f}K"
    mib = kib / 1024
    return f"{mib:.1f}M" if mib < 1024 else f"{mib / 1024:.1f}G"


def parse_time(text: str | None) -> float | None:
    """An API timestamp (RFC 3339, ``Z`` for UTC) as epoch seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()  # 3.11 reads a "Z" suffix
    except ValueError:
        return None


class Output:
    """Where a verb's results go: ``--json`` documents or human lines, on stdout; notes and
    errors for people on stderr."""

    def __init__(self, json_mode: bool, out: TextIO | None = None, err: TextIO | None = None):
        self.json_mode = json_mode
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._colour = wants_colour(self.out)

    def paint(self, text: str, colour: str | None) -> str:
        if not self._colour or colour is None or not text:
            return text
        return f"\033[{CODES[colour]}m{text}\033[0m"

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def json(self, data: Any, compact: bool = False) -> None:
        """One JSON document; ``compact`` puts it on one line (streams: NDJSON)."""
        self.line(json.dumps(data) if compact else json.dumps(data, indent=2))

    def result(self, data: Any, text: str | Sequence[str]) -> None:
        """A verb's answer: ``data`` under --json, else ``text`` (a line or lines)."""
        if self.json_mode:
            self.json(data)
        else:
            for line in [text] if isinstance(text, str) else text:
                self.line(line)

    def note(self, text: str) -> None:
        """Progress for people (stderr), never mixed into what a script parses."""
        self.err.write(text + "\n")
        self.err.flush()

    def error(self, message: str, code: str, details: Sequence[str] = ()) -> None:
        """An error: ``{"error", "code"[, "errors"]}`` on stdout under --json, else stderr."""
        if self.json_mode:
            body: dict[str, Any] = {"error": message, "code": code}
            if details:
                body["errors"] = list(details)
            self.json(body)
            return
        self.note(f"orchestratr: {message}")
        for detail in details:
            self.note(f"  - {detail}")

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[str]],
        colours: Sequence[Sequence[str | None]] | None = None,
    ) -> list[str]:
        """Rows as lines with aligned columns (padding first, so colour never skews them);
        the last column is not padded, so no line ends in blanks."""
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        lines = [self._row(headers, widths, ["bold"] * len(headers))]
        for index, row in enumerate(rows):
            lines.append(self._row(row, widths, colours[index] if colours else None))
        return lines

    def _row(
        self, cells: Sequence[str], widths: Sequence[int], colours: Sequence[str | None] | None,
    ) -> str:
        last = len(cells) - 1
        parts = []
        for i, cell in enumerate(cells):
            padded = cell if i == last else cell.ljust(widths[i])
            colour = colours[i] if colours else None
            parts.append(self.paint(padded, colour) if colour else padded)
        return "  ".join(parts).rstrip()
