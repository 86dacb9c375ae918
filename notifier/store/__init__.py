"""The store: what the rest of the program is written against (:class:`Store`), and :func:`open_store`.

Everything above this package depends on :class:`Store`, a protocol of exactly the calls it makes, and on the row
types of :mod:`notifier.store.rows`; never on a dialect. Two implement it: :class:`~notifier.store.sqlite.SqliteStore`
(one file in the data directory, one daemon) and :class:`~notifier.store.postgres.PostgresStore` (several daemons on
one database), both :class:`~notifier.store.sql.SqlStore` over their dialect.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy.typing as npt

from notifier.models import DELIVERY_STATES, DeliveryState, FeedbackKind, Outgoing, Paper, Summary, SummaryKey
from notifier.store.embeddings import Vector
from notifier.store.feedback import Feedback
from notifier.store.rows import (
    BackfillRow,
    DeliveryRow,
    FeedState,
    LlmUsage,
    NewDigest,
    PlanFailure,
    PruneReport,
    SubscriberState,
)
from notifier.store.sqlite import SqliteStore

__all__ = ["Store", "open_store"]


class Store(Protocol):
    """The store, as the poller, planner, sender, daemon, commands and web pages use it.

    Every call may raise :class:`~notifier.errors.StoreError`. Calls that write are one transaction each.
    """

    # -- the process ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections (writing any outcome kept in memory first); idempotent."""

    def recover_interrupted(self, now: datetime) -> int:
        """At start: deal with deliveries left ``sending`` by a daemon that is gone; how many go back to pending."""

    def try_lead(self, name: str) -> bool:
        """Whether this process leads ``name`` (polls and plans); call it every tick."""

    def ping(self) -> None:
        """A trivial query: raises when the database cannot be reached or read."""

    def secret(self, key: str) -> str:
        """A random secret kept under ``key``: made on first use, the same ever after."""

    # -- papers, feeds and backfills --------------------------------------------------------------------------

    def ingest(self, feed_key: str, papers: Iterable[Paper], seen_at: datetime) -> int:
        """Remember ``papers`` as announced in ``feed_key``; how many feed items were new."""

    def enrich(
        self,
        arxiv_id: str,
        now: datetime,
        *,
        comment: str | None,
        journal_ref: str | None,
        categories: Sequence[str],
        affiliations: Sequence[str] = (),
    ) -> None:
        """Add what the API knows and the feed does not: comment, journal reference, all categories, affiliations."""

    def not_enriched(self, arxiv_ids: Iterable[str]) -> list[str]:
        """Those of ``arxiv_ids`` stored and not enriched yet, sorted."""

    def affiliations(self, arxiv_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """arxiv_id -> its authors' affiliations from the API (distinct, in author order), for those that have some."""

    def candidates(self, feed_key: str, after: datetime, until: datetime) -> list[Paper]:
        """The papers of ``feed_key`` (a category, or a set of them) first seen in (after, until]."""

    def paper_count(self) -> int: ...

    def feed_state(self, feed_key: str) -> FeedState | None: ...

    def feed_states(self) -> list[FeedState]:
        """Every feed's state, by key."""

    def record_poll(
        self,
        feed_key: str,
        *,
        at: datetime,
        status: str,
        error: str | None = None,
        etag: str | None = None,
        announced: date | None = None,
        items_hash: str | None = None,
        item_count: int | None = None,
    ) -> None:
        """Record one poll; an error keeps the last good state."""

    def last_new_items(self) -> dict[str, datetime]:
        """feed_key -> when a poll last brought new items (backfilled items not counted)."""

    def request_backfill(
        self, feed_key: str, day: date, window: tuple[datetime, datetime], reason: str, now: datetime
    ) -> bool:
        """Remember that ``day`` of ``feed_key`` must be recovered; False when it was requested before."""

    def backfills(
        self, feed_key: str | None = None, states: Sequence[str] = ("pending", "done")
    ) -> list[BackfillRow]: ...

    def record_backfill(
        self,
        feed_key: str,
        day: date,
        now: datetime,
        *,
        added: int = 0,
        error: str | None = None,
        give_up: bool = False,
    ) -> None: ...

    # -- subscribers ------------------------------------------------------------------------------------------

    def register_subscribers(self, names: Iterable[str], now: datetime) -> None:
        """The subscribers of the config in use: registered and marked active; every other one inactive."""

    def subscriber_state(self, name: str) -> SubscriberState | None: ...

    def subscriber_states(self) -> dict[str, SubscriberState]: ...

    def rename_subscriber(self, old: str, new: str) -> int:
        """Move a subscriber's history to a new name."""

    def unsubscribe(self, subscriber: str, address: str, now: datetime) -> None:
        """Send ``address`` no more of ``subscriber``'s digests; cancel those unsent."""

    def unsubscribed(self, subscriber: str) -> set[str]:
        """The address keys unsubscribed from ``subscriber``."""

    def unsubscribes(self) -> dict[str, set[str]]:
        """Subscriber -> the address keys unsubscribed from it, for every subscriber that has any."""

    def record_plan_failures(self, failures: Iterable[tuple[str, str, str]], now: datetime) -> None:
        """Remember that the digests of these (subscriber, fingerprint, reason) could not be planned."""

    def clear_plan_failure(self, subscriber: str) -> None: ...

    def plan_failures(self) -> dict[str, PlanFailure]:
        """Subscriber -> why its digest could not be planned, by name."""

    # -- summaries and the LLM's usage -------------------------------------------------------------------------

    def summaries(self, keys: Iterable[SummaryKey]) -> dict[SummaryKey, Summary]:
        """(arxiv_id, version) -> its stored summary, for those of ``keys`` that have one."""

    def save_summaries(self, summaries: Sequence[Summary], now: datetime) -> int:
        """Store summaries made at ``now``; a paper version that has one keeps it. How many were new."""

    def llm_usage(self, day: date) -> LlmUsage:
        """What the LLM was asked for on ``day`` (UTC), and what it cost; zeros when nothing."""

    def record_llm_usage(
        self,
        day: date,
        *,
        asked: int = 0,
        made: int = 0,
        failed: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Add these counts to those of ``day`` (UTC), atomically."""

    # -- the papers subscribers like ----------------------------------------------------------------------------

    def save_reference_papers(self, papers: Sequence[Paper], now: datetime) -> None:
        """Store liked papers as fetched at ``now``; a stored later version stays."""

    def reference_papers(self, ids: Iterable[str]) -> dict[str, Paper]:
        """arxiv_id -> the liked paper stored under it, for those of ``ids`` that have one."""

    def like_source(self, source: str) -> tuple[tuple[str, ...], datetime] | None:
        """The ids a ``like:`` source (``id:...``, ``au:...``, ``ti:...``) resolved to, and when; None if never."""

    def like_sources(self, sources: Iterable[str]) -> dict[str, tuple[tuple[str, ...], datetime]]:
        """:meth:`like_source` of each of ``sources`` that was resolved."""

    def save_like_source(self, source: str, ids: Sequence[str], now: datetime) -> None:
        """Remember that ``source`` resolved to ``ids`` at ``now``."""

    def save_like_sources(self, resolved: Mapping[str, Sequence[str]], now: datetime) -> None:
        """:meth:`save_like_source` for each source of ``resolved``, in one transaction."""

    def forget_likes(self, sources: Collection[str]) -> tuple[int, int]:
        """Drop the like sources not among ``sources`` and the liked papers nothing names; (sources, papers)."""

    def recent_papers(self, since: datetime, limit: int) -> list[Paper]:
        """At most ``limit`` papers the feeds brought since ``since``, newest first."""

    # -- papers' embeddings ------------------------------------------------------------------------------------

    def embeddings(self, model: str, keys: Iterable[SummaryKey]) -> dict[SummaryKey, Vector]:
        """(arxiv_id, version) -> its vector under ``model`` (float32), for those of ``keys`` that have one."""

    def recent_embeddings(self, model: str, since: datetime, limit: int) -> dict[SummaryKey, Vector]:
        """The vectors under ``model`` of the at most ``limit`` newest papers brought since ``since``, that have one."""

    def save_embeddings(self, model: str, vectors: Mapping[SummaryKey, npt.ArrayLike], now: datetime) -> int:
        """Store the vectors ``model`` gave these paper versions; a version that has one keeps it. How many were
        new."""

    # -- readers' feedback on ranked papers ---------------------------------------------------------------------

    def save_feedback(self, subscriber: str, paper: Paper, kind: FeedbackKind, now: datetime) -> None:
        """Remember that ``subscriber`` wants ``kind`` (more, fewer) papers like ``paper``, replacing what it said of
        that paper before, and keep ``paper`` among the reference papers."""

    def feedback_of(self, names: Iterable[str]) -> dict[str, Feedback]:
        """name -> arxiv_id -> (kind, when), for those of ``names`` that gave feedback."""

    def known_paper(self, arxiv_id: str) -> Paper | None:
        """The paper stored under ``arxiv_id`` (a feed's, else a reference paper), or None."""

    # -- the outbox -------------------------------------------------------------------------------------------

    def reserved_versions(
        self, subscriber: str, channel: str, recipient: str, among: Collection[str] | None = None
    ) -> dict[str, int]:
        """arxiv_id -> highest version already sent or on its way to this recipient (of the papers ``among`` only,
        when given)."""

    def record_digests(self, digests: Sequence[NewDigest]) -> None:
        """Write digests, their deliveries (pending) and papers, and their cursors: all of them, or none."""

    def claim_due(self, now: datetime, *, owner: str, lease: timedelta, limit: int) -> list[Outgoing]:
        """Claim up to ``limit`` due deliveries for ``owner`` under a lease, oldest first."""

    def release(self, delivery_ids: Iterable[str], *, owner: str, now: datetime) -> int:
        """Hand claimed deliveries that were not attempted back to pending."""

    def mark_part(self, delivery_id: str, part: int, now: datetime) -> None: ...

    def mark_sent(self, delivery_id: str, now: datetime) -> None: ...

    def mark_all_sent(self, sent: Sequence[tuple[str, datetime]]) -> None:
        """Record that each ``(delivery id, when)`` was sent then, in one transaction."""

    def mark_retry(self, delivery_id: str, now: datetime, next_attempt_at: datetime, error: str) -> None: ...

    def mark_failed(self, delivery_id: str, now: datetime, error: str) -> None: ...

    def attempts(self, delivery_id: str) -> tuple[int, datetime]:
        """A delivery's attempts so far, and when it was created."""

    def cancel_removed(self, now: datetime) -> int:
        """Cancel unsent deliveries of subscribers no longer active; how many."""

    def retry_failed(self, now: datetime, subscriber: str | None = None) -> int:
        """Queue failed deliveries (all, or ``subscriber``'s) again; how many."""

    def deliveries(self, states: Sequence[DeliveryState] = DELIVERY_STATES, limit: int = 200) -> list[DeliveryRow]:
        """The newest deliveries in ``states``."""

    def delivery_counts(self) -> dict[DeliveryState, int]: ...

    def prune(self, now: datetime, retention: timedelta) -> PruneReport:
        """Drop what nothing needs after ``retention``; what deduplication needs stays for good."""


def open_store(database: str | Path) -> Store:
    """The PostgreSQL store for a ``postgresql://`` URL (psycopg is imported only then), the SQLite store for a path.

    Callers pass ``settings.database_url or settings.database``.
    """
    if isinstance(database, Path):
        return SqliteStore(database)
    from notifier.store.postgres import PostgresStore

    return PostgresStore(database)
