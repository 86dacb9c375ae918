"""What both stores share: the store interface in SQL that both databases run, a dialect short of a store.

Only the modules of this package speak SQL. :class:`SqlStore` is the queries of each concern, written once over a
:class:`~notifier.store.dialect.Dialect`: :class:`~notifier.store.papers.PaperQueries` (papers, feeds, backfills),
:class:`~notifier.store.subscribers.SubscriberQueries` (subscribers, unsubscriptions, failed plans),
:class:`~notifier.store.deliveries.DeliveryQueries` (the outbox) and :class:`~notifier.store.summaries.SummaryQueries`
(LLM summaries and usage), :class:`~notifier.store.likes.LikeQueries` (the papers subscribers like) and
:class:`~notifier.store.feedback.FeedbackQueries` (readers' feedback on ranked papers, over the former) and
:class:`~notifier.store.embeddings.EmbeddingQueries` (papers' embeddings), with what
spans them here: retention and the service calls. The tables, and how an older
database is brought up to date, are :mod:`notifier.store.schema`'s. :class:`~notifier.store.sqlite.SqliteStore` and
:class:`~notifier.store.postgres.PostgresStore` complete it with their dialect. The rest of the program sees
neither, only :class:`notifier.store.Store`.

What deduplication needs is kept for good: every delivery's id, state and Message-ID, and the papers each recipient
was sent (``delivery_papers``). What only sending needs is pruned after a retention period
(:meth:`SqlStore.prune`): the rendered payloads of deliveries in a final state, the feed items and papers no digest
will read again with their summaries, the embeddings of papers neither a feed's nor liked, and the LLM's usage of
past days. The space they took is reused by what is written next, so the database stops growing with each day's
digests.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from notifier.store.deliveries import DeliveryQueries
from notifier.store.dialect import ConnT
from notifier.store.embeddings import EmbeddingQueries
from notifier.store.feedback import FeedbackQueries
from notifier.store.papers import PaperQueries
from notifier.store.rows import PruneReport
from notifier.store.subscribers import SubscriberQueries
from notifier.store.summaries import SummaryQueries

# A payload pruned after the retention period (see SqlStore.prune): a rendered message is never empty.
PRUNED = b""
# How many rows one statement of prune changes: each batch is a transaction of its own, short for other writers.
_PRUNE_BATCH = 5000
# The days of LLM usage kept whatever the retention: what ``notifier status`` shows.
USAGE_DAYS_KEPT = timedelta(days=7)


class SqlStore(
    PaperQueries[ConnT],
    SubscriberQueries[ConnT],
    DeliveryQueries[ConnT],
    SummaryQueries[ConnT],
    FeedbackQueries[ConnT],
    EmbeddingQueries[ConnT],
):
    """The store in SQL both databases run, over a dialect's connection type ``ConnT``."""

    # -- retention --------------------------------------------------------------------------------------------

    def prune(self, now: datetime, retention: timedelta) -> PruneReport:
        """Drop what nothing needs after ``retention``; what deduplication needs stays for good.

        - The payloads of deliveries sent, failed or cancelled before ``now - retention`` become empty
          (:data:`PRUNED`); the rows stay, with their ids, states and Message-IDs, and so do the papers each
          recipient was sent, so nothing is sent twice. A failed delivery pruned so can no longer be retried.
        - Feed items first seen before the cut-off, and before every active subscriber's cursor (a subscriber
          with none yet reads from ``retention`` before it was registered), except each feed's newest item, which
          says when the feed last brought anything.
        - Papers no feed item names any more, and their summaries.
        - The embeddings of papers neither stored as a feed's (``papers``) nor liked (``reference_papers``).
        - The LLM's usage of days before the cut-off, and before the last :data:`USAGE_DAYS_KEPT`.

        Each batch of :data:`_PRUNE_BATCH` rows is a transaction of its own, so the daemon's other writes are never
        held up for long. SQLite reuses the pages freed for the next writes (the file keeps its size, but stops
        growing); PostgreSQL's autovacuum does the same for its tables.
        """
        cutoff = now - retention
        payloads = self._prune_batches(
            """UPDATE delivery_payloads SET payload = :pruned WHERE delivery_id IN (SELECT p.delivery_id
                 FROM delivery_payloads p JOIN deliveries d ON d.id = p.delivery_id
                 WHERE d.state IN ('sent', 'failed', 'cancelled') AND d.updated_at < :cutoff AND length(p.payload) > 0
                 LIMIT :batch)""",
            {"pruned": PRUNED, "cutoff": cutoff},
        )
        (oldest,) = self._query(
            """SELECT min(cursor) AS cursor, min(CASE WHEN cursor IS NULL THEN created_at END) AS created
               FROM subscribers WHERE active"""
        )
        items_cutoff = cutoff
        if (cursor := self._time(oldest["cursor"])) is not None:
            items_cutoff = min(items_cutoff, cursor)
        if (created := self._time(oldest["created"])) is not None:
            items_cutoff = min(items_cutoff, created - retention)
        feed_items = self._prune_batches(
            """DELETE FROM feed_items WHERE (feed_key, arxiv_id, version) IN (SELECT feed_key, arxiv_id, version
                 FROM feed_items f WHERE seen_at < :cutoff
                   AND seen_at < (SELECT max(seen_at) FROM feed_items g WHERE g.feed_key = f.feed_key)
                 LIMIT :batch)""",
            {"cutoff": items_cutoff},
        )
        papers = self._prune_batches(
            """DELETE FROM papers WHERE arxiv_id IN (SELECT arxiv_id FROM papers p WHERE updated < :cutoff
                 AND NOT EXISTS (SELECT 1 FROM feed_items f WHERE f.arxiv_id = p.arxiv_id) LIMIT :batch)""",
            {"cutoff": items_cutoff},
        )
        summaries = self._prune_batches(
            """DELETE FROM summaries WHERE (arxiv_id, version) IN (SELECT arxiv_id, version FROM summaries s
                 WHERE NOT EXISTS (SELECT 1 FROM papers p WHERE p.arxiv_id = s.arxiv_id) LIMIT :batch)""",
            {},
        )
        embeddings = self._prune_batches(
            """DELETE FROM embeddings WHERE (arxiv_id, version, model) IN (SELECT arxiv_id, version, model
                 FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM papers p WHERE p.arxiv_id = e.arxiv_id)
                   AND NOT EXISTS (SELECT 1 FROM reference_papers r WHERE r.arxiv_id = e.arxiv_id) LIMIT :batch)""",
            {},
        )
        self._prune_batches(
            "DELETE FROM llm_usage WHERE day IN (SELECT day FROM llm_usage WHERE day < :day LIMIT :batch)",
            {"day": min(cutoff, now - USAGE_DAYS_KEPT).astimezone(UTC).date()},
        )
        return PruneReport(payloads, feed_items, papers, summaries, embeddings)

    def _prune_batches(self, sql: str, params: Mapping[str, object]) -> int:
        """Run ``sql`` (which changes at most ``:batch`` rows) in transactions of its own until it changes none."""
        total = 0
        while True:
            with self.transaction() as db:
                changed = self._exec(db, sql, {**params, "batch": _PRUNE_BATCH})
            total += changed
            if changed < _PRUNE_BATCH:
                return total

    # -- service ----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        """A trivial query: raises :class:`StoreError` when the database cannot be reached or read."""
        self._query("SELECT count(*) FROM meta")

    def secret(self, key: str) -> str:
        """A random secret kept in ``meta`` under ``key``: made on first use, the same ever after."""
        with self.transaction() as db:
            self._exec(db, self._insert_ignore("meta VALUES (?, ?)"), (key, secrets.token_urlsafe(32)))
            row = self._fetch(db, "SELECT value FROM meta WHERE key = ?", (key,))[0]
        return str(row["value"])
