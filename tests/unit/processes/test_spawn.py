"""Which commands run without a shell: those the shell would only split into words and exec."""

from __future__ import annotations

import pytest

from orchestratr.processes.spawn import direct_argv


@pytest.mark.parametrize(("command", "words"), [
    ("sleep 600", ["sleep", "600"]),
    ("  /usr/bin/xterm   -geometry 80x24+0+0 ", ["/usr/bin/xterm", "-geometry", "80x24+0+0"]),
    ("python3 -m http.server --bind=127.0.0.1 8000", [
        "python3", "-m", "http.server", "--bind=127.0.0.1", "8000"]),
    ("./run.sh user@host:22 50%", ["./run.sh", "user@host:22", "50%"]),
])
def test_plain_words_run_directly(command: str, words: list[str]) -> None:
    assert direct_argv(command) == words


@pytest.mark.parametrize("command", [
    "", "   ",
    'echo "hi there"', "echo 'hi'", r"echo a\ b",  # quotes and escapes
    "echo $HOME", "echo ${HOME}", "echo `date`", "echo $(date)",  # expansions
    "ls *.py", "ls file?", "ls [ab]", "cat ~/notes", "echo {a,b}",  # globs, tilde, braces
    "a | b", "a && b", "a; b", "a &", "a > out", "a < in", "a 2>&1",  # operators, redirections
    "(a)", "a # comment", "!a",
    "FOO=1 app", "exec app", "cd /tmp", "echo hi", "true", "[ -f x ]", "time app",  # builtins
    "if", "source env.sh", ". env.sh",
    "app\nother",  # a newline separates commands
])
def test_anything_a_shell_would_interpret_goes_through_one(command: str) -> None:
    assert direct_argv(command) is None
