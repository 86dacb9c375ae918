"""A batch of papers as vectors, and the dot products between batches.

Rows are L2-normalised, so the dot product of two rows is their cosine: TF-IDF vectors are sparse (a scipy CSR
matrix) and never negative (cosines in 0..1), an embedding model's are dense (a numpy array) and may be (-1..1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from scipy import sparse
from threadpoolctl import ThreadpoolController

from notifier.models import Paper

Floats = npt.NDArray[np.float64]
# sparse (TF-IDF) or dense (embeddings): one kind per batch
Rows: TypeAlias = "sparse.csr_matrix | npt.NDArray[np.float32]"


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded (numpy's and scipy's, imported above), found once."""
    return ThreadpoolController()


def one_thread() -> AbstractContextManager[object]:
    """While it is entered, BLAS runs on one thread. Ranking is many small products, which more threads only slow
    down once the machine is busy with other work."""
    limit: AbstractContextManager[object] = _blas().limit(limits=1, user_api="blas")
    return limit


def dots(rows: Rows, columns_t: Rows) -> Floats:
    """The dense matrix of dot products: ``rows`` (m x features) times ``columns_t`` (features x n, the other
    batch transposed once and kept), as float64."""
    product = rows @ columns_t
    if isinstance(product, np.ndarray):
        return np.asarray(product, dtype=np.float64)
    return np.asarray(product.toarray(), dtype=np.float64)


def transpose(rows: Rows) -> Rows:
    """``rows`` transposed, in the layout products with it are fastest in."""
    return sparse.csr_matrix(rows.T) if sparse.issparse(rows) else np.ascontiguousarray(rows.T)


def stack(parts: Sequence[Rows]) -> Rows:
    """The rows of ``parts``, one after the other (all of one kind)."""
    if all(isinstance(part, np.ndarray) for part in parts):
        return np.vstack(parts)
    return sparse.csr_matrix(sparse.vstack(parts, format="csr"))


class PaperMatrix:
    """Papers and their vectors, in the same order, made by one :class:`~notifier.relevance.Corpus`.

    What ranking needs of the batch besides its rows is computed once, on first use, however many profiles rank it:
    the rows transposed (for dot products with liked papers) and the dot products with the corpus's negatives.
    """

    __slots__ = ("_negative_dots", "_transposed", "owner", "papers", "rows")

    def __init__(self, papers: Sequence[Paper], rows: Rows, owner: object) -> None:
        self.papers = tuple(papers)
        self.rows = rows
        self.owner = owner  # the corpus whose vocabulary and weights made the rows
        self._transposed: Rows | None = None
        self._negative_dots: Floats | None = None

    def __len__(self) -> int:
        return len(self.papers)

    @property
    def transposed(self) -> Rows:
        if self._transposed is None:
            self._transposed = transpose(self.rows)
        return self._transposed

    def negative_dots(self, negatives_t: Rows) -> Floats:
        """Dot products of every paper with the corpus's sample of negatives (papers x negatives)."""
        if self._negative_dots is None:
            self._negative_dots = dots(self.rows, negatives_t)
        return self._negative_dots
