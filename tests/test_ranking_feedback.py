"""Feedback in ranking: a paper a reader wants more like joins the subscriber's liked papers, one it wants fewer like
its disliked ones, a click overrules the config for its paper, and the next plan of the same planner ranks with it.
Planned in-process over the captured days of cs.SD and eess.AS (see tests/test_ranking_planner.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.models import Paper
from notifier.outbox.ranking import with_feedback
from tests.clock import MORNING
from tests.test_outbox import paper
from tests.test_ranking_planner import LIKE, LIKED, SECOND, SIMILAR, Setup, config, score_of, subscriber

A, B, C, D = (paper(f"2506.0000{i}", f"Paper {i}") for i in range(1, 5))
PAPERS = {p.arxiv_id: p for p in (A, B, C, D)}


def test_more_adds_to_the_liked_papers_and_fewer_to_the_disliked_ones():
    feedback = {C.arxiv_id: ("more", MORNING), D.arxiv_id: ("fewer", MORNING)}
    assert with_feedback([A], [B], feedback, PAPERS) == ([A, C], [B, D])
    assert with_feedback([A], [B], {}, PAPERS) == ([A], [B])


def test_a_click_overrules_the_config_for_its_paper():
    feedback = {A.arxiv_id: ("fewer", MORNING), B.arxiv_id: ("more", MORNING)}
    assert with_feedback([A], [B], feedback, PAPERS) == ([B], [A])


def test_feedback_on_a_paper_not_stored_counts_for_nothing_and_nothing_is_listed_twice():
    feedback = {"2506.99999": ("more", MORNING), A.arxiv_id: ("more", MORNING)}
    assert with_feedback([A], [], feedback, PAPERS) == ([A], [])


EVERY = f"      - {{name: {SIMILAR}, similar: {{top: null}}}}\n"


@pytest.fixture
def ranked(tmp_path: Path) -> Iterator[tuple[Setup, list[Paper], dict[str, float]]]:
    """A planner ranking the second day's papers for "lab", who likes the first day's speech recognition papers;
    the day's papers; and their scores before any feedback."""
    setup = Setup(tmp_path / "lab", config(subscriber("lab", EVERY, extra=f"    {LIKE}\n")))
    try:
        setup.like(LIKED)
        start = setup.clock()
        setup.ingest(SECOND)
        day = setup.seen(start)
        yield setup, day, dict(zip([p.arxiv_id for p in day], setup.scores("lab", day), strict=True))
    finally:
        setup.store.close()


def test_the_next_plan_ranks_a_paper_given_fewer_and_its_neighbours_lower(ranked):
    setup, day, before = ranked
    best = max(day, key=lambda p: before[p.arxiv_id])

    setup.store.save_feedback("lab", best, "fewer", setup.clock())
    setup.plan()  # the same planner: it reads the feedback afresh
    after = {m.paper.arxiv_id: score_of(m) for m in setup.section("lab", SIMILAR).matches}
    assert after[best.arxiv_id] < before[best.arxiv_id]
    corpus = setup.planner.rankings.corpus(setup.clock())
    assert corpus is not None
    cosines = corpus.profile([best], trained=False).scores(day).values
    near = [p.arxiv_id for p, cosine in zip(day, cosines, strict=True) if cosine >= 0.2]
    assert len(near) >= 2, "the paper and one much like it"
    for arxiv_id in near:
        assert after[arxiv_id] < before[arxiv_id], arxiv_id


def test_more_like_a_paper_of_the_day_raises_it_and_names_it_as_liked(ranked):
    setup, day, before = ranked
    worst = min(day, key=lambda p: before[p.arxiv_id])

    setup.store.save_feedback("lab", worst, "more", setup.clock())
    setup.plan()
    after = {m.paper.arxiv_id: m for m in setup.section("lab", SIMILAR).matches}
    assert score_of(after[worst.arxiv_id]) > before[worst.arxiv_id]
    similarity = after[worst.arxiv_id].similarity
    assert similarity is not None and similarity.liked_id == worst.arxiv_id, "nearest to itself, now liked"
