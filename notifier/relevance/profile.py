"""A subscriber's profile: the papers they like and dislike, and how much any paper looks like the liked ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.svm import SVC

from notifier.models import Paper, Similarity
from notifier.relevance.matrix import Floats, PaperMatrix, dots

MIN_TRAINED = 5  # from this many liked papers on, a profile trains a linear model; with fewer, it uses cosine
DISLIKE_SHARE = 0.5  # cosine scores lose this share of a paper's highest cosine to a disliked paper
C = 0.1  # the linear SVM's regularisation: soft, so that papers unlike any training paper still rank apart


@dataclass(frozen=True, slots=True)
class Negatives:
    """A corpus's fixed sample of papers that trained profiles learn against, with what training needs of it."""

    keys: tuple[tuple[str, int], ...]
    rows: sparse.csr_matrix
    transposed: sparse.csr_matrix
    dots: Floats  # negatives x negatives


@dataclass(frozen=True, slots=True)
class Scores:
    """A batch of papers scored by one profile: ``values[i]`` is paper i's score (0..1), ``nearest[i]`` the index in
    ``liked`` of the liked paper it looks most like."""

    liked: tuple[Paper, ...]
    values: Floats
    nearest: npt.NDArray[np.intp]

    def similarity(self, number: int) -> Similarity:
        """Paper ``number``'s score and nearest liked paper."""
        liked = self.liked[int(self.nearest[number])]
        return Similarity(score=float(self.values[number]), liked_id=liked.arxiv_id, liked_title=liked.title)

    def best(self, top: int | None = None, min_score: float | None = None) -> list[int]:
        """The papers (indices) scoring at least ``min_score``, highest first (ties in batch order), at most
        ``top`` of them."""
        chosen = np.flatnonzero(self.values >= min_score) if min_score is not None else np.arange(len(self.values))
        if top is not None and top < len(chosen):
            chosen = chosen[np.argpartition(-self.values[chosen], top - 1, kind="introselect")[:top]]
        return sorted(chosen.tolist(), key=lambda number: (-self.values[number], number))


