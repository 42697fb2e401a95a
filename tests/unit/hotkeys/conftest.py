"""A clock the tests move by hand, so every timing rule is checked without waiting."""

from __future__ import annotations

import pytest


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
