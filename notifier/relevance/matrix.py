"""A batch of papers as TF-IDF vectors, and the dot products between batches.

Rows are L2-normalised and never negative, so the dot product of two rows is their cosine, in 0..1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse

from notifier.models import Paper

Floats = npt.NDArray[np.float64]


def dots(rows: sparse.csr_matrix, columns_t: sparse.csr_matrix) -> Floats:
    """The dense matrix of dot products: ``rows`` (m x features) times ``columns_t`` (features x n, the other
    batch transposed once and kept), as float64."""
    return np.asarray((rows @ columns_t).toarray(), dtype=np.float64)


class PaperMatrix:
    """Papers and their vectors, in the same order, made by one :class:`~notifier.relevance.Corpus`.

    What ranking needs of the batch besides its rows is computed once, on first use, however many profiles rank it:
    the rows transposed (for dot products with liked papers) and the dot products with the corpus's negatives.
    """

    __slots__ = ("_negative_dots", "_transposed", "owner", "papers", "rows")

    def __init__(self, papers: Sequence[Paper], rows: sparse.csr_matrix, owner: object) -> None:
        self.papers = tuple(papers)
        self.rows = rows
        self.owner = owner  # the corpus whose vocabulary and weights made the rows
        self._transposed: sparse.csr_matrix | None = None
        self._negative_dots: Floats | None = None

    def __len__(self) -> int:
        return len(self.papers)

    @property
    def transposed(self) -> sparse.csr_matrix:
        if self._transposed is None:
            self._transposed = sparse.csr_matrix(self.rows.T)
        return self._transposed

    def negative_dots(self, negatives_t: sparse.csr_matrix) -> Floats:
        """Dot products of every paper with the corpus's sample of negatives (papers x negatives)."""
        if self._negative_dots is None:
            self._negative_dots = dots(self.rows, negatives_t)
        return self._negative_dots
