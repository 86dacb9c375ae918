"""The order in which a benchmark's contestants (code trees, or ways of doing one thing) run in each round."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def turn_order(contestants: Sequence[T], round_: int) -> list[T]:
    """``contestants`` in the order they run in round ``round_`` (from 0): they take turns going first, as on a busy
    machine a run's place in the order shows in its figures."""
    return list(contestants) if round_ % 2 == 0 else list(contestants)[::-1]
