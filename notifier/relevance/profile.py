"""A subscriber's profile: the papers they like and dislike, and how much any paper looks like the liked ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from notifier.models import Paper, Similarity
from notifier.relevance.matrix import Floats, PaperMatrix, Rows, dots, stack, transpose

MIN_TRAINED = 5  # from this many liked papers on, a profile trains a linear model; with fewer, it uses cosine
DISLIKE_SHARE = 0.5  # cosine scores lose this share of a paper's highest cosine to a disliked paper
RIDGE = 3.0  # the least-squares model's regularisation, per unit of a training paper's weight


@dataclass(frozen=True)
class Negatives:
    """A corpus's fixed sample of papers that trained profiles learn against, with what training needs of it."""

    keys: tuple[tuple[str, int], ...]
    rows: Rows
    transposed: Rows
    dots: Floats  # negatives x negatives

    @cached_property
    def spectrum(self) -> tuple[Floats, Floats]:
        """The eigenvalues and eigenvectors of :attr:`dots` (symmetric), made on first use."""
        values, vectors = np.linalg.eigh(self.dots)
        return np.asarray(values, dtype=np.float64), np.asarray(vectors, dtype=np.float64)


class Scores:
    """A batch of papers scored by one profile: ``values[i]`` is paper i's score (0..1). Which liked paper each looks
    most like is worked out only for the papers asked about (:meth:`similarities`): a day has thousands of papers and
    a digest shows a few."""

    __slots__ = ("_batch", "_liked_rows", "_nearest", "liked", "values")

    def __init__(
        self,
        liked: tuple[Paper, ...],
        values: Floats,
        *,
        liked_rows: Rows,
        batch: PaperMatrix | None = None,
        nearest: npt.NDArray[np.intp] | None = None,
    ) -> None:
        self.liked = liked
        self.values = values
        self._liked_rows = liked_rows
        self._batch = batch
        self._nearest = nearest  # known when scoring computed every cosine anyway

    def nearest(self, numbers: Sequence[int]) -> npt.NDArray[np.intp]:
        """For each of the papers ``numbers``, the index in ``liked`` of the liked paper with the highest cosine."""
        chosen = np.asarray(numbers, dtype=np.intp)
        if self._nearest is not None:
            return self._nearest[chosen]
        if self._batch is None or not len(chosen):
            return np.zeros(len(chosen), dtype=np.intp)
        columns = transpose(self._batch.rows[chosen])
        return np.asarray(dots(self._liked_rows, columns).argmax(axis=0), dtype=np.intp)

    def similarities(self, numbers: Sequence[int]) -> list[Similarity]:
        """The score and nearest liked paper of each of the papers ``numbers``, in that order."""
        nearest = self.nearest(numbers)
        return [
            Similarity(score=float(self.values[number]), liked_id=liked.arxiv_id, liked_title=liked.title)
            for number, liked in zip(numbers, (self.liked[int(n)] for n in nearest), strict=True)
        ]

    def similarity(self, number: int) -> Similarity:
        """Paper ``number``'s score and nearest liked paper."""
        return self.similarities([number])[0]

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

    - With at least ``MIN_TRAINED`` liked papers, the score comes from a linear model trained per profile, as
      arxiv-sanity-lite does, but fitted by least squares (a least-squares SVM, or kernel ridge classifier, on the
      TF-IDF vectors' linear kernel) rather than by an SVM's iterative solver: the liked papers are the positives,
      the corpus's fixed sample of papers (less any liked or disliked one) and the disliked papers the negatives,
      each class weighing half and each disliked paper as much as a liked one (as one negative among hundreds it
      would change nothing). The sample's part of the system is the same for every profile of a corpus, so it is
      factored once (:attr:`Negatives.spectrum`) and a profile solves a system the size of its own papers
      (``bench/relevance.py`` compares it with arxiv-sanity-lite's LinearSVC). Its margin is mapped to
      0..1 as the way from a typical paper to the liked ones: 0 is the mean margin of the corpus's sample, 1 that
      of the liked papers (clipped), so ``min_score: 0.5`` keeps the papers at least halfway to looking like yours.
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
        self._model: _Model | None = None
        if self.trained:
            self._model = self._train(liked, disliked)

    def rank(self, papers: Sequence[Paper] | PaperMatrix) -> list[Similarity]:
        """Every paper's similarity, in the order given. Pass a :class:`PaperMatrix` of the batch (from
        :meth:`Corpus.matrix <notifier.relevance.Corpus.matrix>`) to rank many profiles for one transform."""
        scores = self.scores(papers)
        return scores.similarities(range(len(scores.values)))

    def scores(self, papers: Sequence[Paper] | PaperMatrix) -> Scores:
        """What :meth:`rank` gives, as arrays: for many papers of which few are shown, pick them with
        :meth:`Scores.best` and make only their :class:`~notifier.models.Similarity`.

        A trained profile scores the batch through its weights over terms (the liked and disliked papers' vectors
        weighted by the model) and the batch's products with the corpus's negatives (computed once per batch), so
        a profile costs one sparse product with the batch, however many liked papers it has."""
        batch = papers if isinstance(papers, PaperMatrix) else self._matrix(papers)
        if not len(batch):
            return Scores(self.liked, np.zeros(0), liked_rows=self._liked)
        if self._model is None:
            to_liked = dots(self._liked, batch.transposed)  # liked x papers: cosines
            values = to_liked.max(axis=0)
            if len(self.disliked):
                values = values - DISLIKE_SHARE * dots(self._disliked, batch.transposed).max(axis=0)
            nearest = np.asarray(to_liked.argmax(axis=0), dtype=np.intp)
            return Scores(self.liked, np.clip(values, 0.0, 1.0), liked_rows=self._liked, nearest=nearest)
        model = self._model
        terms = np.zeros(batch.rows.shape[1])
        terms[model.terms] = model.term_weights
        margin = batch.rows @ terms + batch.negative_dots(self._negatives.transposed) @ model.on_negatives
        values = (margin + model.intercept - model.typical) / (model.liked_like - model.typical)
        return Scores(self.liked, np.clip(values, 0.0, 1.0), liked_rows=self._liked, batch=batch)

    def _train(self, liked: PaperMatrix, disliked: PaperMatrix) -> _Model:
        """Train on the dot products of the training papers (the linear kernel): the negatives' with each other are
        the corpus's, computed and factored once, so a profile costs the liked and disliked papers' products and a
        system as small as their number."""
        negatives = self._negatives
        kept = np.flatnonzero(self._kept)
        own = len(liked) + len(disliked)  # the training papers that are the subscriber's own: liked, then disliked
        own_negatives = np.vstack(
            [liked.negative_dots(negatives.transposed), disliked.negative_dots(negatives.transposed)]
        )
        own_rows = stack([liked.rows, disliked.rows])
        own_dots = dots(own_rows, transpose(own_rows))
        targets = np.r_[np.ones(len(liked)), -np.ones(len(disliked))]
        # class_weight "balanced" (each class weighs half), a disliked paper weighing as much as a liked one
        total = own + len(kept)
        weights = np.full(own, total / (2 * len(liked)))
        ridge_own = RIDGE / weights
        ridge_negatives = RIDGE * 2 * (len(kept) + len(disliked)) / total
        left_out = np.flatnonzero(~self._kept)
        on_own, on_negatives, intercept = _solve_with_negatives(
            own_dots, own_negatives, targets, ridge_own, ridge_negatives, negatives.spectrum, left_out
        )
        own_margins = own_dots @ on_own + own_negatives @ on_negatives + intercept
        kept_margins = (own_negatives.T @ on_own + negatives.dots @ on_negatives)[kept] + intercept
        typical = float(kept_margins.mean()) if len(kept) else intercept
        liked_like = max(float(own_margins[: len(liked)].mean()), typical + 1e-9)
        over_terms = np.asarray(own_rows.T @ on_own, dtype=np.float64)  # the own papers' part, as weights over terms
        terms = np.flatnonzero(over_terms).astype(np.int32)
        return _Model(terms, over_terms[terms], on_negatives, intercept, typical, liked_like)


@dataclass(frozen=True, slots=True)
class _Model:
    """A trained profile: a paper's margin is its vector's product with the weights over ``terms`` plus its products
    with the corpus's negatives times ``on_negatives``, plus ``intercept``; ``typical`` and ``liked_like`` are the
    margins that map to scores 0 and 1."""

    terms: npt.NDArray[np.int32]
    term_weights: Floats
    on_negatives: Floats
    intercept: float
    typical: float
    liked_like: float


def _solve_with_negatives(
    own_dots: Floats,
    own_negatives: Floats,
    targets: Floats,
    ridge_own: Floats,
    ridge_negatives: float,
    spectrum: tuple[Floats, Floats],
    left_out: npt.NDArray[np.intp],
) -> tuple[Floats, Floats, float]:
    """Solve the least-squares SVM's system for the subscriber's own papers (``own_dots``, ``targets``, ``ridge_own``)
    and the corpus's sample of negatives (target -1, ``ridge_negatives``), without the negatives ``left_out``:

        (K + diag(ridge)) a + b = targets, sum(a) = 0

    The negatives' block is eliminated through its eigendecomposition (``spectrum``, made once per corpus), leaving
    a system of the own papers, the intercept and one constraint per negative left out (its coefficient is 0 and its
    equation dropped): as small as the subscriber's own papers. Returns the coefficients of the own papers and of
    the negatives, and the intercept ``b``."""
    values, vectors = spectrum  # the negatives' dot products = vectors @ diag(values) @ vectors.T
    inverse = 1.0 / (values + ridge_negatives)  # of the negatives' block, in the eigenbasis
    own, negatives = own_negatives.shape
    size = own + 1 + len(left_out)  # the own papers, the intercept, the constraints
    border = np.zeros((size, negatives))  # how each of those meets the negatives
    border[:own] = own_negatives
    border[own] = 1.0
    border[own + 1 + np.arange(len(left_out)), left_out] = 1.0
    small = np.zeros((size, size))
    small[:own, :own] = own_dots
    small[np.arange(own), np.arange(own)] += ridge_own
    small[:own, own] = small[own, :own] = 1.0
    # In the eigenbasis the negatives' block is diagonal: its inverse is a product with ``inverse``.
    turned = border @ vectors  # size x negatives
    targets_turned = vectors.sum(axis=0) * -1.0  # the negatives' targets (-1 each), in the eigenbasis
    right = np.zeros(size)
    right[:own] = targets
    solution = np.linalg.solve(small - (turned * inverse) @ turned.T, right - turned @ (inverse * targets_turned))
    on_negatives = vectors @ (inverse * (targets_turned - turned.T @ solution))
    on_negatives[left_out] = 0.0  # zero already, but for rounding
    return np.asarray(solution[:own], dtype=np.float64), on_negatives, float(solution[own])
