"""The TF-IDF vocabulary and weights of a corpus of recent papers, and the vectors of papers under them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import sparse

from notifier.models import Paper
from notifier.relevance.matrix import PaperMatrix, dots
from notifier.relevance.profile import Negatives, Profile

if TYPE_CHECKING:  # imported where a corpus is fitted: scikit-learn takes about 80 MB, of no use until one ranks
    from sklearn.feature_extraction.text import TfidfVectorizer

MAX_FEATURES = 50_000  # words and word pairs kept: bounds every vector and the memory of the corpus
MIN_DF = 2  # a term must be in at least this many papers of the corpus
MAX_DF = 0.1  # and in at most this share of them: commoner terms say little about a topic (arxiv-sanity-lite's)
SMALL_CORPUS = 20  # below this many papers, every term is kept
NEGATIVES = 250  # papers of the corpus sampled once as the negatives every trained profile learns against
CACHE = 20_000  # vectors of papers outside the corpus kept for reuse (liked papers are asked for again and again)

Key = tuple[str, int]
Row = tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]


def text_of(paper: Paper) -> str:
    return f"{paper.title}. {paper.abstract}"


class Corpus:
    """TF-IDF over title and abstract, fitted on a corpus of recent papers: sublinear term frequency, English stop
    words removed, words and pairs of words (unigrams and bigrams), terms in at least ``MIN_DF`` papers and at most
    ``MAX_DF`` of them, at most ``MAX_FEATURES`` terms. Rows are L2-normalised, so a dot product is a cosine.

    Vectors of the corpus's own papers are kept from the fit; any other paper is transformed when first asked for
    and its vector kept (the last ``CACHE`` of them), so a liked paper costs one transform however many profiles
    and days use it. A fixed random sample of ``NEGATIVES`` corpus papers (``seed``) is what trained profiles learn
    against; their dot products with each other are computed here, once.
    """

    def __init__(
        self,
        vectoriser: TfidfVectorizer | None,
        papers: Sequence[Paper],
        rows: sparse.csr_matrix,
        negatives: int,
        seed: int,
    ) -> None:
        self._vectoriser = vectoriser
        self._rows = rows
        self._index: dict[Key, int] = {}
        for number, paper in enumerate(papers):
            self._index.setdefault(paper.key, number)
        self._cache: OrderedDict[Key, Row] = OrderedDict()
        sample = np.sort(np.random.default_rng(seed).permutation(len(papers))[:negatives])
        sampled = [papers[int(number)] for number in sample]
        matrix = self.matrix(sampled)
        self._negatives = Negatives(
            keys=tuple(paper.key for paper in sampled),
            transposed=matrix.transposed,
            rows=matrix.rows,
            dots=dots(matrix.rows, matrix.transposed),
        )

    @classmethod
    def fit(
        cls,
        papers: Sequence[Paper],
        *,
        max_features: int = MAX_FEATURES,
        negatives: int = NEGATIVES,
        seed: int = 0,
    ) -> Corpus:
        """Learn the vocabulary and weights of ``papers`` (a corpus of recent papers, a day or more)."""
        from sklearn.feature_extraction.text import TfidfVectorizer  # here, not at the top: see TYPE_CHECKING above

        small = len(papers) < SMALL_CORPUS
        vectoriser = TfidfVectorizer(
            strip_accents="unicode",
            stop_words="english",
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=1 if small else MIN_DF,
            max_df=1.0 if small else MAX_DF,
            max_features=max_features,
            dtype=np.float32,
        )
        try:
            rows = sparse.csr_matrix(vectoriser.fit_transform([text_of(p) for p in papers]), dtype=np.float32)
        except ValueError:  # no papers, or no term left in them: every paper is as far from every other
            return cls(None, papers, sparse.csr_matrix((len(papers), 0), dtype=np.float32), negatives, seed)
        return cls(vectoriser, papers, rows, negatives, seed)

    @property
    def features(self) -> int:
        """How many terms (words and word pairs) a vector has."""
        return int(self._rows.shape[1])

    def matrix(self, papers: Sequence[Paper]) -> PaperMatrix:
        """The vectors of ``papers``, in order. Make it once per batch (a day) and rank every profile against it."""
        pieces: list[Row | None] = []
        unknown: dict[Key, Paper] = {}
        for paper in papers:
            piece = self._row(paper.key)
            if piece is None:
                unknown.setdefault(paper.key, paper)
            pieces.append(piece)
        if unknown:
            self._transform(list(unknown.values()))
            pieces = [piece or self._cache[paper.key] for piece, paper in zip(pieces, papers, strict=True)]
        return PaperMatrix(papers, self._stack(pieces), owner=self)

    def profile(
        self, liked: Sequence[Paper], disliked: Sequence[Paper] = (), *, trained: bool | None = None
    ) -> Profile:
        """A subscriber's profile: see :class:`~notifier.relevance.Profile` for how it scores. A paper both liked and
        disliked counts as liked; a paper given twice counts once. ``trained`` chooses the linear model (True) or
        cosine (False) whatever the number of liked papers; by default, ``MIN_TRAINED`` decides."""
        liked_keys = {p.key: p for p in liked}
        disliked_keys = {p.key: p for p in disliked if p.key not in liked_keys}
        return Profile(
            self.matrix(list(liked_keys.values())),
            self.matrix(list(disliked_keys.values())),
            self._negatives,
            self.matrix,
            trained=trained,
        )

    def _row(self, key: Key) -> Row | None:
        number = self._index.get(key)
        if number is not None:
            start, end = self._rows.indptr[number], self._rows.indptr[number + 1]
            return self._rows.indices[start:end], self._rows.data[start:end]
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
        return cached

    def _transform(self, papers: Sequence[Paper]) -> None:
        if self._vectoriser is None:
            rows = sparse.csr_matrix((len(papers), 0), dtype=np.float32)
        else:
            rows = sparse.csr_matrix(self._vectoriser.transform([text_of(p) for p in papers]), dtype=np.float32)
        for number, paper in enumerate(papers):
            start, end = rows.indptr[number], rows.indptr[number + 1]
            self._cache[paper.key] = (rows.indices[start:end].copy(), rows.data[start:end].copy())
            self._cache.move_to_end(paper.key)
        while len(self._cache) > max(CACHE, len(papers)):
            self._cache.popitem(last=False)

    def _stack(self, pieces: Sequence[Row | None]) -> sparse.csr_matrix:
        lengths = [0 if piece is None else len(piece[0]) for piece in pieces]
        indptr = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        chosen = [piece for piece in pieces if piece is not None]
        indices = np.concatenate([p[0] for p in chosen]) if chosen else np.zeros(0, dtype=np.int32)
        data = np.concatenate([p[1] for p in chosen]) if chosen else np.zeros(0, dtype=np.float32)
        return sparse.csr_matrix((data, indices, indptr), shape=(len(pieces), self.features))
