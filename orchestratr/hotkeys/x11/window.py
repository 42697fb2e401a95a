"""How long the grab keeps the keyboard after a leader press: pure, keycodes in, no X.

The keyboard is let go once the chord window is over (a chord key came, or the time ran
out) *and* no key pressed since the leader is still down. Letting go earlier leaked: a held
chord key, or a leader held past the window, went on autorepeating into the focused app (and a
repeated leader re-fired the passive grab behind the engine's back). ``limit`` bounds the wait,
so a key that somehow never reports its release cannot keep the keyboard for long.
"""

from __future__ import annotations

import attrs

HELD_KEY_LIMIT_S = 3.0  # past the window's end, at most this long for held keys


@attrs.define
class GrabWindow:
    deadline: float  # the chord must be pressed by then (the engine's window)
    limit: float  # the keyboard is let go by then, held keys or not
    down: set[int]  # keycodes pressed since the leader (the leader first), not yet released
    chord: int | None = None
    over: bool = False  # a chord came or time ran out: no later key is a chord

    @classmethod
    def open(cls, leader: int | None, now: float, timeout_s: float) -> GrabWindow:
        """A window after the leader's press (``leader``: its keycode, held), or, with None,
        after the API's leader press (no key is down)."""
        deadline = now + timeout_s
        return cls(deadline, deadline + HELD_KEY_LIMIT_S, set() if leader is None else {leader})

    def press(self, keycode: int, ends_window: bool, now: float) -> None:
        """A press while grabbed. A key already down is autorepeat (the leader's own repeats
        included): it is never the chord. Modifiers and locks neither end nor hold."""
        self.tick(now)
        if keycode in self.down or not ends_window:
            return
        self.down.add(keycode)
        if not self.over:
            self.chord, self.over = keycode, True

    def release(self, keycode: int, now: float) -> None:
        self.tick(now)
        self.down.discard(keycode)

    def tick(self, now: float) -> None:
        if now >= self.deadline:
            self.over = True

    def finished(self, now: float) -> bool:
        """Time to let the keyboard go."""
        self.tick(now)
        return (self.over and not self.down) or now >= self.limit

    def next_wake(self) -> float:
        """When ``finished`` can next change without a key event."""
        return self.limit if self.over else self.deadline
