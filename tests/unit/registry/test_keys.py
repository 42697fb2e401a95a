"""The key grammar of the config: leaders, chords, and the one chord lookup."""

from __future__ import annotations

import pytest

from orchestratr.registry.keys import Key, Leader, chord_table, desktop_owner, parse_leader
from orchestratr.registry.model import AppSpec, Registry


@pytest.mark.parametrize(
    ("text", "leader"),
    [("ctrl+space", Leader(frozenset({"ctrl"}), Key("space"))),
     ("Control + Alt + O", Leader(frozenset({"ctrl", "alt"}), Key("o"))),
     ("super+space", Leader(frozenset({"super"}), Key("space"))),
     ("cmd+F5", Leader(frozenset({"super"}), Key("f5"))),
     ("f12", Leader(frozenset(), Key("f12")))],
)
def test_parse_leader(text: str, leader: Leader) -> None:
    assert parse_leader(text) == leader


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "must look like"), ("ctrl+", "must look like"), ("hyper+space", "not a modifier"),
     ("ctrl+shift", "must end in"), ("ctrl+spacebar", "must end in"),
     ("e", "needs a modifier")],
)
def test_bad_leaders_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_leader(text)
    assert str(raised.value).startswith(repr(text))  # the caller adds the field's name


@pytest.mark.parametrize("text", ["ctrl+altgr+o", "altgr+space"])
def test_altgr_cannot_be_part_of_a_leader(text: str) -> None:
    with pytest.raises(ValueError):
        parse_leader(text)


def test_commonly_taken_leaders_are_known() -> None:
    assert "input-method" in (desktop_owner(parse_leader("ctrl+space")) or "")
    assert desktop_owner(parse_leader("ctrl+alt+o")) is None


def test_chord_table_folds_case() -> None:
    apps = [AppSpec(name="a", command="x", chord="E"), AppSpec(name="b", command="x"),
            AppSpec(name="c", command="x", chord="F5")]
    assert chord_table(apps) == {"e": "a", "f5": "c"}


def test_the_registry_looks_chords_up_as_the_hotkeys_name_keys() -> None:
    """POST /trigger and the hotkeys read one table: a chord the engine names ``f5`` or ``e``
    finds its app whatever case it was declared or asked in."""
    registry = Registry(apps=(AppSpec(name="a", command="x", chord="E"),
                              AppSpec(name="c", command="x", chord="F5")))
    assert registry.chords == {"e": "a", "f5": "c"}
    assert registry.chords is registry.chords  # built once per registry, not per press
    assert [registry.by_chord(c).name for c in ("e", "E", "f5", "F5")] == ["a", "a", "c", "c"]
    assert registry.by_chord("q") is None
