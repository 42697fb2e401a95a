"""How long the grab keeps the keyboard, and which keys end a window: keycodes in, no X."""

from __future__ import annotations

import pytest

from orchestratr.hotkeys.x11 import keysyms
from orchestratr.hotkeys.x11.window import HELD_KEY_LIMIT_S, GrabWindow

SPACE, E, CTRL = 65, 26, 37
T0, TIMEOUT = 100.0, 0.5


@pytest.fixture
def window() -> GrabWindow:
    return GrabWindow.open(SPACE, T0, TIMEOUT)


def test_the_chord_release_ends_it(window: GrabWindow) -> None:
    window.release(SPACE, T0 + 0.05)
    window.press(E, True, T0 + 0.1)
    assert window.chord == E and not window.finished(T0 + 0.1)
    window.release(E, T0 + 0.15)
    assert window.finished(T0 + 0.15)


def test_the_leaders_autorepeat_is_never_the_chord(window: GrabWindow) -> None:
    for i in range(5):
        window.press(SPACE, True, T0 + 0.3 + i * 0.03)  # repeats: Space is still down
    assert (window.chord, window.over) == (None, False)
    window.release(SPACE, T0 + 0.45)
    window.press(E, True, T0 + 0.46)
    assert window.chord == E


def test_a_chord_held_past_the_deadline_keeps_the_keyboard_until_released(
    window: GrabWindow,
) -> None:
    window.release(SPACE, T0 + 0.05)
    window.press(E, True, T0 + 0.4)
    assert not window.finished(T0 + 1.2)  # the deadline passed, E still repeats
    assert window.next_wake() == window.limit
    window.release(E, T0 + 1.2)
    assert window.finished(T0 + 1.2)


def test_a_leader_held_past_the_deadline_keeps_it_and_takes_no_chord(
    window: GrabWindow,
) -> None:
    assert window.next_wake() == T0 + TIMEOUT
    assert not window.finished(T0 + 0.6)
    window.press(E, True, T0 + 0.7)  # after the deadline: swallowed, not a chord
    assert window.chord is None
    window.release(SPACE, T0 + 0.8)
    window.release(E, T0 + 0.8)
    assert window.finished(T0 + 0.8)


def test_the_time_running_out_ends_it(window: GrabWindow) -> None:
    window.release(SPACE, T0 + 0.05)
    assert not window.finished(T0 + TIMEOUT - 0.001)
    assert window.finished(T0 + TIMEOUT)


def test_modifiers_and_locks_neither_end_nor_hold_it(window: GrabWindow) -> None:
    window.release(SPACE, T0 + 0.05)
    window.press(CTRL, False, T0 + 0.1)
    assert (window.chord, window.over) == (None, False)
    window.press(E, True, T0 + 0.2)
    window.release(E, T0 + 0.3)
    assert window.finished(T0 + 0.3)  # Ctrl is still down, and does not matter


def test_a_key_that_never_comes_up_is_let_go_at_the_limit(window: GrabWindow) -> None:
    window.press(E, True, T0 + 0.1)
    assert not window.finished(T0 + TIMEOUT + HELD_KEY_LIMIT_S - 0.01)
    assert window.finished(T0 + TIMEOUT + HELD_KEY_LIMIT_S)


@pytest.mark.parametrize(
    ("keysym", "modifier", "ends"),
    [(0xFFE3, "ctrl", False), (0xFFE9, "alt", False), (0xFFE7, "alt", False),  # Meta_L
     (0xFFEB, "super", False), (0xFFE1, "shift", False),
     (0xFE03, "altgr", False), (0xFF7E, "altgr", False),  # ISO_Level3_Shift, Mode_switch
     (0xFFE5, None, False), (0xFF7F, None, False), (0xFF14, None, False),  # the locks
     (0xFF9D, None, True), (ord("e"), None, True), (0x20, None, True), (0, None, True)],
)
def test_keysyms_sort_into_modifiers_locks_and_keys(
    keysym: int, modifier: str | None, ends: bool
) -> None:
    assert keysyms.modifier_name(keysym) == modifier
    assert keysyms.ends_window(keysym) is ends
