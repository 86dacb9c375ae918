"""Backfill: recover through the arXiv API the papers an RSS feed could not give us.

Two cases leave holes. A feed at arXiv's 2,000-item cap lacks the rest of its day; and after downtime (ours or
arXiv's) the feed has moved on past announcement days we never saw, so their papers would never reach the feed
again. After each poll, :func:`request_backfills` records one window per such day in the store, and
:func:`run_backfills` lists the feed's category over that day's submission window
(:func:`notifier.arxiv.calendar.submission_window`) through the politeness gate, and stores the papers in the same feed,
marked ``backfilled``, so the next digests carry them. Feeds are polled per category, so a capped or missed day is
recovered once per category, whatever sets subscribers read it in.

What a backfill can and cannot recover, and how it stays harmless:

- A listing is by *first* submission date, so it recovers the new submissions and cross-lists of a day, stored as
  version 1 (what that day announced); replacements announced during an outage are not recovered.
- The window is computed from the nominal 14:00 US Eastern cut-off; papers arXiv held back and announced later
  fall outside it.
- Papers already stored (same feed, id and version) are not stored again, so a window overlapping the feed
  duplicates nothing.
- Failure is fail-open: logged, the window stays pending and is tried again at a later poll; nothing stored is
  touched. A window is fetched once: done windows are remembered. Days older than ``backfill_days`` are not
  recovered (0 turns backfill off), and a first poll of a feed recovers nothing, as no digest was owed yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Literal

from notifier.arxiv import calendar
from notifier.arxiv.api import fetch_listing
from notifier.arxiv.gate import PoliteGate
from notifier.arxiv.poller import PollOutcome
from notifier.config.settings import Settings
from notifier.errors import FeedError
from notifier.models import Paper
from notifier.store import Store
from notifier.store.rows import BackfillRow

log = logging.getLogger(__name__)

# The listing's query is precise to the minute and includes both ends; the window's start is exclusive.
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class BackfillOutcome:
    feed_key: str
    day: date
    status: Literal["done", "error", "expired"]
    added: int = 0
    error: str | None = None


def missed_days(previous: date | None, announced: date | None, *, earliest: date) -> list[date]:
    """Announcement days after ``previous`` and before ``announced`` (the feed has moved past them), from
    ``earliest`` on. Nothing when either end is unknown."""
    if previous is None or announced is None:
        return []
    first = max(previous + timedelta(days=1), earliest)
    return calendar.announcement_days_between(first, announced - timedelta(days=1))


def earliest_day(settings: Settings, now: datetime) -> date:
    return now.astimezone(calendar.EASTERN).date() - timedelta(days=settings.backfill_days)


def request_backfills(store: Store, settings: Settings, outcomes: Iterable[PollOutcome], now: datetime) -> int:
    """Record the windows these poll outcomes show are missing; returns how many were new."""
    if settings.backfill_days <= 0:
        return 0
    earliest = earliest_day(settings, now)
    requested = 0
    for outcome in outcomes:
        wanted = [(day, "missed") for day in missed_days(outcome.previous, outcome.announced, earliest=earliest)]
        if outcome.capped and outcome.announced is not None and outcome.announced >= earliest:
            wanted.append((outcome.announced, "capped"))
        for day, reason in wanted:
            window = calendar.submission_window(day)
            if store.request_backfill(outcome.feed_key, day, window, reason, now):
                requested += 1
                log.info("feed %s: announcement of %s %s; backfill requested", outcome.feed_key, day, reason)
    return requested


async def run_backfills(
    store: Store, gate: PoliteGate, settings: Settings, feed_keys: Iterable[str], clock: Callable[[], datetime]
) -> list[BackfillOutcome]:
    """Fetch and store every pending window of ``feed_keys``; failures stay pending (fail-open)."""
    outcomes: list[BackfillOutcome] = []
    earliest = earliest_day(settings, clock())
    for key in feed_keys:
        for row in store.backfills(key, states=("pending",)):
            if row.day < earliest:
                store.record_backfill(key, row.day, clock(), error="older than backfill_days", give_up=True)
                log.warning(
                    "feed %s: backfill of %s given up, older than %d days", key, row.day, settings.backfill_days
                )
                outcomes.append(BackfillOutcome(key, row.day, "expired"))
                continue
            outcomes.append(await _run_one(store, gate, settings, row, clock))
    return outcomes


async def backfill(
    store: Store,
    gate: PoliteGate,
    settings: Settings,
    outcomes: Sequence[PollOutcome],
    clock: Callable[[], datetime],
) -> list[BackfillOutcome]:
    """After a poll: record the windows its outcomes show are missing, then fetch every pending one."""
    request_backfills(store, settings, outcomes, clock())
    return await run_backfills(store, gate, settings, [o.feed_key for o in outcomes], clock)


def as_announced(papers: Iterable[Paper], categories: Sequence[str], day: date) -> list[Paper]:
    """Listed papers as the feed of ``categories`` would have announced them on ``day``: version 1, "new" when the
    primary category is one of the feed's (or inside an archive it names), else "cross"; one per id."""
    found: dict[str, Paper] = {}
    for paper in papers:
        primary = paper.primary_category or ""
        own = any(primary == c or primary.startswith(c + ".") for c in categories)
        found.setdefault(
            paper.arxiv_id,
            replace(paper, version=1, announce_type="new" if own else "cross", announced=day, backfilled=True),
        )
    return list(found.values())


async def _run_one(
    store: Store, gate: PoliteGate, settings: Settings, row: BackfillRow, clock: Callable[[], datetime]
) -> BackfillOutcome:
    categories = row.feed_key.split("+")
    start = row.window_start + _MINUTE
    listed: list[Paper] = []
    try:
        for category in categories:
            listed.extend(await fetch_listing(gate, settings.arxiv_api_url, category, start, row.window_end))
    except FeedError as exc:
        store.record_backfill(row.feed_key, row.day, clock(), error=str(exc))
        log.warning(
            "backfill of %s for %s failed; keeping what is stored, will try again: %s", row.feed_key, row.day, exc
        )
        return BackfillOutcome(row.feed_key, row.day, "error", error=str(exc))
    papers = as_announced(listed, categories, row.day)
    now = clock()
    added = store.ingest(row.feed_key, papers, now) if papers else 0
    store.record_backfill(row.feed_key, row.day, now, added=added)
    log.info(
        "backfilled %s for %s (%s): %d papers listed, %d new",
        row.feed_key,
        row.day,
        row.reason,
        len(papers),
        added,
    )
    return BackfillOutcome(row.feed_key, row.day, "done", added=added)
