"""What the store keeps of readers' feedback on ranked papers: the later click on a paper wins, many subscribers'
feedback is read at once, the paper stays known after the feeds' papers are pruned, and a rename takes it along.

The store contract runs on both stores (PostgreSQL where it is installed).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.test_outbox import paper
from tests.test_store_likes import liked

T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
MONTH = timedelta(days=30)


def test_feedback_comes_back_by_subscriber_and_paper(store):
    store.save_feedback("lab", paper("2506.1", "A compiler"), "more", T0)
    store.save_feedback("lab", paper("2506.2", "A scheduler"), "fewer", T0 + MINUTE)
    store.save_feedback("other", paper("2506.1", "A compiler"), "fewer", T0)

    assert store.feedback_of(["lab", "other", "nobody"]) == {
        "lab": {"2506.1": ("more", T0), "2506.2": ("fewer", T0 + MINUTE)},
        "other": {"2506.1": ("fewer", T0)},
    }
    assert store.feedback_of([]) == {}


def test_the_later_click_on_a_paper_wins(store):
    store.save_feedback("lab", paper("2506.1", "A compiler"), "more", T0)
    store.save_feedback("lab", paper("2506.1", "A compiler"), "fewer", T0 + MINUTE)
    assert store.feedback_of(["lab"]) == {"lab": {"2506.1": ("fewer", T0 + MINUTE)}}
    store.save_feedback("lab", paper("2506.1", "A compiler"), "more", T0 + 2 * MINUTE)
    assert store.feedback_of(["lab"]) == {"lab": {"2506.1": ("more", T0 + 2 * MINUTE)}}


def test_many_subscribers_feedback_is_read_together(store):
    names = [f"reader-{i}" for i in range(1200)]
    for i, name in enumerate(names[::100]):
        store.save_feedback(name, paper(f"2506.{i}", "A compiler"), "more", T0)
    found = store.feedback_of(names)
    assert sorted(found) == sorted(names[::100])


def test_the_paper_given_feedback_stays_known_after_the_feeds_papers_are_pruned(store):
    store.ingest("cs.DC", [paper("2506.1", "A compiler"), paper("2506.2", "A scheduler")], T0)
    assert store.known_paper("2506.1") is not None, "a feed's paper is known"
    fed = store.known_paper("2506.1")
    store.save_feedback("lab", fed, "fewer", T0)
    store.ingest("cs.DC", [paper("2508.1", "Later")], T0 + 2 * MONTH)
    store.prune(T0 + 2 * MONTH, MONTH)

    assert store.known_paper("2506.2") is None, "pruned with its feed items"
    kept = store.known_paper("2506.1")
    assert kept is not None and kept.title == "A compiler", "kept among the reference papers"
    assert store.reference_papers(["2506.1"]) == {"2506.1": kept}


def test_a_reference_paper_is_known_and_a_paper_nobody_stored_is_not(store):
    store.save_reference_papers([liked("2401.01234", "Configuration testing")], T0)
    found = store.known_paper("2401.01234")
    assert found is not None and found.title == "Configuration testing"
    assert store.known_paper("2401.99999") is None


def test_a_rename_takes_the_feedback_along(store):
    store.register_subscribers(["old"], T0)
    store.save_feedback("old", paper("2506.1", "A compiler"), "more", T0)
    store.rename_subscriber("old", "new")
    assert store.feedback_of(["old", "new"]) == {"new": {"2506.1": ("more", T0)}}


def test_feedback_of_a_subscriber_gone_from_the_config_is_kept(store):
    store.register_subscribers(["lab"], T0)
    store.save_feedback("lab", paper("2506.1", "A compiler"), "more", T0)
    store.register_subscribers(["someone-else"], T0 + MINUTE)
    store.prune(T0 + 2 * MONTH, MONTH)
    assert store.feedback_of(["lab"]) == {"lab": {"2506.1": ("more", T0)}}
