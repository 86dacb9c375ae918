"""What the store keeps for rich entries: a summary once per paper version, the LLM's usage per UTC day, and the
authors' affiliations from the arXiv API; how a database of the version before gains them, and what prune drops.

The store contract runs on both stores (PostgreSQL where it is installed).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.models import Summary
from notifier.store.rows import LlmUsage
from notifier.store.schema import SCHEMA_VERSION
from notifier.store.sql import USAGE_DAYS_KEPT, SqlStore
from notifier.store.sqlite import SqliteStore
from tests.test_outbox import paper

T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MONTH = timedelta(days=30)
TODAY = T0.date()


def summary(arxiv_id: str, version: int = 1, text: str = "A compiler that makes GPUs fast.", **fields: Any) -> Summary:
    values: dict[str, Any] = {
        "topic": "mlsys",
        "subtopic": "compilers",
        "keywords": ("gpu kernels", "autotuning"),
        "institution": "ETH Zürich",
        "model": "qwen2.5:7b",
        **fields,
    }
    return Summary(arxiv_id, version, text, **values)


def another(store: SqlStore[Any]) -> SqlStore[Any]:
    """Another store on the database of ``store``, as another process would open it."""
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path)
    from notifier.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return PostgresStore(store.url)


def reopen(store: SqlStore[Any]) -> SqlStore[Any]:
    """The database of ``store``, closed and opened again (as the next run would)."""
    store.close()
    return another(store)


# -- summaries ----------------------------------------------------------------------------------------------------


def test_a_summary_comes_back_as_it_was_stored(store):
    first = summary("2506.1", keywords=("sparse averaging", "asynchronous optimization", "Über-ëncoding"))
    unknown = summary("2506.2", institution=None, keywords=())
    assert store.save_summaries([first, unknown], T0) == 2
    assert store.summaries([("2506.1", 1), ("2506.2", 1)]) == {("2506.1", 1): first, ("2506.2", 1): unknown}


def test_only_the_versions_asked_for_are_found(store):
    store.save_summaries([summary("2506.1", 1, "First version."), summary("2506.1", 2, "Second version.")], T0)
    found = store.summaries([("2506.1", 2), ("2506.1", 3), ("2506.9", 1)])
    assert {key: s.summary for key, s in found.items()} == {("2506.1", 2): "Second version."}
    assert store.summaries([]) == {}


def test_the_first_summary_of_a_paper_version_stays(store):
    assert store.save_summaries([summary("2506.1", text="Written first.")], T0) == 1
    again = [summary("2506.1", text="Written again by another daemon."), summary("2506.2", text="New.")]
    assert store.save_summaries(again, T0 + DAY) == 1, "only 2506.2 was new"
    assert store.save_summaries([summary("2506.3", text="One."), summary("2506.3", text="Two.")], T0) == 1
    found = store.summaries([("2506.1", 1), ("2506.2", 1), ("2506.3", 1)])
    assert [found[key].summary for key in sorted(found)] == ["Written first.", "New.", "One."]


def test_thousands_of_summaries_are_read_in_one_call(store):
    many = [summary(f"2506.{n:05d}", n % 3 + 1, f"Paper {n}.") for n in range(1500)]
    assert store.save_summaries(many, T0) == 1500
    asked = [s.key for s in many] + [(s.arxiv_id, s.version + 1) for s in many[:700]]
    found = store.summaries(asked)
    assert found == {s.key: s for s in many}


def test_summaries_outlive_the_store_that_wrote_them(store):
    store.save_summaries([summary("2506.1")], T0)
    store = reopen(store)
    try:
        assert store.summaries([("2506.1", 1)]) == {("2506.1", 1): summary("2506.1")}
    finally:
        store.close()


# -- the LLM's usage per day ----------------------------------------------------------------------------------


def test_a_day_without_usage_counts_zero(store):
    assert store.llm_usage(TODAY) == LlmUsage(TODAY, 0, 0, 0, 0, 0)


def test_usage_adds_up_within_a_day_and_days_stay_apart(store):
    store.record_llm_usage(TODAY, asked=3)
    store.record_llm_usage(TODAY, made=2, failed=1, prompt_tokens=2400, completion_tokens=310)
    store.record_llm_usage(TODAY, asked=1, made=1, prompt_tokens=800, completion_tokens=95)
    store.record_llm_usage(TODAY + DAY, asked=5)
    assert store.llm_usage(TODAY) == LlmUsage(TODAY, asked=4, made=3, failed=1, prompt_tokens=3200,
                                              completion_tokens=405)  # fmt: skip
    assert store.llm_usage(TODAY + DAY) == LlmUsage(TODAY + DAY, asked=5)
    assert store.llm_usage(TODAY - DAY) == LlmUsage(TODAY - DAY)


def test_usage_counted_by_several_processes_at_once_adds_up(store):
    def count(times: int) -> None:
        other = another(store)
        try:
            for _ in range(times):
                other.record_llm_usage(TODAY, asked=1, prompt_tokens=1000)
        finally:
            other.close()

    threads = [threading.Thread(target=count, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.llm_usage(TODAY) == LlmUsage(TODAY, asked=100, prompt_tokens=100_000)


# -- affiliations ---------------------------------------------------------------------------------------------


def test_affiliations_are_kept_with_the_paper(store):
    store.ingest("cs.DC", [paper("2506.1", "A compiler"), paper("2506.2", "GPUs"), paper("2506.3", "Consensus")], T0)
    store.enrich("2506.1", T0, comment=None, journal_ref=None, categories=(), affiliations=["MIT CSAIL", "ETH Zürich"])
    store.enrich("2506.2", T0, comment="9 pages", journal_ref=None, categories=("cs.DC",))
    assert store.affiliations(["2506.1", "2506.2", "2506.3", "9999.9"]) == {"2506.1": ("MIT CSAIL", "ETH Zürich")}
    assert store.not_enriched(["2506.1", "2506.2", "2506.3"]) == ["2506.3"]


def test_an_answer_without_affiliations_keeps_those_known(store):
    store.ingest("cs.DC", [paper("2506.1", "A compiler")], T0)
    store.enrich("2506.1", T0, comment=None, journal_ref=None, categories=(), affiliations=["MIT CSAIL"])
    store.enrich("2506.1", T0 + DAY, comment=None, journal_ref=None, categories=())
    assert store.affiliations(["2506.1"]) == {"2506.1": ("MIT CSAIL",)}
    store.enrich("2506.1", T0 + DAY, comment=None, journal_ref=None, categories=(), affiliations=["Inria"])
    assert store.affiliations(["2506.1"]) == {"2506.1": ("Inria",)}


def test_affiliations_of_thousands_of_papers_are_read_in_one_call(store):
    ids = [f"2506.{n:05d}" for n in range(1200)]
    store.ingest("cs.DC", [paper(arxiv_id, "A paper") for arxiv_id in ids], T0)
    for arxiv_id in ids[::2]:
        store.enrich(arxiv_id, T0, comment=None, journal_ref=None, categories=(), affiliations=[f"Lab {arxiv_id}"])
    assert store.affiliations(ids) == {arxiv_id: (f"Lab {arxiv_id}",) for arxiv_id in ids[::2]}


# -- retention ------------------------------------------------------------------------------------------------


def test_prune_drops_the_summaries_of_papers_gone_and_old_usage(store):
    store.ingest("cs.DC", [paper("2504.1", "Old")], T0 - 2 * MONTH)
    store.ingest("cs.DC", [paper("2506.1", "Recent")], T0 - DAY)
    store.save_summaries([summary("2504.1"), summary("2506.1"), summary("2506.1", 2)], T0 - 2 * MONTH)
    for back in (2 * MONTH, MONTH + DAY, MONTH - DAY, DAY, timedelta(0)):
        store.record_llm_usage((T0 - back).date(), asked=1)

    report = store.prune(T0, MONTH)

    assert report.summaries == 1 and report.papers == 1
    assert set(store.summaries([("2504.1", 1), ("2506.1", 1), ("2506.1", 2)])) == {("2506.1", 1), ("2506.1", 2)}
    kept = [back for back in (2 * MONTH, MONTH + DAY, MONTH - DAY) if store.llm_usage((T0 - back).date()).asked]
    assert kept == [MONTH - DAY]
    assert store.llm_usage(TODAY).asked == store.llm_usage(TODAY - DAY).asked == 1
    assert store.prune(T0, MONTH).summaries == 0, "pruning again finds nothing"


def test_a_short_retention_still_keeps_a_week_of_usage(store):
    for days in range(10):
        store.record_llm_usage(TODAY - days * DAY, asked=1)
    store.prune(T0, DAY)
    kept = [days for days in range(10) if store.llm_usage(TODAY - days * DAY).asked]
    assert kept == list(range(USAGE_DAYS_KEPT.days + 1))


# -- a database of the version before -------------------------------------------------------------------------


def test_a_database_from_version_4_gains_summaries_usage_and_affiliations_when_opened(store):
    store.ingest("cs.DC", [paper("2506.1", "A compiler"), paper("2506.2", "GPUs")], T0)
    store.enrich("2506.2", T0, comment="9 pages", journal_ref=None, categories=("cs.DC",))
    with store.transaction() as db:  # as version 4 left it: no summaries, no usage, no affiliations
        store._exec(db, "DROP TABLE summaries", ())
        store._exec(db, "DROP TABLE llm_usage", ())
        store._exec(db, "ALTER TABLE papers DROP COLUMN affiliations", ())
        store._exec(db, "UPDATE meta SET value = '4' WHERE key = 'schema_version'", ())
    store = reopen(store)
    try:
        assert store._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == str(SCHEMA_VERSION)
        assert store.affiliations(["2506.1", "2506.2"]) == {}
        assert store.not_enriched(["2506.1", "2506.2"]) == ["2506.1"], "what was enriched stays enriched"
        store.enrich("2506.1", T0, comment=None, journal_ref=None, categories=(), affiliations=["Inria"])
        assert store.affiliations(["2506.1", "2506.2"]) == {"2506.1": ("Inria",)}
        assert [p.comment for p in store.candidates("cs.DC", T0 - DAY, T0)] == [None, "9 pages"]
        assert store.save_summaries([summary("2506.1")], T0) == 1
        store.record_llm_usage(TODAY, asked=1, made=1)
        assert store.llm_usage(TODAY) == LlmUsage(TODAY, asked=1, made=1)
        assert store.ingest("cs.DC", [paper("2506.3", "New after the upgrade")], T0 + DAY) == 1
    finally:
        store.close()
