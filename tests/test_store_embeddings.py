"""What the store keeps of papers' embeddings: a vector per paper version and model, the first one stored, read back
as it was written (float32) for many papers at once, the recent papers' in one statement, and pruned with the
papers that are neither a feed's nor liked any more.

The store contract runs on both stores (PostgreSQL where it is installed).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from tests.test_outbox import paper
from tests.test_store_likes import liked

T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MONTH = timedelta(days=30)
MODEL = "text-embedding-3-small"


def vector(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_a_vector_comes_back_as_float32_as_it_was_stored(store):
    added = store.save_embeddings(MODEL, {("2506.1", 1): [0.25, -1.5, 3e-8], ("2506.2", 2): vector(1, 0, 0)}, T0)

    found = store.embeddings(MODEL, [("2506.1", 1), ("2506.2", 2), ("2506.3", 1)])

    assert added == 2
    assert set(found) == {("2506.1", 1), ("2506.2", 2)}
    assert found[("2506.1", 1)].dtype == np.float32
    assert found[("2506.1", 1)].tolist() == vector(0.25, -1.5, 3e-8).tolist()
    assert store.embeddings(MODEL, []) == {}


def test_a_paper_version_is_embedded_once_per_model_and_the_first_vector_stays(store):
    store.save_embeddings(MODEL, {("2506.1", 1): vector(1, 0)}, T0)

    again = store.save_embeddings(MODEL, {("2506.1", 1): vector(0, 1), ("2506.1", 2): vector(0, 1)}, T0 + DAY)
    other = store.save_embeddings("nomic-embed-text", {("2506.1", 1): vector(0.5, 0.5, 0.5)}, T0)

    assert (again, other) == (1, 1)
    assert store.embeddings(MODEL, [("2506.1", 1)])[("2506.1", 1)].tolist() == [1.0, 0.0]
    assert store.embeddings(MODEL, [("2506.1", 2)])[("2506.1", 2)].tolist() == [0.0, 1.0]
    assert store.embeddings("nomic-embed-text", [("2506.1", 1)])[("2506.1", 1)].tolist() == [0.5, 0.5, 0.5]
    assert store.embeddings("another", [("2506.1", 1)]) == {}


def test_many_vectors_are_read_at_once(store):
    keys = [(f"2506.{number:05d}", 1) for number in range(1200)]
    store.save_embeddings(MODEL, {key: vector(number, 1) for number, key in enumerate(keys)}, T0)

    found = store.embeddings(MODEL, keys)

    assert len(found) == 1200 and found[keys[1199]].tolist() == [1199.0, 1.0]


def test_the_recent_papers_vectors_are_those_of_their_stored_versions(store):
    store.ingest("cs.DC", [paper("2505.1", "Last month")], T0 - 2 * MONTH)
    store.ingest("cs.DC", [paper("2506.1", "Monday"), paper("2506.2", "Monday too")], T0 - DAY)
    store.ingest("cs.LG", [paper("2506.1", "Monday, replaced", version=2), paper("2506.3", "Tuesday")], T0)
    store.save_embeddings(
        MODEL,
        {("2505.1", 1): vector(1), ("2506.1", 1): vector(2), ("2506.1", 2): vector(3), ("2506.3", 1): vector(4)},
        T0,
    )
    store.save_embeddings("another", {("2506.2", 1): vector(5)}, T0)

    recent = store.recent_embeddings(MODEL, T0 - 7 * DAY, 10)

    assert {key: found.tolist() for key, found in recent.items()} == {("2506.1", 2): [3.0], ("2506.3", 1): [4.0]}
    assert set(store.recent_embeddings(MODEL, T0 - 7 * DAY, 1)) == {("2506.3", 1)}, "the newest first"


def test_prune_drops_the_vectors_of_papers_neither_stored_nor_liked(store):
    store.ingest("cs.DC", [paper("2504.1", "Old")], T0 - 2 * MONTH)
    store.ingest("cs.DC", [paper("2506.1", "Recent")], T0 - DAY)
    store.save_reference_papers([liked("1901.00001", "Liked long ago")], T0)
    keys = [("2504.1", 1), ("2506.1", 1), ("1901.00001", 1), ("2401.1", 1)]  # the last one: nowhere
    store.save_embeddings(MODEL, {key: vector(1, 2) for key in keys}, T0 - 2 * MONTH)

    report = store.prune(T0, MONTH)

    assert report.papers == 1 and report.embeddings == 2
    assert set(store.embeddings(MODEL, keys)) == {("2506.1", 1), ("1901.00001", 1)}
    assert store.prune(T0, MONTH).embeddings == 0, "pruning again finds nothing"
