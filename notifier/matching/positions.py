"""A set of positions in a batch of papers, kept as one byte per paper of the batch.

A plan gives each subscriber the papers of its own categories: a set of positions among the batch's few thousand
papers, kept for the whole plan for each set of categories that subscribers follow (1,496 of them at 10,000
subscribers). As Python sets they take tens of KiB each, and such a plan kept about 70 MB of them; as masks they
take one byte per paper, and the set operations a plan needs are one NumPy operation each.
:meth:`~notifier.matching.rules.MatchBatch.matches` reads a :class:`Positions` as its ``within`` without looking at
each position.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from notifier.matching.bitsets import Ints

Mask: TypeAlias = npt.NDArray[np.bool_]


class Positions:
    """An immutable set of positions in a batch of ``size`` papers (a :class:`~collections.abc.Collection` of
    ``int``, iterated in ascending order)."""

    __slots__ = ("_count", "mask")

    def __init__(self, mask: Mask) -> None:
        mask.flags.writeable = False
        self.mask = mask
        self._count = int(np.count_nonzero(mask))

    @classmethod
    def of(cls, positions: Iterable[int], size: int) -> Positions:
        """The positions in ``positions``, in a batch of ``size`` papers."""
        mask = np.zeros(size, dtype=np.bool_)
        mask[np.fromiter(positions, np.int64)] = True
        return cls(mask)

    @classmethod
    def union(cls, sets: Iterable[Positions], size: int) -> Positions:
        """Every position in any of ``sets`` (none: the empty set of a batch of ``size`` papers)."""
        mask = np.zeros(size, dtype=np.bool_)
        for positions in sets:
            mask |= positions.mask
        return cls(mask)

    def __and__(self, other: Positions) -> Positions:
        return Positions(self.mask & other.mask)

    def __or__(self, other: Positions) -> Positions:
        return Positions(self.mask | other.mask)

    def __contains__(self, position: object) -> bool:
        try:
            at = operator.index(position)  # type: ignore[arg-type]
        except TypeError:
            return False
        return 0 <= at < len(self.mask) and bool(self.mask[at])

    def __iter__(self) -> Iterator[int]:
        return iter(np.flatnonzero(self.mask).tolist())

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Positions):
            return self._count == other._count and bool(np.array_equal(self.mask, other.mask))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal by value, and meant to be compared, not hashed

    def __repr__(self) -> str:
        return f"Positions({list(self)}, size={len(self.mask)})"

    def among(self, positions: Ints) -> Ints:
        """Those of ``positions`` (valid positions in the batch) that are in this set, in their order."""
        return positions[self.mask[positions]]
