"""Papers placed by an embedding model's vectors: the same profiles and scores as TF-IDF, in another space.

An :class:`EmbeddedSpace` is made from the vectors the store has (:mod:`notifier.embeddings` made them): each vector
is L2-normalised, so a dot product is a cosine (in -1..1; a profile's scores are clipped to 0..1), and a batch is a
dense matrix of them, which :class:`~notifier.relevance.Profile` ranks as it ranks TF-IDF's sparse ones. A
fixed seeded sample of :data:`~notifier.relevance.corpus.NEGATIVES` recent papers is what trained profiles learn
against. A paper without a vector cannot be placed: :meth:`EmbeddedSpace.missing` says which.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from notifier.models import Paper
from notifier.relevance.corpus import NEGATIVES
from notifier.relevance.matrix import PaperMatrix, dots, transpose
from notifier.relevance.profile import Negatives, Profile

Key = tuple[str, int]


class EmbeddedSpace:
    """The vectors of papers by (arxiv id, version), and the negatives sampled from ``recent`` (keys of recent papers).

    Vectors of another length than the commonest one (a model that changed) are left out, as if missing.
    """

    def __init__(
        self,
        vectors: Mapping[Key, npt.ArrayLike],
        recent: Sequence[Key],
        *,
        negatives: int = NEGATIVES,
        seed: int = 0,
    ) -> None:
        arrays = {key: np.asarray(vector, dtype=np.float32).ravel() for key, vector in vectors.items()}
        lengths = Counter(len(array) for array in arrays.values())
        self._features = max(lengths, key=lambda length: (lengths[length], length)) if lengths else 0
        self._rows: dict[Key, npt.NDArray[np.float32]] = {}
        for key, array in arrays.items():
            if len(array) == self._features and self._features:
                norm = float(np.linalg.norm(array))
                self._rows[key] = array / norm if norm > 0 else array
        placed = sorted({key for key in recent if key in self._rows})
        sample = np.sort(np.random.default_rng(seed).permutation(len(placed))[:negatives])
        keys = tuple(placed[int(number)] for number in sample)
        rows = self._stack(keys)
        transposed = transpose(rows)
        self._negatives = Negatives(keys=keys, rows=rows, transposed=transposed, dots=dots(rows, transposed))

    @property
    def features(self) -> int:
        """How many numbers a vector has."""
        return self._features

    def __len__(self) -> int:
        return len(self._rows)

    def missing(self, papers: Sequence[Paper]) -> list[Paper]:
        """Those of ``papers`` that have no vector here, in order."""
        return [paper for paper in papers if paper.key not in self._rows]

    def matrix(self, papers: Sequence[Paper]) -> PaperMatrix:
        """The vectors of ``papers``, in order; a ``KeyError`` names the first paper without one (see
        :meth:`missing`)."""
        return PaperMatrix(papers, self._stack([paper.key for paper in papers]), owner=self)

    def profile(
        self, liked: Sequence[Paper], disliked: Sequence[Paper] = (), *, trained: bool | None = None
    ) -> Profile:
        """A subscriber's profile in this space, made as :meth:`Corpus.profile <notifier.relevance.Corpus.profile>`
        makes one: a paper both liked and disliked counts as liked, a paper given twice once."""
        liked = list({paper.key: paper for paper in liked}.values())
        keys = {paper.key for paper in liked}
        disliked = list({paper.key: paper for paper in disliked if paper.key not in keys}.values())
        return Profile(self.matrix(liked), self.matrix(disliked), self._negatives, self.matrix, trained=trained)

    def _stack(self, keys: Sequence[Key]) -> npt.NDArray[np.float32]:
        for key in keys:
            if key not in self._rows:
                raise KeyError(f"no embedding of {key[0]}v{key[1]}")
        if not keys:
            return np.zeros((0, self._features), dtype=np.float32)
        return np.vstack([self._rows[key] for key in keys])
