"""Shell completion in the real shells: bash (its completion function called as bash calls
it), fish (``complete -C``) and zsh (typed into a tmux terminal, as a person would), with app
names from a running daemon."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cli.conftest import Run, Shared, Tmux, clean_env


@pytest.fixture
def scripts(shared_daemon: Shared, tmp_path: Path) -> dict[str, Path]:
    made = {}
    for shell in ("bash", "zsh", "fish"):
        run = shared_daemon.cli("completion", shell)
        assert run.code == 0, run.err
        made[shell] = tmp_path / f"orchestratr.{shell}"
        made[shell].write_text(run.out)
    return made


def bash(script: Path, line: str) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end)."""
    words = line.split(" ")
    program = f"""
source {script}
COMP_WORDS=({" ".join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={line!r}
COMP_POINT={len(line)}
_orchestratr
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                          env=clean_env(), timeout=20, check=True)
    return [w for w in done.stdout.splitlines() if w]


def fish(script: Path, line: str) -> list[str]:
    done = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C {line!r}"],
                          capture_output=True, text=True, env=clean_env(), timeout=20, check=True)
    return [w.split("\t")[0] for w in done.stdout.splitlines()]


def with_dir(shared: Shared, line: str) -> str:
    return line.replace("orchestratr", f"orchestratr --config-dir {shared.config_dir}", 1)


class TestBash:
    def test_commands_options_and_app_names(
        self, shared_daemon: Shared, scripts: dict[str, Path]
    ) -> None:
        script = scripts["bash"]
        assert bash(script, "orchestratr la") == ["launch"]
        assert set(bash(script, "orchestratr l")) == {"list", "logs", "launch"}
        assert bash(script, "orchestratr logs --fo") == ["--follow"]
        line = with_dir(shared_daemon, "orchestratr stop s")
        assert bash(script, line) == ["sleeper", "stubborn"]
        assert "all" in bash(script, with_dir(shared_daemon, "orchestratr restart "))
        assert bash(script, with_dir(shared_daemon, "orchestratr launch notes n")) == []  # given
        assert bash(script, with_dir(shared_daemon, "orchestratr events --app no")) == ["notes"]
        assert bash(script, "orchestratr events --type st") == ["state"]
        assert bash(script, "orchestratr completion f") == ["fish"]

    def test_without_a_daemon_no_names_and_no_error(self, scripts: dict[str, Path],
                                                    tmp_path: Path) -> None:
        assert bash(scripts["bash"], f"orchestratr --config-dir {tmp_path} show ") == []


class TestFish:
    def test_commands_with_descriptions_and_app_names(
        self, shared_daemon: Shared, scripts: dict[str, Path]
    ) -> None:
        script = scripts["fish"]
        assert fish(script, "orchestratr to") == ["top"]
        assert fish(script, with_dir(shared_daemon, "orchestratr show b")) == ["broken"]
        described = subprocess.run(
            ["fish", "--no-config", "-c", f"source {script}; complete -C 'orchestratr sho'"],
            capture_output=True, text=True, env=clean_env(), timeout=20, check=True).stdout
        assert described.startswith("show\tone app in full")


class TestZsh:
    def test_typed_in_a_terminal(
        self, shared_daemon: Shared, scripts: dict[str, Path], tmp_path: Path,
        tmux: Callable[..., Tmux],
    ) -> None:
        zdotdir = tmp_path / "zdotdir"
        zdotdir.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "orchestratr").symlink_to("/bin/true")  # the word zsh completes for
        (zdotdir / ".zshrc").write_text(f"PS1='zsh> '\nsource {scripts['zsh']}\n")
        terminal = Tmux(f"orchestratr-zsh-{tmp_path.name}", ["zsh", "-i"],
                        {"ZDOTDIR": str(zdotdir), "PATH": f"{bin_dir}:/usr/bin:/bin"})
        try:
            terminal.wait_for("zsh>")
            terminal.keys(f"orchestratr --config-dir {shared_daemon.config_dir} resta", "Tab")
            terminal.wait_for("restart")
            terminal.keys("noo", "BSpace", "Tab")
            terminal.wait_for("restart notes")
        finally:
            terminal.close()


def test_the_script_runs_this_program(shared_daemon: Shared, tmp_path: Path) -> None:
    """Generated where orchestratr is not on PATH, the script calls it as it was run."""
    run: Run = shared_daemon.cli("completion", "bash")
    assert "-m orchestratr __complete bash" in run.out
