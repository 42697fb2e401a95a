"""The leader/chord engine and the leader grammar, with a fake clock and no X server."""

from __future__ import annotations

import pytest

from orchestratr.hotkeys.engine import Engine, Kind, Outcome
from orchestratr.registry.keys import Key, parse_leader
from tests.unit.hotkeys.conftest import Clock

CTRL, SPACE = Key("ctrl"), Key("space")


@pytest.fixture
def engine(clock: Clock) -> Engine:
    return Engine(parse_leader("ctrl+space"), timeout_s=2.0, clock=clock)


def tap(engine: Engine, name: str) -> Outcome | None:
    key = Key.of(name)
    outcome = engine.press(key)
    engine.release(key)
    return outcome


def leader(engine: Engine) -> Outcome | None:
    engine.press(CTRL)
    outcome = tap(engine, "space")
    engine.release(CTRL)
    return outcome


def test_leader_then_chord(engine: Engine) -> None:
    assert leader(engine) == Outcome(Kind.armed)
    assert engine.listening
    assert tap(engine, "e") == Outcome(Kind.chord, Key("e"))
    assert not engine.listening


def test_keys_without_the_leader_mean_nothing(engine: Engine) -> None:
    assert tap(engine, "e") is None
    assert tap(engine, "space") is None  # space alone is not the leader
    assert not engine.listening


def test_modifiers_do_not_end_the_window(engine: Engine) -> None:
    leader(engine)
    assert engine.press(Key("shift")) is None
    assert engine.press(Key.of("?")) == Outcome(Kind.help, Key("?"))


@pytest.mark.parametrize(("name", "reason"), [("escape", "escape"), ("space", "space")])
def test_escape_and_space_cancel(engine: Engine, name: str, reason: str) -> None:
    leader(engine)
    assert tap(engine, name) == Outcome(Kind.cancelled, Key(name), reason=reason)
    assert tap(engine, "e") is None


def test_the_window_times_out(engine: Engine, clock: Clock) -> None:
    leader(engine)
    clock.now += 1.999
    assert engine.expire() is None and engine.listening
    clock.now += 0.001
    assert engine.expire() == Outcome(Kind.cancelled, reason="timeout")
    assert tap(engine, "e") is None


def test_a_late_chord_is_a_timeout_not_a_launch(engine: Engine, clock: Clock) -> None:
    leader(engine)
    clock.now += 2.5  # no timer fired: the next key finds the window expired
    assert tap(engine, "e") == Outcome(Kind.cancelled, reason="timeout")


def test_a_late_leader_arms_again(engine: Engine, clock: Clock) -> None:
    leader(engine)
    clock.now += 3
    assert leader(engine) == Outcome(Kind.armed)
    assert engine.deadline == clock.now + 2.0


def test_autorepeat_never_fires_twice(engine: Engine) -> None:
    leader(engine)
    e = Key("e")
    assert engine.press(e) == Outcome(Kind.chord, e)
    repeats = [engine.press(e) for _ in range(5)]  # the OS repeats a held key
    assert repeats == [None] * 5
    engine.press(CTRL)
    assert engine.press(SPACE) == Outcome(Kind.armed)
    assert engine.press(SPACE) is None  # a held leader does not re-arm or cancel
    engine.release(SPACE)


def test_chords_ignore_case(engine: Engine) -> None:
    leader(engine)
    assert tap(engine, "E") == Outcome(Kind.chord, Key("e"))


def test_chord_typed_with_ctrl_still_held(engine: Engine) -> None:
    engine.press(CTRL)
    assert tap(engine, "space") == Outcome(Kind.armed)
    assert tap(engine, "e") == Outcome(Kind.chord, Key("e"))


def test_reset_forgets_the_window_and_held_keys(engine: Engine) -> None:
    engine.press(CTRL)
    engine.press(SPACE)
    engine.reset()
    assert not engine.listening
    assert engine.press(SPACE) is None  # ctrl is no longer held


def test_other_leaders(clock: Clock) -> None:
    engine = Engine(parse_leader("ctrl+alt+o"), 2.0, clock)
    engine.press(CTRL)
    assert tap(engine, "o") is None  # alt missing
    engine.press(Key("alt"))
    assert tap(engine, "O") == Outcome(Kind.armed)


@pytest.mark.parametrize("extra", ["shift", "alt", "super", "altgr"])
def test_an_extra_modifier_is_not_the_leader(engine: Engine, extra: str) -> None:
    """The X grab matches the exact combination: the engine must too, or the keys leak."""
    engine.press(CTRL)
    engine.press(Key(extra))
    assert tap(engine, "space") is None
    engine.release(Key(extra))
    assert tap(engine, "space") == Outcome(Kind.armed)


def test_altgr_is_not_alt(clock: Clock) -> None:
    engine = Engine(parse_leader("ctrl+alt+o"), 2.0, clock)
    engine.press(CTRL)
    engine.press(Key("altgr"))
    assert tap(engine, "o") is None


def test_a_key_with_no_name_of_ours_ends_the_window(engine: Engine) -> None:
    leader(engine)
    assert tap(engine, "#ff9d") == Outcome(Kind.chord, Key("#ff9d"))  # unbound: the caller
    assert not engine.listening


class TestHint:
    """``chord_hint_ms``: the table shows by itself when no chord came that long after the
    leader (which-key), and the window stays open for the chord."""

    @pytest.fixture
    def hinting(self, clock: Clock) -> Engine:
        return Engine(parse_leader("ctrl+space"), timeout_s=2.0, clock=clock, hint_s=0.5)

    def test_the_hint_comes_once_then_the_chord_still_launches(
        self, hinting: Engine, clock: Clock
    ) -> None:
        leader(hinting)
        assert hinting.wake_at == clock.now + 0.5
        clock.now += 0.4
        assert hinting.tick() is None
        clock.now += 0.1
        assert hinting.tick() == Outcome(Kind.help, reason="hint")
        assert hinting.listening and hinting.wake_at == hinting.deadline
        assert hinting.tick() is None  # once per leader
        assert tap(hinting, "e") == Outcome(Kind.chord, Key("e"))

    def test_a_chord_before_the_hint_leaves_nothing_pending(
        self, hinting: Engine, clock: Clock
    ) -> None:
        leader(hinting)
        assert tap(hinting, "e") == Outcome(Kind.chord, Key("e"))
        clock.now += 1
        assert hinting.tick() is None and hinting.wake_at is None

    def test_the_window_still_ends_after_the_hint(self, hinting: Engine, clock: Clock) -> None:
        leader(hinting)
        clock.now += 0.5
        hinting.tick()
        clock.now += 1.5
        assert hinting.tick() == Outcome(Kind.cancelled, reason="timeout")
        assert not hinting.listening

    def test_no_hint_by_default(self, engine: Engine, clock: Clock) -> None:
        leader(engine)
        assert engine.wake_at == engine.deadline
        clock.now += 1.9
        assert engine.tick() is None
