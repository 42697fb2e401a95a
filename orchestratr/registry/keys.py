"""orchestratr's own key type and the key grammar of the config (leader, chords), free of any
OS library: config validation needs it without hotkeys, and the hotkey engine reads keys as
it names them.

Keys are named as the config names them: a single character (case-folded, so CapsLock and
Shift never matter to a chord), or a lowercase name such as ``space``, ``escape``, ``f5`` or
``ctrl``. Left and right modifiers are one key each.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

LEADER_MODIFIERS = frozenset({"ctrl", "alt", "shift", "super"})
# AltGr is held like a modifier but is its own (X puts it on Mod5, not Mod1): counting it as
# alt armed the engine for ctrl+alt+o on Ctrl+AltGr+o, which the X grab rightly ignored.
MODIFIERS = LEADER_MODIFIERS | {"altgr"}
MODIFIER_ALIASES = {"control": "ctrl", "ctl": "ctrl", "meta": "alt", "option": "alt",
                    "win": "super", "cmd": "super", "command": "super"}
# Named keys a leader may end in (chords use the registry's list of key names).
LEADER_KEYS = frozenset(
    "space enter tab escape backspace insert delete home end pageup pagedown".split()
    + [f"f{i}" for i in range(1, 13)]
)
# Named keys a chord may be (besides one character).
KEY_NAMES = frozenset(
    [f"f{i}" for i in range(1, 13)]
    + "tab enter backspace delete insert home end pageup pagedown up down left right".split()
)
# `?` shows the chord table, space cancels the leader.
RESERVED_CHORDS = frozenset({"?", "space", " "})
# Chords the Go orchestratr accepted that can never fire: still loaded, with a warning.
DEAD_CHORDS = {"escape": "Escape cancels the leader, so this chord can never fire "
                         "(POST /trigger still launches the app)"}
# Leaders the desktop usually owns: the warning names who.
COMMONLY_TAKEN = {
    "ctrl+space": "input-method switching (ibus, fcitx)",
    "super+space": "keyboard-layout switching (GNOME)",
    "alt+tab": "window switching",
    "alt+space": "the window menu",
    "super": "the desktop's launcher",
    "ctrl+alt+t": "the terminal shortcut (GNOME, Ubuntu)",
}


@attrs.frozen
class Key:
    """One key, by name. ``Key.of("E") == Key.of("e")``."""

    name: str

    @classmethod
    def of(cls, name: str) -> Key:
        folded = name.casefold() if len(name) == 1 else name.lower()
        return cls(MODIFIER_ALIASES.get(folded, folded))

    @property
    def is_modifier(self) -> bool:
        return self.name in MODIFIERS


@attrs.frozen
class Leader:
    """A leader combination such as ``ctrl+space``: modifiers held, then one key pressed."""

    modifiers: frozenset[str]
    key: Key

    def __str__(self) -> str:
        order = ["ctrl", "alt", "shift", "super"]
        return "+".join([m for m in order if m in self.modifiers] + [self.key.name])


def parse_leader(text: str) -> Leader:
    """``"Ctrl+Alt+O"`` -> Leader. Raises ValueError saying what is wrong with ``text``; the
    message starts with the value, because the caller prefixes the field's name."""
    parts = [p.strip() for p in text.split("+")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"{text!r} must look like ctrl+space or ctrl+alt+o")
    *mods, last = [Key.of(p) for p in parts]
    unknown = [m.name for m in mods if m.name not in LEADER_MODIFIERS]
    if unknown:
        raise ValueError(f"{text!r}: {', '.join(unknown)} is not a modifier "
                         f"({', '.join(sorted(LEADER_MODIFIERS))})")
    if last.is_modifier or not (len(last.name) == 1 or last.name in LEADER_KEYS):
        raise ValueError(f"{text!r} must end in one character or a key name "
                         "such as space, enter or f1")
    if not mods and len(last.name) == 1:
        raise ValueError(f"{text!r} needs a modifier: a bare character would "
                         "be taken from every app")
    return Leader(frozenset(m.name for m in mods), last)


def desktop_owner(leader: Leader) -> str | None:
    """Who commonly owns this combination on a desktop, if anyone."""
    return COMMONLY_TAKEN.get(str(leader))


class Chorded(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def chord(self) -> str | None: ...


def chord_key(chord: str) -> str:
    """The one spelling a chord is looked up by, as the engine names keys (``E`` is ``e``)."""
    return Key.of(chord).name


def chord_table(apps: Iterable[Chorded]) -> dict[str, str]:
    """Chord key -> app name: built once per registry, read by the hotkeys and POST /trigger."""
    return {chord_key(app.chord): app.name for app in apps if app.chord}
