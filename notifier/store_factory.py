"""Which store a process uses: SQLite in the data directory, or PostgreSQL when ``database_url`` is set.

:class:`StoreLike` is the interface both stores implement; the rest of the program is written against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Protocol

from notifier.models import Outgoing, Paper
from notifier.settings import Settings
from notifier.store import (
    DELIVERY_STATES,
    BackfillRow,
    DeliveryRow,
    FeedState,
    NewDelivery,
    Store,
    SubscriberState,
)


class StoreLike(Protocol):
    """What the daemon needs of a store (see :class:`notifier.store.Store` for what each method does)."""

    def close(self) -> None: ...

    def ingest(self, feed_key: str, papers: Iterable[Paper], seen_at: datetime) -> int: ...

    def enrich(
        self, arxiv_id: str, now: datetime, *, comment: str | None, journal_ref: str | None, categories: Sequence[str]
    ) -> None: ...

    def not_enriched(self, arxiv_ids: Iterable[str]) -> list[str]: ...

    def candidates(self, feed_key: str, after: datetime, until: datetime) -> list[Paper]: ...

    def paper_count(self) -> int: ...

    def feed_state(self, feed_key: str) -> FeedState | None: ...

    def feed_states(self) -> list[FeedState]: ...

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
    ) -> None: ...

    def request_backfill(
        self, feed_key: str, day: date, window: tuple[datetime, datetime], reason: str, now: datetime
    ) -> bool: ...

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

    def register_subscribers(self, names: Iterable[str], now: datetime) -> None: ...

    def subscriber_state(self, name: str) -> SubscriberState | None: ...

    def rename_subscriber(self, old: str, new: str) -> int: ...

    def unsubscribe(self, subscriber: str, address: str, now: datetime) -> None: ...

    def unsubscribed(self, subscriber: str) -> set[str]: ...

    def reserved_versions(self, subscriber: str, channel: str, recipient: str) -> dict[str, int]: ...

    def record_digest(
        self,
        *,
        digest_id: str,
        subscriber: str,
        kind: str,
        period_start: datetime,
        period_end: datetime,
        now: datetime,
        deliveries: Sequence[NewDelivery],
        cursor: datetime,
    ) -> None: ...

    def due_deliveries(self, now: datetime, subscribers: Iterable[str] | None = None) -> list[Outgoing]: ...

    def claim_due(
        self, now: datetime, *, owner: str, lease: timedelta, limit: int, subscribers: Iterable[str] | None = None
    ) -> list[Outgoing]: ...

    def release(self, delivery_ids: Iterable[str], *, owner: str, now: datetime) -> int: ...

    def recover_interrupted(self, now: datetime) -> int: ...

    def try_lead(self, name: str) -> bool: ...

    def release_lead(self) -> None: ...

    def next_retry_at(self) -> datetime | None: ...

    def mark_sending(self, delivery_id: str, now: datetime) -> None: ...

    def mark_part(self, delivery_id: str, part: int, now: datetime) -> None: ...

    def mark_sent(self, delivery_id: str, now: datetime) -> None: ...

    def mark_retry(self, delivery_id: str, now: datetime, next_attempt_at: datetime, error: str) -> None: ...

    def mark_failed(self, delivery_id: str, now: datetime, error: str) -> None: ...

    def attempts(self, delivery_id: str) -> tuple[int, datetime]: ...

    def cancel_deliveries_of(self, keep: Iterable[str], now: datetime) -> int: ...

    def retry_failed(self, now: datetime, subscriber: str | None = None) -> int: ...

    def deliveries(self, states: Sequence[str] = DELIVERY_STATES, limit: int = 200) -> list[DeliveryRow]: ...

    def delivery_counts(self) -> dict[str, int]: ...

    def ping(self) -> None: ...

    def secret(self, key: str) -> str: ...

    def last_new_items(self) -> dict[str, datetime]: ...


def open_store(settings: Settings) -> StoreLike:
    """PostgreSQL when ``settings.database_url`` is set (psycopg is imported only then), SQLite otherwise."""
    if settings.database_url:
        from notifier.store_pg import PostgresStore

        return PostgresStore(settings.database_url)
    return Store(settings.database)
