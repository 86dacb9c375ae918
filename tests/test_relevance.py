"""Ranking by likes over real papers: the audio feeds of both captured days and part of a big feed are the corpus;
a researcher is a real author of several of them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from notifier.arxiv.rss import parse_feed
from notifier.models import Paper
from notifier.relevance import MIN_TRAINED, Corpus
from notifier.relevance.matrix import dots
from notifier.relevance.profile import _solve_with_negatives
from tests.arxiv_server import BIG, SMALL, fixture_catalogue

AUTHOR = "Orchid Chetia Phukan"  # six papers on paralinguistic speech models


def feed(day: str, key: str) -> list[Paper]:
    catalogue = fixture_catalogue()
    return list(parse_feed((catalogue.folder / catalogue.days[day][key]).read_bytes(), key).papers)


@pytest.fixture(scope="module")
def papers() -> list[Paper]:
    chosen = [*feed("2025-06-03", SMALL), *feed("2025-06-04", SMALL), *feed("2025-06-04", BIG)[:300]]
    return list({p.arxiv_id: p for p in chosen}.values())


@pytest.fixture(scope="module")
def corpus(papers) -> Corpus:
    return Corpus.fit(papers)


@pytest.fixture(scope="module")
def own(papers) -> list[Paper]:
    found = sorted((p for p in papers if AUTHOR in p.authors), key=lambda p: p.arxiv_id)
    assert len(found) > MIN_TRAINED
    return found


def scores_of(corpus, liked, papers, **kwargs):
    return {p.arxiv_id: s for p, s in zip(papers, corpus.profile(liked, **kwargs).rank(papers), strict=True)}


@pytest.mark.parametrize("trained", [False, True])
def test_a_held_out_paper_of_a_researcher_ranks_above_unrelated_papers(corpus, papers, own, trained):
    held, liked = own[0], own[1:]
    big = {p.arxiv_id for p in feed("2025-06-04", BIG)[:300]}
    unrelated = [p for p in papers if p.arxiv_id in big]
    scores = scores_of(corpus, liked, [held, *unrelated], trained=trained)
    beaten = sum(scores[held.arxiv_id].score > scores[p.arxiv_id].score for p in unrelated)
    assert beaten >= 0.95 * len(unrelated)


def test_the_explanation_is_the_nearest_liked_paper(corpus, own):
    liked = own[1:]
    for paper, similarity in zip(liked, corpus.profile(liked).rank(liked), strict=True):
        assert (similarity.liked_id, similarity.liked_title) == (paper.arxiv_id, paper.title)


@pytest.mark.parametrize("count", [1, 3, MIN_TRAINED + 1])
def test_dislikes_lower_a_papers_score(corpus, papers, own, count):
    liked, others = own[:count], [p for p in papers if AUTHOR not in p.authors]
    before = corpus.profile(liked).rank(others)
    candidate = others[max(range(len(others)), key=lambda n: before[n].score)]  # the stranger most like the liked
    after = corpus.profile(liked, [candidate]).rank([candidate])[0].score
    assert after < before[others.index(candidate)].score


def test_few_likes_use_cosine_and_many_a_trained_model(corpus, own):
    assert not corpus.profile(own[: MIN_TRAINED - 1]).trained
    assert corpus.profile(own[:MIN_TRAINED]).trained
    one = own[0]
    assert corpus.profile([one]).rank([one])[0].score == pytest.approx(1.0)  # cosine of a paper to itself


@pytest.mark.parametrize("count", [1, MIN_TRAINED + 1])
def test_scores_are_within_0_and_1_and_the_same_every_time(corpus, papers, own, count):
    first = Corpus.fit(papers).profile(own[:count]).rank(papers)
    again = corpus.profile(own[:count]).rank(corpus.matrix(papers))
    assert first == again
    assert all(0.0 <= s.score <= 1.0 for s in first)


def test_a_liked_paper_scores_high_and_is_kept(corpus, papers, own):
    liked = own[1:]
    ranked = corpus.profile(liked).rank(papers)
    scores = sorted((s.score for s in ranked), reverse=True)
    assert len(ranked) == len(papers)
    assert all(ranked[papers.index(p)].score >= scores[len(liked) + 5] for p in liked)


def test_best_picks_the_top_papers_above_a_minimum_score(corpus, papers, own):
    scores = corpus.profile(own[1:]).scores(papers)
    best = scores.best(top=10, min_score=0.2)
    assert len(best) <= 10
    assert [scores.values[n] for n in best] == sorted((scores.values[n] for n in best), reverse=True)
    assert all(scores.values[n] >= 0.2 for n in best)
    assert scores.similarity(best[0]) == corpus.profile(own[1:]).rank(papers)[best[0]]


def test_papers_outside_the_corpus_are_ranked_too(corpus, own):
    stranger = Paper("2999.00001", 1, own[0].title, own[0].abstract, ())
    assert corpus.profile(own[1:2]).rank([stranger])[0].score > 0.1


@pytest.mark.parametrize("left_out", [[], [3, 40]])
def test_training_through_the_factored_negatives_solves_the_whole_system(corpus, papers, left_out):
    """A profile solves only its own papers' part of the least-squares system, the negatives' part being factored
    once per corpus, and negatives that are the subscriber's own papers are left out of it; the answer is the one of
    the whole system without them."""
    rows = corpus.matrix(papers[:80]).rows
    kernel = dots(rows, sparse.csr_matrix(rows.T))
    own, targets = 12, np.r_[np.ones(9), -np.ones(3)]
    ridge_own, ridge_negatives = np.linspace(0.5, 2.0, own), 0.7
    on_own, on_negatives, intercept = _solve_with_negatives(
        kernel[:own, :own],
        kernel[:own, own:],
        targets,
        ridge_own,
        ridge_negatives,
        np.linalg.eigh(kernel[own:, own:]),
        np.array(left_out, dtype=np.intp),
    )
    kept = [n for n in range(80) if n - own not in left_out]
    size = len(kept)
    system = np.zeros((size + 1, size + 1))
    system[:size, :size] = kernel[np.ix_(kept, kept)] + np.diag(np.r_[ridge_own, np.full(size - own, ridge_negatives)])
    system[:size, size] = system[size, :size] = 1.0
    whole = np.linalg.solve(system, np.r_[targets, -np.ones(size - own), 0.0])
    assert np.allclose(on_own, whole[:own], atol=1e-8)
    assert np.allclose(on_negatives[[n - own for n in kept[own:]]], whole[own:size], atol=1e-8)
    assert np.allclose(on_negatives[left_out], 0.0) and np.isclose(intercept, whole[size])
