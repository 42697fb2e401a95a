"""Shell completion for bash, zsh and fish.

``orchestratr completion SHELL`` prints a small script for that shell; the script asks this
program for the words (``orchestratr __complete SHELL INDEX WORD...``: the words after the
program's name and the 1-based index of the one being completed), so verbs and options come
from the parser itself and app names from the running daemon (none if it does not answer
within half a second). Installed by one line each (see the README)::

    orchestratr completion bash > ~/.local/share/bash-completion/completions/orchestratr
    echo 'source <(orchestratr completion zsh)' >> ~/.zshrc
    orchestratr completion fish > ~/.config/fish/completions/orchestratr.fish
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from orchestratr.cli.render import invocation

if TYPE_CHECKING:
    from orchestratr.cli.main import Context

APPS_TIMEOUT_S = 0.5

BASH = r"""# orchestratr completion for bash: `orchestratr completion bash`
_orchestratr() {
    local IFS=$'\n'
    COMPREPLY=($(@COMMAND@ __complete bash "$COMP_CWORD" "${COMP_WORDS[@]:1}" 2>/dev/null))
}
complete -o default -F _orchestratr orchestratr
"""

ZSH = r"""#compdef orchestratr
# orchestratr completion for zsh: `orchestratr completion zsh`
_orchestratr() {
    local -a found
    found=("${(@f)$(@COMMAND@ __complete zsh $((CURRENT - 1)) "${(@)words[2,-1]}" 2>/dev/null)}")
    if [[ -n ${found[1]} ]]; then
        compadd -Q -a found
    else
        _files
    fi
}
if (( ! $+functions[compdef] )); then
    autoload -Uz compinit && compinit
fi
compdef _orchestratr orchestratr
"""

FISH = r"""# orchestratr completion for fish: `orchestratr completion fish`
function __orchestratr_complete
    set -l words (commandline -opc)
    @COMMAND@ __complete fish (count $words) $words[2..-1] (commandline -ct) 2>/dev/null
end
complete -c orchestratr -f -a '(__orchestratr_complete)'
"""


def script(ctx: Context) -> int:
    """Print the script, calling this program as it can be run now."""
    template = {"bash": BASH, "zsh": ZSH, "fish": FISH}[ctx.args.shell]
    command = invocation() or "orchestratr"
    quoted = " ".join(shlex.quote(word) for word in shlex.split(command))
    sys.stdout.write(template.replace("@COMMAND@", quoted))
    return 0


def complete(argv: list[str]) -> int:
    """``__complete SHELL INDEX WORD...``: print the candidates, one a line."""
    from orchestratr.cli.main import SHELLS

    if len(argv) < 2 or argv[0] not in SHELLS or not argv[1].isdigit():
        return 2
    shell, index, words = argv[0], max(1, int(argv[1])), argv[2:]
    words += [""] * (index - len(words))
    for word, description in _candidates(words[:index - 1], words[index - 1]):
        print(f"{word}\t{description}" if shell == "fish" and description else word)
    return 0


def _candidates(before: list[str], current: str) -> Iterator[tuple[str, str]]:
    from orchestratr.cli.main import VERBS, build_parser

    parser = build_parser()
    verb, config_dir, given = _read(parser, before)
    sub = _subparser(parser, verb) if verb else None
    taking = _takes_value(sub or parser, before[-1]) if before else None
    if taking is not None:
        found = _values(taking, config_dir)
    elif current.startswith("-"):
        found = _options(sub or parser)
    elif sub is None:
        found = [(name, help_text) for name, (_, _, help_text) in VERBS.items()]
    else:
        found = _positionals(sub, given, config_dir)
    yield from ((word, text) for word, text in found if word.startswith(current))


def _read(
    parser: argparse.ArgumentParser, words: list[str]
) -> tuple[str | None, str | None, list[str]]:
    """The verb, the ``--config-dir`` given, and the verb's positional words so far."""
    from orchestratr.cli.main import VERBS

    verb, config_dir, given = None, None, []
    sub = None
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--config-dir="):
            config_dir = word.partition("=")[2]
        elif word.startswith("-"):
            if _takes_value(sub or parser, word) is not None:
                i += 1
                if word == "--config-dir" and i < len(words):
                    config_dir = words[i]
        elif verb is None and word in VERBS:
            verb, sub = word, _subparser(parser, word)
        elif verb is not None:
            given.append(word)
        i += 1
    return verb, config_dir, given


def _subparser(parser: argparse.ArgumentParser, verb: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subparsers here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            found: argparse.ArgumentParser | None = action.choices.get(verb)
            return found
    return None


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    return [(option, action.help or "")
            for action in parser._actions  # noqa: SLF001
            for option in action.option_strings
            if option.startswith("--") and action.help != argparse.SUPPRESS]


def _takes_value(parser: argparse.ArgumentParser, option: str) -> str | None:
    """The option's long name when ``option`` is one that takes a value, else None."""
    for action in parser._actions:  # noqa: SLF001
        if option in action.option_strings and action.nargs != 0:
            return action.option_strings[-1]
    return None


def _values(option: str, config_dir: str | None) -> list[tuple[str, str]]:
    if option == "--app":
        return _apps(config_dir)
    if option == "--type":
        from orchestratr.supervisor.bus import EVENT_TYPES

        return [(t, "") for t in sorted(EVENT_TYPES)]
    if option == "--restart":
        from orchestratr.registry.model import RestartPolicy

        return [(p.value, "") for p in RestartPolicy]
    return []  # a path, a number or free text: the shell's own completion


def _positionals(
    sub: argparse.ArgumentParser, given: list[str], config_dir: str | None
) -> list[tuple[str, str]]:
    """What the verb's next positional word may be: a choice, an app (or ``all``, where
    several are taken), or a chord."""
    from orchestratr.cli.verbs import ALL

    positionals = [a for a in sub._actions if not a.option_strings]  # noqa: SLF001
    many = any(a.nargs == "+" for a in positionals)
    if not positionals or (len(given) >= len(positionals) and not many):
        return []
    action = positionals[-1] if many else positionals[len(given)]
    if action.choices:
        return [(str(choice), "") for choice in action.choices]
    if action.dest == "chord":
        return _chords(config_dir)
    if action.dest not in ("name", "names"):
        return []
    apps = [(ALL, "every app")] if many else []
    return [(n, d) for n, d in [*apps, *_apps(config_dir)] if n not in given]


def _apps(config_dir: str | None) -> list[tuple[str, str]]:
    return [(name, state) for name, state, _ in _known(config_dir)]


def _chords(config_dir: str | None) -> list[tuple[str, str]]:
    return [(chord, name) for name, _, chord in _known(config_dir) if chord]


def _known(config_dir: str | None) -> list[tuple[str, str, str | None]]:
    """(name, state, chord) of every app the daemon has; none when it does not answer."""
    from orchestratr.client import Client, OrchestratrClientError

    try:
        apps = Client(config_dir=config_dir, timeout=APPS_TIMEOUT_S).apps()
    except (OrchestratrClientError, OSError):
        return []
    return [(app["name"], app["state"], app.get("chord")) for app in apps]
