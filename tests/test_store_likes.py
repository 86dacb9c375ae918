"""What the store keeps of the papers subscribers like: their metadata apart from the feeds' papers, what each
``like:`` source resolved to and when, and the recent papers a ranking is fitted on; how a database of the version
before gains them.

The store contract runs on both stores (PostgreSQL where it is installed).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from notifier.models import Paper
from notifier.store.schema import SCHEMA_VERSION
from tests.test_outbox import paper
from tests.test_store_summaries import reopen

T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MONTH = timedelta(days=30)


def liked(arxiv_id: str, title: str, *, version: int = 1) -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=title,
        abstract=f"We study {title.lower()} at scale.",
        authors=("Tianyin Xu", "Zoë Ångström"),
        categories=("cs.OS", "cs.DC"),
    )


def test_a_liked_paper_comes_back_as_it_was_stored(store):
    old = liked("hep-th/9901001", "Strings in $\\mathcal{N}=4$")
    new = liked("2401.01234", "Configuration testing, re-visited")
    store.save_reference_papers([old, new], T0)

    assert store.reference_papers(["2401.01234", "hep-th/9901001", "2401.99999"]) == {
        "2401.01234": new,
        "hep-th/9901001": old,
    }
    assert store.reference_papers([]) == {}


def test_a_newer_version_replaces_a_liked_paper_and_an_older_one_does_not(store):
    store.save_reference_papers([liked("2401.01234", "First title", version=2)], T0)
    store.save_reference_papers([liked("2401.01234", "Stale title")], T0 + DAY)
    assert store.reference_papers(["2401.01234"])["2401.01234"].title == "First title"
    store.save_reference_papers([liked("2401.01234", "Third title", version=3)], T0 + DAY)
    assert store.reference_papers(["2401.01234"])["2401.01234"].version == 3


def test_likes_no_subscriber_has_any_more_are_forgotten_with_the_papers_only_they_named(store):
    store.save_reference_papers([liked(i, f"Paper {i}") for i in ("2401.1", "2401.2", "2401.3", "2401.4")], T0)
    store.save_like_sources({"au:Kept Author": ["2401.1", "2401.2"], "au:Gone Author": ["2401.2", "2401.3"]}, T0)
    with store.transaction() as db:  # a reader asked for more like 2401.4 from a digest
        store._exec(db, "INSERT INTO feedback VALUES (?, ?, ?, ?)", ("lab", "2401.4", "more", T0))

    assert store.forget_likes({"au:Kept Author", "id:2401.9"}) == (1, 1)

    assert store.like_sources(["au:Kept Author", "au:Gone Author"]).keys() == {"au:Kept Author"}
    assert store.reference_papers(["2401.1", "2401.2", "2401.3", "2401.4"]).keys() == {"2401.1", "2401.2", "2401.4"}
    assert store.forget_likes({"au:Kept Author"}) == (0, 0), "nothing more to forget"


def test_liked_papers_are_not_the_feeds_papers(store):
    store.save_reference_papers([liked("2401.01234", "Configuration testing")], T0)
    assert store.paper_count() == 0
    assert store.recent_papers(T0 - MONTH, 10) == []
    store.ingest("cs.DC", [paper("2506.1", "A compiler")], T0)
    store.prune(T0 + 2 * MONTH, MONTH)
    assert list(store.reference_papers(["2401.01234"])) == ["2401.01234"], "prune keeps what subscribers like"


def test_many_liked_papers_are_read_at_once(store):
    papers = [liked(f"2401.{n:05d}", f"Paper {n}") for n in range(1200)]
    store.save_reference_papers(papers, T0)
    found = store.reference_papers(p.arxiv_id for p in papers)
    assert len(found) == 1200 and found["2401.01199"].title == "Paper 1199"


def test_a_source_remembers_what_it_resolved_to_and_when(store):
    assert store.like_source("au:Tianyin Xu") is None
    store.save_like_source("au:Tianyin Xu", ["2401.00002", "2401.00001"], T0)
    store.save_like_source("ti:a paper nobody wrote", [], T0)

    assert store.like_source("au:Tianyin Xu") == (("2401.00002", "2401.00001"), T0)
    assert store.like_source("ti:a paper nobody wrote") == ((), T0)
    store.save_like_source("au:Tianyin Xu", ["2402.00003"], T0 + 8 * DAY)
    assert store.like_source("au:Tianyin Xu") == (("2402.00003",), T0 + 8 * DAY)


def test_many_sources_are_saved_and_read_together(store):
    resolved = {f"id:2401.{n:05d}": [f"2401.{n:05d}"] for n in range(700)} | {"ti:über naïve café": []}
    store.save_like_sources(resolved, T0)
    found = store.like_sources([*resolved, "au:Nobody"])
    assert set(found) == set(resolved)
    assert found["id:2401.00699"] == (("2401.00699",), T0) and found["ti:über naïve café"] == ((), T0)


def test_recent_papers_are_those_first_seen_since_newest_first(store):
    store.ingest("cs.DC", [paper("2505.1", "Last month")], T0 - MONTH)
    store.ingest("cs.DC", [paper("2506.1", "Monday"), paper("2506.2", "Monday too")], T0 - DAY)
    store.ingest("cs.LG", [paper("2506.3", "Tuesday")], T0)
    store.ingest("cs.LG", [paper("2506.1", "Monday, replaced", version=2)], T0)  # first seen stays Monday

    recent = store.recent_papers(T0 - 7 * DAY, 10)

    assert [(p.arxiv_id, p.version, p.title) for p in recent] == [
        ("2506.3", 1, "Tuesday"),
        ("2506.1", 2, "Monday, replaced"),
        ("2506.2", 1, "Monday too"),
    ]
    assert [p.arxiv_id for p in store.recent_papers(T0 - 7 * DAY, 2)] == ["2506.3", "2506.1"]
    assert store.recent_papers(T0 + DAY, 10) == []


def test_recent_papers_carry_what_the_api_added(store):
    store.ingest("cs.DC", [paper("2506.1", "A compiler")], T0)
    store.enrich("2506.1", T0, comment="9 pages", journal_ref="J. Test 1", categories=("cs.DC", "cs.PL"))
    (recent,) = store.recent_papers(T0 - DAY, 10)
    assert recent == replace(
        paper("2506.1", "A compiler"),
        categories=("cs.DC", "cs.PL"),
        comment="9 pages",
        journal_ref="J. Test 1",
        announced=None,
    )


def test_a_database_from_version_5_gains_the_liked_papers_when_opened(store):
    store.ingest("cs.DC", [paper("2506.1", "A compiler")], T0)
    with store.transaction() as db:  # as version 5 left it: no liked papers, no sources, no index by first sighting
        store._exec(db, "DROP TABLE reference_papers", ())
        store._exec(db, "DROP TABLE like_sources", ())
        store._exec(db, "DROP INDEX papers_by_first_seen", ())
        store._exec(db, "UPDATE meta SET value = '5' WHERE key = 'schema_version'", ())
    store = reopen(store)
    try:
        assert store._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == str(SCHEMA_VERSION)
        assert [p.arxiv_id for p in store.recent_papers(T0 - DAY, 10)] == ["2506.1"]
        store.save_reference_papers([liked("2401.01234", "Configuration testing")], T0)
        store.save_like_source("id:2401.01234", ["2401.01234"], T0)
        assert store.like_source("id:2401.01234") == (("2401.01234",), T0)
        assert list(store.reference_papers(["2401.01234"])) == ["2401.01234"]
    finally:
        store.close()
