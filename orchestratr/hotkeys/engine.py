"""The leader/chord state machine: idle -> listening -> idle. Pure: keys in, outcomes out.

The OS adapter feeds it presses and releases; the engine answers what they mean. It knows
nothing of apps: a chord comes out as a key, and the caller decides whether anything is bound.
The clock is injected so every timing rule is tested without waiting.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import attrs

from orchestratr.registry.keys import Key, Leader

HELP = Key("?")
CANCEL_KEYS = frozenset({Key("escape"), Key("space")})


class Kind(enum.Enum):
    armed = "armed"  # the leader was pressed: listening for a chord
    chord = "chord"  # a key within the window: launch whatever is bound to it
    help = "help"  # `?` within the window: show the chord table
    cancelled = "cancelled"  # escape, space, or the window ran out


@attrs.frozen
class Outcome:
    kind: Kind
    key: Key | None = None
    reason: str = ""


class Engine:
    """Turns a stream of key presses into leader/chord outcomes. Not thread-safe: one adapter
    thread drives it (the timeout may come from another thread, so callers serialise)."""

    def __init__(
        self, leader: Leader, timeout_s: float, clock: Callable[[], float] = time.monotonic,
        hint_s: float = 0.0,
    ) -> None:
        self.leader = leader
        self.timeout_s = timeout_s
        self.hint_s = hint_s  # the table shows this long into the window (0: never by itself)
        self._clock = clock
        self._held: set[Key] = set()
        self._deadline: float | None = None
        self._hint_at: float | None = None

    @property
    def listening(self) -> bool:
        return self._deadline is not None

    @property
    def deadline(self) -> float | None:
        return self._deadline

    @property
    def wake_at(self) -> float | None:
        """When ``tick`` has something to say: the hint, else the window's end."""
        return self._hint_at if self._hint_at is not None else self._deadline

    def press(self, key: Key) -> Outcome | None:
        """What this press means, or None when it means nothing (autorepeat included)."""
        if key in self._held:
            return None  # the OS repeats a held key as fresh presses
        self._held.add(key)
        if key.is_modifier:
            return None
        if self.listening:
            expired = self.expire()
            if expired is None:
                return self._end_window(key)
            return expired if not self._is_leader(key) else self.arm()
        return self.arm() if self._is_leader(key) else None

    def release(self, key: Key) -> None:
        self._held.discard(key)

    def arm(self) -> Outcome:
        """Start (or restart) the listening window, as the leader key does."""
        now = self._clock()
        self._deadline = now + self.timeout_s
        self._hint_at = now + self.hint_s if self.hint_s > 0 else None
        return Outcome(Kind.armed)

    def expire(self) -> Outcome | None:
        """Cancel the window if it has run out; the adapter calls this from a timer too."""
        if self._deadline is not None and self._clock() >= self._deadline:
            self._deadline = self._hint_at = None
            return Outcome(Kind.cancelled, reason="timeout")
        return None

    def tick(self) -> Outcome | None:
        """What the time alone says (the adapter calls it at ``wake_at``): the window ran out,
        or the hint is due (like which-key: the table, while the window stays open)."""
        expired = self.expire()
        if expired is not None:
            return expired
        if self._hint_at is not None and self._clock() >= self._hint_at:
            self._hint_at = None
            return Outcome(Kind.help, reason="hint")
        return None

    def reset(self) -> None:
        """Forget the window and every held key (on pause, or when the keyboard was lost)."""
        self._deadline = self._hint_at = None
        self._held.clear()

    def _is_leader(self, key: Key) -> bool:
        """Exactly the leader's modifiers: the X grab matches the exact combination, so with
        one more modifier held (Ctrl+Shift+Space) the keys reach the app and must not launch."""
        held = {k.name for k in self._held if k.is_modifier}
        return key == self.leader.key and self.leader.modifiers == held

    def _end_window(self, key: Key) -> Outcome:
        self._deadline = self._hint_at = None
        if key in CANCEL_KEYS:
            return Outcome(Kind.cancelled, key, reason=key.name)
        if key == HELP:
            return Outcome(Kind.help, key)
        return Outcome(Kind.chord, key)
