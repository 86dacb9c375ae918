"""Ranked planning with an embedding model, in-process: the same store, days and liked papers as
tests/test_ranking_planner.py, the papers' vectors stored as the embedding stage stores them (the stand-in's
deterministic ``embedding``), and the planner choosing, per subscriber, the embedding space or TF-IDF."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest

from notifier.config.settings import load_settings
from notifier.models import Paper
from notifier.outbox.planner import Planner
from notifier.relevance.corpus import text_of
from tests import test_ranking_planner
from tests.llm_server import embedding
from tests.test_ranking_planner import (
    LIKE,
    LIKED,
    SECOND,
    SIMILAR,
    TOP_FIVE,
    Setup,
    assert_best_first,
    config,
    contains,
    ids,
    ranked_scores,
    subscriber,
)

pytestmark = pytest.mark.slow  # each test plans two days of papers (about 2 s)

MODEL = "stand-in-embed"
TWO = config(subscriber("lab", TOP_FIVE, extra=f"    {LIKE}\n"), subscriber("other", TOP_FIVE, extra=f"    {LIKE}\n"))


make = test_ranking_planner.make  # the fixture: a planner over a store of the captured days


def embedding_planner(setup: Setup) -> Planner:
    """A planner like ``setup``'s, with ``NOTIFIER_EMBEDDING_MODEL`` set."""
    settings = load_settings(
        {},
        {
            "subscribers": str(setup.path),
            "data_dir": str(setup.path.parent / "data"),
            "llm_url": "http://127.0.0.1:9/v1",  # never asked: the planner does no I/O
            "embedding_model": MODEL,
        },
    )
    return Planner(setup.store, setup.renderer, settings)


def embed(setup: Setup, papers: list[Paper], *, leaving_out: Callable[[Paper], bool] = lambda paper: False) -> None:
    vectors = {p.key: np.array(embedding(text_of(p), 1024)) for p in papers if not leaving_out(p)}
    setup.store.save_embeddings(MODEL, vectors, setup.clock())


def everything(setup: Setup) -> list[Paper]:
    papers = setup.store.recent_papers(setup.clock() - timedelta(days=30), 100_000)
    return papers + list(setup.store.reference_papers(LIKED).values())


def statements_on_embeddings(setup: Setup) -> list[str]:
    seen: list[str] = []
    setup.store.db.set_trace_callback(lambda sql: seen.append(sql) if "embeddings" in sql else None)
    return seen


def test_with_every_paper_embedded_the_ranking_is_by_the_vectors(make, caplog):
    setup = make(TWO)
    setup.like(LIKED)
    start = setup.clock()
    setup.ingest(SECOND)
    embed(setup, everything(setup))
    planner = embedding_planner(setup)
    statements = statements_on_embeddings(setup)

    with caplog.at_level(logging.INFO, logger="notifier"):
        planner.plan(setup.config, setup.clock(), force=True)

    section = setup.section("lab", SIMILAR)
    assert len(section.matches) == 5
    assert_best_first(section)
    candidates = setup.seen(start)
    about_asr = {p.arxiv_id for p in candidates if contains(f"{p.title} {p.abstract}", "speech recognition")}
    assert len(set(ids(section.matches)) & about_asr) >= 2
    lab = next(s for s in setup.config.subscribers if s.name == "lab")
    profile = planner.rankings.profile(lab, setup.clock(), candidates)
    assert profile is not None
    scores = profile.scores(candidates).values
    on_asr = [score for paper, score in zip(candidates, scores, strict=True) if paper.arxiv_id in about_asr]
    others = [score for paper, score in zip(candidates, scores, strict=True) if paper.arxiv_id not in about_asr]
    assert np.mean(on_asr) > np.mean(others) + 0.05, "papers on the liked papers' topic look more like them"
    by_tf_idf = setup.scores("lab", [match.paper for match in section.matches])  # the planner without a model
    assert not np.allclose(by_tf_idf, ranked_scores(section)), "another space, other scores"
    assert not [r for r in caplog.records if "TF-IDF" in r.getMessage()]
    assert 1 <= len(statements) <= 2, "the recent papers' vectors and the liked ones', once for both subscribers"


def test_a_subscriber_with_a_paper_not_embedded_falls_back_with_one_line_per_plan(make, caplog):
    setup = make(TWO)
    setup.like(LIKED)
    setup.ingest(SECOND)
    embed(setup, everything(setup), leaving_out=lambda paper: paper.arxiv_id == LIKED[0])
    planner = embedding_planner(setup)

    with caplog.at_level(logging.INFO, logger="notifier"):
        planner.plan(setup.config, setup.clock(), force=True)

    lines = [r for r in caplog.records if "TF-IDF" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].getMessage().startswith("2 ranked subscribers ranked by TF-IDF, not by embeddings (lab, other)")
    assert "1 of the papers they need have no embedding yet" in lines[0].getMessage()
    section = setup.section("lab", SIMILAR)
    by_tf_idf = setup.scores("lab", [match.paper for match in section.matches])
    assert np.allclose(by_tf_idf, ranked_scores(section)), "ranked exactly as without an embedding model"


def test_without_an_embedding_model_no_vector_is_read(make):
    setup = make(TWO)
    setup.like(LIKED)
    setup.ingest(SECOND)
    embed(setup, everything(setup))
    statements = statements_on_embeddings(setup)
    setup.plan()
    assert len(setup.section("lab", SIMILAR).matches) == 5
    assert statements == []


def test_papers_embedded_after_a_plan_are_used_by_the_next(make, caplog):
    setup = make(TWO)
    setup.like(LIKED)
    setup.ingest(SECOND, "cs.SD")
    embed(setup, everything(setup))
    planner = embedding_planner(setup)
    planner.plan(setup.config, setup.clock(), force=True)
    setup.clock.now += timedelta(hours=1)
    setup.ingest(SECOND, "eess.AS")
    setup.clock.now += timedelta(minutes=1)
    with caplog.at_level(logging.INFO, logger="notifier"):
        planner.plan(setup.config, setup.clock(), force=True)  # eess.AS's papers have no vector yet
        embed(setup, everything(setup))
        setup.clock.now += timedelta(minutes=1)
        setup.ingest(SECOND, "eess.AS")
        planner.plan(setup.config, setup.clock(), force=True)
    lines = [r.getMessage() for r in caplog.records if "TF-IDF" in r.getMessage()]
    assert len(lines) == 1, lines