class Profile:
    """How much papers look like the ones a subscriber likes, as a score in 0..1 (what ``min_score`` compares with),
    and which liked paper each looks most like (the highest cosine of their TF-IDF vectors).

    - With at least ``MIN_TRAINED`` liked papers, the score comes from a linear model trained per profile, the
      arxiv-sanity-lite way: a linear SVM over the TF-IDF vectors (scikit-learn's ``SVC`` on their linear kernel,
      ``class_weight="balanced"``), the liked papers the positives, the corpus's fixed sample of papers (less any
      liked or disliked one) and the disliked papers the negatives, each disliked paper weighing as much as a liked
      one (as one negative among hundreds it would change nothing). Its margin is mapped to 0..1 as the way
      from a typical paper to the liked ones: 0 is the mean margin of the corpus's sample, 1 that of the liked
      papers (clipped), so ``min_score: 0.5`` keeps the papers at least halfway to looking like yours.
    - With fewer, the score is the highest cosine to a liked paper, less ``DISLIKE_SHARE`` of the highest cosine to
      a disliked one, floored at 0.

    Either way a liked paper itself scores high (it is not left out here), and the result is deterministic.
    """

    def __init__(
        self,
        liked: PaperMatrix,
        disliked: PaperMatrix,
        negatives: Negatives,
        matrix: Callable[[Sequence[Paper]], PaperMatrix],
        *,
        trained: bool | None = None,
    ) -> None:
        if not len(liked):
            raise ValueError("a profile needs at least one liked paper")
        self.liked = liked.papers
        self.disliked = disliked.papers
        self._liked = liked.rows
        self._disliked = disliked.rows
        self._matrix = matrix
        self._negatives = negatives
        excluded = {paper.key for paper in (*liked.papers, *disliked.papers)}
        self._kept = np.array([key not in excluded for key in negatives.keys], dtype=bool)
        wanted = len(self.liked) >= MIN_TRAINED if trained is None else trained
        self.trained = wanted and bool(self._kept.any() or len(self.disliked))
        self._weights: tuple[Floats, Floats, Floats, float, float, float] | None = None
        if self.trained:
            self._weights = self._train(liked, disliked)

    def rank(self, papers: Sequence[Paper] | PaperMatrix) -> list[Similarity]:
        """Every paper's similarity, in the order given. Pass a :class:`PaperMatrix` of the batch (from
        :meth:`Corpus.matrix <notifier.relevance.Corpus.matrix>`) to rank many profiles for one transform."""
        scores = self.scores(papers)
        return [scores.similarity(number) for number in range(len(scores.values))]

    def scores(self, papers: Sequence[Paper] | PaperMatrix) -> Scores:
        """What :meth:`rank` gives, as arrays: for many papers of which few are shown, pick them with
        :meth:`Scores.best` and make only their :class:`~notifier.models.Similarity`."""
        batch = papers if isinstance(papers, PaperMatrix) else self._matrix(papers)
        if not len(batch):
            return Scores(self.liked, np.zeros(0), np.zeros(0, dtype=np.intp))
        to_liked = dots(self._liked, batch.transposed)  # liked x papers: cosines
        nearest = to_liked.argmax(axis=0)
        if self._weights is None:
            values = to_liked.max(axis=0)
            if len(self.disliked):
                values = values - DISLIKE_SHARE * dots(self._disliked, batch.transposed).max(axis=0)
        else:
            on_liked, on_negatives, on_disliked, intercept, typical, liked_like = self._weights
            margin = on_liked @ to_liked + batch.negative_dots(self._negatives.transposed) @ on_negatives + intercept
            if len(self.disliked):
                margin = margin + on_disliked @ dots(self._disliked, batch.transposed)
            values = (margin - typical) / (liked_like - typical)
        return Scores(self.liked, np.clip(values, 0.0, 1.0), nearest)

    def _train(self, liked: PaperMatrix, disliked: PaperMatrix) -> tuple[Floats, Floats, Floats, float, float, float]:
        """Train on the dot products of the training papers (the linear kernel): the negatives' with each other are
        the corpus's, computed once, so a profile costs the liked and disliked papers' products only."""
        kept = np.flatnonzero(self._kept)
        negatives = self._negatives
        training = [liked.rows, negatives.rows[kept], disliked.rows]
        transposed = [liked.transposed, sparse.csr_matrix(negatives.transposed[:, kept]), disliked.transposed]
        kernel = np.block(
            [
                [
                    negatives.dots[np.ix_(kept, kept)] if (i, j) == (1, 1) else dots(a, b_t)
                    for j, b_t in enumerate(transposed)
                ]
                for i, a in enumerate(training)
            ]
        )
        labels = np.zeros(kernel.shape[0])
        labels[: len(liked)] = 1.0
        weights = np.ones(kernel.shape[0])
        weights[len(liked) + len(kept) :] = (len(kept) + len(disliked)) / len(liked)  # a dislike weighs as a like
        model = SVC(kernel="precomputed", C=C, class_weight="balanced").fit(kernel, labels, sample_weight=weights)
        coefficients = np.zeros(kernel.shape[0])
        coefficients[model.support_] = model.dual_coef_[0]
        on_liked = coefficients[: len(liked)]
        on_negatives = np.zeros(len(negatives.keys))
        on_negatives[kept] = coefficients[len(liked) : len(liked) + len(kept)]
        on_disliked = coefficients[len(liked) + len(kept) :]
        intercept = float(model.intercept_[0])
        margins = kernel @ coefficients + intercept
        typical = float(margins[len(liked) : len(liked) + len(kept)].mean()) if len(kept) else intercept
        liked_like = max(float(margins[: len(liked)].mean()), typical + 1e-9)
        return on_liked, on_negatives, on_disliked, intercept, typical, liked_like
