"""A command line that guides: several names and ``all``, did-you-mean for commands and apps,
help for every option and examples for every command, each error said once, short event
ids, and hints that name a command that runs. Against real daemons."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestratr.cli.main import VERBS, build_parser
from tests.conftest import DaemonProcess, write_config
from tests.integration.cli.conftest import ORCHESTRATR, Run, Shared, clean_env, run_cli


def state_of(shared: Shared, name: str) -> str:
    return next(a["state"] for a in shared.cli("list", "--json").json if a["name"] == name)


class TestSeveralNames:
    def test_launch_several_then_stop_all(self, shared_daemon: Shared) -> None:
        cli = shared_daemon.cli
        run = cli("launch", "notes", "sleeper")
        assert run.code == 0, run.err
        pids = {a["name"]: a["pid"] for a in cli("list", "--json").json}
        assert run.lines == [f"launched notes (pid {pids['notes']})",
                             f"launched sleeper (pid {pids['sleeper']})"]
        stopped = cli("stop", "all", "--wait")
        assert stopped.code == 0, stopped.err
        assert stopped.out == ("notes: stopped\nsleeper: stopped\nstubborn: stopped\n"
                               "broken: stopped\n")
        assert {state_of(shared_daemon, n) for n in pids} == {"stopped"}

    def test_one_line_each_and_exit_1_when_one_fails(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("launch", "sleeper", "slepper")
        assert run.code == 1
        assert len(run.lines) == 1 and run.lines[0].startswith(("launched sleeper",
                                                                 "sleeper is already running"))
        assert run.err == ("orchestratr: slepper: app 'slepper' not found; did you mean "
                           "'sleeper'?\n")
        as_json = shared_daemon.cli("launch", "sleeper", "slepper", "--json")
        assert as_json.code == 1
        ok, failed = as_json.json
        assert ok["app"] == "sleeper" and ok["state"] == "ready"
        assert failed == {"app": "slepper", "error": "app 'slepper' not found",
                          "code": "not_found"}
        assert shared_daemon.cli("stop", "sleeper").code == 0

    def test_restart_all(self, shared_daemon: Shared) -> None:
        cli = shared_daemon.cli
        assert cli("launch", "notes").code == 0
        before = next(a["pid"] for a in cli("list", "--json").json if a["name"] == "notes")
        run = cli("restart", "all", "--wait", "--json")
        results = {r["app"]: r for r in run.json}
        assert set(results) == {"notes", "sleeper", "stubborn", "broken"}
        assert results["notes"]["state"] == "ready" and results["notes"]["pid"] != before
        assert results["broken"]["code"] == "launch_failed"
        assert run.code == 1
        cli("stop", "all", "--wait")


class TestDidYouMean:
    def test_a_mistyped_command(self, cli: Callable[..., Run]) -> None:
        run = cli("lauch", "notes")
        assert run.code == 2 and run.out == ""
        assert "unknown command 'lauch'; did you mean 'launch'?" in run.err

    def test_a_mistyped_app(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("launch", "noets")
        assert run.code == 1
        assert run.err == "orchestratr: app 'noets' not found; did you mean 'notes'?\n"
        assert shared_daemon.cli("launch", "noets", "--json").json == {
            "error": "app 'noets' not found", "code": "not_found"}  # scripts get the API's

    def test_nothing_close_lists_the_known_apps(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("stop", "xyzzy")
        assert run.err == ("orchestratr: app 'xyzzy' not found; known apps: notes, sleeper, "
                           "stubborn, broken\n")


class TestEvents:
    def test_an_unknown_app_is_exit_1(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("events", "--app", "nope")
        assert (run.code, run.out) == (1, "")
        assert run.err.startswith("orchestratr: app 'nope' not found")
        follow = shared_daemon.cli("events", "--app", "nope", "--follow", timeout=10)
        assert follow.code == 1

    def test_type_filters_ignore_case(self, shared_daemon: Shared) -> None:
        shared_daemon.cli("launch", "notes")
        upper = shared_daemon.cli("events", "--type", "STATE", "--json")
        lower = shared_daemon.cli("events", "--type", "state", "--json")
        assert upper.code == 0 and upper.out == lower.out and upper.out

    def test_text_shows_short_ids_that_since_takes(self, shared_daemon: Shared) -> None:
        shared_daemon.cli("launch", "notes")
        records = [json.loads(x) for x in shared_daemon.cli("events", "--json").lines]
        assert all(len(str(r["id"])) == 16 for r in records)
        lines = shared_daemon.cli("events").lines
        short = [re.search(r"  #(\d{6})  ", line).group(1) for line in lines]  # type: ignore[union-attr]
        assert short == [f"{r['id'] % 10**6:06d}" for r in records]
        after = shared_daemon.cli("events", "--json", "--since", short[-3]).lines
        assert [json.loads(x)["id"] for x in after] == [r["id"] for r in records[-2:]]


class TestHelp:
    def test_no_arguments_prints_the_help(self, cli: Callable[..., Run]) -> None:
        run = cli()
        assert run.code == 0 and run.err == ""
        assert run.out.startswith("usage: orchestratr")
        assert all(f"    {verb}" in run.out for verb in VERBS)

    def test_every_register_option_says_what_it_is(self) -> None:
        register = _subparser("register")
        for action in register._actions:
            assert action.help, action.option_strings or action.dest

    @pytest.mark.parametrize("verb", list(VERBS))
    def test_every_commands_help_ends_with_examples(self, verb: str) -> None:
        run = run_cli(verb, "--help")
        assert run.code == 0
        examples = run.out.rstrip("\n").split("\nexamples:\n")[1].splitlines()
        assert 1 <= len(examples) <= 2
        assert all(line.startswith("  ") and "orchestratr " in line for line in examples)


def _subparser(verb: str):  # type: ignore[no-untyped-def]
    parser = build_parser()
    subparsers = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    return subparsers.choices[verb]


class TestErrorsOnce:
    def test_a_registration_error_is_printed_once(self, shared_daemon: Shared) -> None:
        run = shared_daemon.cli("register", "bad/name", "--command", "x", "--chord", "??")
        assert run.code == 1
        assert run.err.count("must be 1 to 128 characters") == 1, run.err
        assert run.err.count("is not one character") == 1, run.err
        assert run.err.splitlines()[0] == "orchestratr: config validation failed with 2 error(s):"

    def test_a_reload_error_is_printed_once(
        self, cli: Callable[..., Run], config_dir: Path,
        start_daemon: Callable[..., DaemonProcess],
    ) -> None:
        write_config(config_dir, "apps: []\n")
        start_daemon("--no-hotkeys")
        write_config(config_dir, "apps:\n  - name: bad/name\n    command: x\n")
        run = cli("reload")
        assert run.code == 1
        assert run.err.count("(bad/name): name") == 1, run.err


class TestHints:
    def test_a_hint_names_a_command_that_runs_here(
        self, cli: Callable[..., Run], config_dir: Path, tmp_path: Path
    ) -> None:
        """Not on PATH (as before `make install`): the hint also says how to run it here, and
        that works; on PATH, the plain name."""
        run = cli("status")
        assert run.code == 3
        hint = re.search(r"not on PATH here: `(.*?) daemon --config-dir", run.err)
        assert hint, run.err
        done = subprocess.run([*hint.group(1).split(), "--version"], capture_output=True,
                              text=True, check=False, env=clean_env(), timeout=20)
        assert done.returncode == 0 and done.stdout.startswith("orchestratr ")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        script = bin_dir / "orchestratr"
        script.write_text(f"#!{ORCHESTRATR[0]}\nfrom orchestratr.cli import main\n"
                          "raise SystemExit(main())\n")
        script.chmod(0o755)
        env = clean_env()
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        on_path = subprocess.run(["orchestratr", "--config-dir", str(config_dir), "status"],
                                 capture_output=True, text=True, env=env, check=False,
                                 timeout=20)
        assert on_path.returncode == 3
        assert f"`orchestratr daemon --config-dir {config_dir}`, or" in on_path.stderr
        assert "not on PATH" not in on_path.stderr
