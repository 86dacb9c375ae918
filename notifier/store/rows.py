"""What goes into the store and what comes out of it, beside the shared models: one frozen dataclass per kind of row.

The planner hands the store :class:`NewDigest` and :class:`NewDelivery`; the poller, the backfill, the status page
and the commands read :class:`FeedState`, :class:`BackfillRow`, :class:`SubscriberState`, :class:`PlanFailure` and
:class:`DeliveryRow`; the summariser and ``notifier status`` read :class:`LlmUsage`. Papers, the deliveries a
sender claims and the summaries of papers are :class:`~notifier.models.Paper`, :class:`~notifier.models.Outgoing`
and :class:`~notifier.models.Summary`, shared with the rest of the flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from notifier.addresses import address_key
from notifier.models import DeliveryState


def recipient_key(channel: str, recipient: str) -> str:
    """How a recipient is compared and reserved: an email address by its key, anything else as it is."""
    return address_key(recipient) if channel == "email" else recipient


@dataclass(frozen=True, slots=True)
class FeedState:
    """One feed's polling state: what the last poll saw, and the last good values an error does not overwrite."""

    feed_key: str
    etag: str | None
    last_polled: datetime | None
    last_ok: datetime | None
    last_status: str | None  # ok | not_modified | repeat | empty | error
    last_error: str | None
    last_announced: date | None
    last_items_hash: str | None
    item_count: int


@dataclass(frozen=True, slots=True)
class BackfillRow:
    """One announcement day of one feed to recover from the API: submissions in (window_start, window_end]."""

    feed_key: str
    day: date
    window_start: datetime
    window_end: datetime
    reason: str  # "missed" (downtime) | "capped" (the feed hit its item cap)
    state: str  # pending | done | expired (older than the backfill horizon before it succeeded)
    attempts: int
    last_error: str | None
    attempted_at: datetime | None
    added: int


@dataclass(frozen=True, slots=True)
class SubscriberState:
    """A registered subscriber: since when, and how far its digests have read (``cursor``)."""

    name: str
    created_at: datetime
    cursor: datetime | None
    last_digest_at: datetime | None


@dataclass(frozen=True, slots=True)
class PlanFailure:
    """A subscriber whose digest could not be planned: why, since when, and for which definition of it."""

    subscriber: str
    fingerprint: str  # of the subscriber's definition when it failed (see notifier.outbox.planner.fingerprint)
    reason: str
    first_failed: datetime
    last_failed: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A rendered message for one recipient, with the papers it carries: (arxiv_id, version)."""

    delivery_id: str
    channel: str
    recipient: str
    message_id: str
    payload: bytes
    papers: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class NewDigest:
    """A planned digest: written with its deliveries (pending) and the subscriber's new cursor, atomically."""

    digest_id: str
    subscriber: str
    kind: str
    period_start: datetime
    period_end: datetime
    now: datetime
    deliveries: tuple[NewDelivery, ...]
    cursor: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery as ``notifier status`` and the status page list it."""

    id: str
    subscriber: str
    channel: str
    recipient: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    paper_count: int


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one prune of the store dropped."""

    payloads: int = 0  # rendered messages of deliveries sent, failed or cancelled before the cut-off
    feed_items: int = 0
    papers: int = 0
    summaries: int = 0  # of papers no longer stored
    embeddings: int = 0  # of papers neither stored nor liked


@dataclass(frozen=True, slots=True)
class LlmUsage:
    """What the LLM was asked for on one UTC day, and what it cost: the daily limit counts ``asked``."""

    day: date
    asked: int = 0  # papers the LLM was asked to summarise
    made: int = 0  # summaries it made
    failed: int = 0  # papers given up after the retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
