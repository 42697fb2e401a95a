"""Which X keysyms are modifiers, locks or ordinary keys, decided in one place.

The grab (python-xlib, keycodes) and the listener (pynput, which reports keysyms as ``vk``)
must agree on which keys end a chord window: when they did not, a key one side ignored ended
the other side's window, and the next key leaked into the focused app or was eaten. Both ask
this module, by keysym, so they cannot drift apart. Plain integers: no X library needed.
"""

from __future__ import annotations

# Pressing these toggles a state; they neither end a window nor count as held modifiers, so
# CapsLock and NumLock never matter to a leader or a chord.
LOCKS = frozenset({
    0xFFE5,  # Caps_Lock
    0xFFE6,  # Shift_Lock
    0xFF7F,  # Num_Lock
    0xFF14,  # Scroll_Lock
})
_NAMED = {
    0xFFE1: "shift", 0xFFE2: "shift",  # Shift_L, Shift_R
    0xFFE3: "ctrl", 0xFFE4: "ctrl",  # Control_L, Control_R
    0xFFE7: "alt", 0xFFE8: "alt",  # Meta_L, Meta_R: X puts them on Mod1 with Alt
    0xFFE9: "alt", 0xFFEA: "alt",  # Alt_L, Alt_R
    0xFFEB: "super", 0xFFEC: "super",  # Super_L, Super_R
    0xFFED: "super", 0xFFEE: "super",  # Hyper_L, Hyper_R: Mod4 with Super in the default map
    0xFF7E: "altgr",  # Mode_switch
}
# ISO_Lock .. ISO_Level5_Lock: level and group shifts (ISO_Level3_Shift is AltGr). They sit
# on Mod5 or change the group, never on Mod1, so AltGr is not Alt.
_ISO_SHIFTS = range(0xFE01, 0xFE14)


def modifier_name(keysym: int) -> str | None:
    """``ctrl``, ``alt``, ``shift``, ``super`` or ``altgr`` for a modifier key, else None."""
    if keysym in _ISO_SHIFTS:
        return "altgr"
    return _NAMED.get(keysym)


def ends_window(keysym: int) -> bool:
    """Whether pressing this key while the leader listens is the chord (or cancels)."""
    return keysym not in LOCKS and modifier_name(keysym) is None
