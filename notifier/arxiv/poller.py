"""Polling arXiv: one request per category, announcement-aware, recorded in the store.

Each category subscribers follow is its own feed (``rss/cs.LG``), polled once however many subscribers combine it
with others, so the requests of a poll are bounded by arXiv's taxonomy, not by subscribers. A subscriber's
category set is composed locally from its categories' stored papers (for a whole set:
:meth:`notifier.store.Store.candidates`), and its health is the worst of its categories'
(:meth:`Poller.health`).

A poll fetches the feed (conditional GET), recognises a repeated announcement by its items (not by
``lastBuildDate``), stores new items, and records the outcome. A failed poll is a log line and a feed state for
that category only; it never touches what is already stored, and the next poll recovers. Subscribers of other
categories plan as usual. Feed health compares the last announcement we saw with the one arXiv's calendar says
should be out: ``ok``, ``late`` (up to six hours) or ``stale``.

What counts as an announcement: a feed with items we have not seen as a whole before, dated after the last one we
saw; or an empty feed dated a day without announcement (weekend, holiday). An empty feed dated an announcement
day, a repeat and a 304 are not one, so the feed stays late and a later poll (or a backfill) brings the papers.

Cadence: the first poll comes :data:`GRACE_AFTER_ANNOUNCEMENT` after the feed for an announcement day is due
(:func:`notifier.arxiv.calendar.announcement_time`), then every ``poll_interval`` while it is overdue, hourly once it is
stale, and none at all from a successful poll until the next announcement is due.

A poll's time is bounded: the daemon runs it inside a time budget of the politeness gate (``NOTIFIER_POLL_TIMEOUT``).
A feed the budget ran out on is an error like any other. Feeds the poll never reached are recorded as errors too,
dated when the poll began, so that the next poll, which takes the feeds polled longest ago first, starts with them.
When no connection to arXiv can be made at all for a feed (its name does not resolve, or it refuses), after the
gate's retries, the poll asks no other feed: each would fail the same way after retries of its own. They are
recorded like the feeds a budget never reached.

Upgrading from a store whose feeds were category sets (items and feed state under ``cs.AI+cs.LG``) needs no
migration. The first poll of each category finds no feed state under the category's key, so it asks without an
ETag and stores the day's items again, under the category, seen now; as a first poll of that key, it requests no
backfill. Those papers fall again in the window of subscribers whose last digest already carried them, but the
planner skips every paper version a recipient has reserved (sent or on its way:
:meth:`notifier.store.Store.reserved_versions`), so nobody gets a paper twice; what the rules did not match
then, they do not match now. The rows under set keys stay readable as part of their set
(:meth:`notifier.store.Store.candidates`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import aiohttp

from notifier.arxiv import calendar
from notifier.arxiv.gate import PoliteGate
from notifier.arxiv.rss import fetch_feed
from notifier.config.settings import Settings
from notifier.errors import FeedError, TimeBudgetError
from notifier.store import Store
from notifier.store.rows import FeedState

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(hours=6)
GRACE_AFTER_ANNOUNCEMENT = timedelta(minutes=10)
STALE_INTERVAL = timedelta(hours=1)
BACKFILL_RETRY = timedelta(hours=1)


PollStatus = Literal["ok", "repeat", "not_modified", "empty", "error"]
HealthState = Literal["ok", "late", "stale", "never polled"]


@dataclass(frozen=True, slots=True)
class PollOutcome:
    feed_key: str
    status: PollStatus
    new_items: int = 0
    error: str | None = None
    announced: date | None = None  # the announcement day this poll brought, when it brought a new one
    previous: date | None = None  # the last announcement day seen before this poll
    capped: bool = False  # the feed hit arXiv's item cap, so it lacks papers of ``announced``
    unreachable: bool = False  # no connection to arXiv could be made (its name did not resolve, or it refused)


@dataclass(frozen=True, slots=True)
class FeedHealth:
    feed_key: str
    state: HealthState
    last_announced: date | None
    expected: date | None
    next_expected: datetime
    last_status: str | None
    last_error: str | None


def items_hash(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:32]


class Poller:
    def __init__(self, store: Store, gate: PoliteGate, settings: Settings, clock: Callable[[], datetime]):
        self.store = store
        self.gate = gate
        self.settings = settings
        self.clock = clock

    async def poll(self, feed_keys: Iterable[str]) -> list[PollOutcome]:
        """Poll each feed, the one polled longest ago first; the outcomes come in the order of ``feed_keys``."""
        keys = list(feed_keys)
        began = self.clock()
        states = {key: self.store.feed_state(key) for key in keys}
        order = sorted(keys, key=lambda key: _last_polled(states[key]))
        outcomes: dict[str, PollOutcome] = {}
        not_reached: list[str] = []
        unreachable: PollOutcome | None = None
        for key in order:
            if unreachable is not None:  # the next feeds would fail the same way, each after its retries
                error = f"not asked: arXiv could not be reached for {unreachable.feed_key} in this poll"
                self.store.record_poll(key, at=began, status="error", error=error)
                outcomes[key] = PollOutcome(key, "error", error=error, previous=_announced(states[key]))
                continue
            try:
                outcomes[key] = await self.poll_one(key)
            except TimeBudgetError as exc:  # never asked: recorded as of the poll's start, so it comes first next time
                self.store.record_poll(key, at=began, status="error", error=str(exc))
                outcomes[key] = PollOutcome(key, "error", error=str(exc), previous=_announced(states[key]))
                not_reached.append(key)
                continue
            if outcomes[key].unreachable:
                unreachable = outcomes[key]
        skipped = len(order) - 1 - order.index(unreachable.feed_key) if unreachable is not None else 0
        if unreachable is not None and skipped:
            log.warning(
                "arXiv could not be reached for %s (%s); the %d other feeds were not asked in this poll, and the "
                "next poll starts with them",
                unreachable.feed_key,
                unreachable.error,
                skipped,
            )
        if not_reached:
            log.warning(
                "poll time budget spent: %d of %d feeds not reached (%s); the next poll starts with them",
                len(not_reached),
                len(keys),
                ", ".join(not_reached),
            )
        return [outcomes[key] for key in keys]

    async def poll_one(self, feed_key: str) -> PollOutcome:
        """Poll one feed and record the outcome; raises :class:`TimeBudgetError` only when it was never asked."""
        state = self.store.feed_state(feed_key)
        previous = state.last_announced if state else None
        categories = feed_key.split("+")
        try:
            result = await fetch_feed(self.gate, self.settings.arxiv_rss_url, categories, state.etag if state else None)
        except FeedError as exc:
            if isinstance(exc, TimeBudgetError) and not exc.reached:
                raise
            self.store.record_poll(feed_key, at=self.clock(), status="error", error=str(exc))
            log.warning("poll of %s failed; keeping what is stored, will try again: %s", feed_key, exc)
            return PollOutcome(feed_key, "error", error=str(exc), previous=previous, unreachable=_no_connection(exc))
        now = self.clock()
        if result.status == "not_modified":
            self.store.record_poll(feed_key, at=now, status="not_modified")
            log.info("feed %s not modified", feed_key)
            return PollOutcome(feed_key, "not_modified", previous=previous)
        digest = items_hash(paper.versioned_id for paper in result.papers)
        day = result.pub_date
        status: PollStatus
        if not result.papers:
            status = "empty"
            # An empty feed is an announcement only on a day arXiv does not announce; dated an announcement day
            # (or undated) it means arXiv has not rolled over properly, and the feed stays late.
            announced = day if day is not None and not calendar.is_announcement_day(day) else None
        elif state is not None and state.last_items_hash == digest:
            status, announced = "repeat", None
        else:
            status = "ok"
            announced = day if day is not None else calendar.latest_announcement(now)
        if announced is not None and previous is not None and announced <= previous:
            announced = None  # an older feed (a cache, a regenerated day) never moves the announcement back
        added = self.store.ingest(feed_key, result.papers, now) if result.papers else 0
        self.store.record_poll(
            feed_key,
            at=now,
            status=status,
            etag=result.etag,
            announced=announced,
            items_hash=digest if result.papers else None,
            item_count=result.item_count,
        )
        if result.capped:
            log.warning(
                "feed %s returned %d items, arXiv's cap for one feed; the rest comes from the API",
                feed_key,
                result.item_count,
            )
        log.info(
            "feed %s: %s, dated %s, %d items, %d new",
            feed_key,
            status,
            day.isoformat() if day else "-",
            result.item_count,
            added,
        )
        return PollOutcome(
            feed_key, status, new_items=added, announced=announced, previous=previous, capped=result.capped
        )

    def health(self, feed_key: str, now: datetime) -> FeedHealth:
        """The health of a category's feed; of a category set (``cs.AI+cs.LG``), that of its worst category (never
        polled, then stale, then late, then ok), which names that category."""
        return self._worst(feed_key, now, {})

    def _worst(self, feed_key: str, now: datetime, known: dict[str, FeedHealth]) -> FeedHealth:
        """The health of ``feed_key``'s worst category; ``known`` keeps the categories' healths across calls."""
        for category in feed_key.split("+"):
            if category not in known:
                known[category] = self._health(category, now)
        return max((known[category] for category in feed_key.split("+")), key=lambda health: _WORSE[health.state])

    def _health(self, category: str, now: datetime) -> FeedHealth:
        state = self.store.feed_state(category)
        expected = calendar.latest_announcement(now)
        next_expected = calendar.next_announcement(now)
        if state is None or state.last_polled is None:
            return FeedHealth(category, "never polled", None, expected, next_expected, None, None)
        seen = state.last_announced
        condition: HealthState
        if expected is None or (seen is not None and seen >= expected):
            condition = "ok"
        else:
            due_since = calendar.announcement_time(expected)
            condition = "late" if now - due_since < STALE_AFTER else "stale"
        return FeedHealth(category, condition, seen, expected, next_expected, state.last_status, state.last_error)

    def next_poll_at(self, feed_keys: Iterable[str], now: datetime) -> datetime:
        """When to poll next.

        A feed that has the latest announcement waits for the next one (plus a grace period): no request in
        between. An overdue feed is polled every ``poll_interval`` from the grace period on, hourly once stale.
        A feed never polled is polled now; a backfill that failed is tried again after an hour.
        """
        soonest = calendar.next_announcement(now) + GRACE_AFTER_ANNOUNCEMENT
        for key in feed_keys:
            health = self.health(key, now)
            state = self.store.feed_state(key)
            if state is None or state.last_polled is None:
                return now
            if health.state in ("late", "stale") and health.expected is not None:
                interval = timedelta(seconds=self.settings.poll_interval)
                if health.state == "stale":
                    interval = max(interval, STALE_INTERVAL)
                first = calendar.announcement_time(health.expected) + GRACE_AFTER_ANNOUNCEMENT
                soonest = min(soonest, max(first, state.last_polled + interval, now))
            for pending in self.store.backfills(key, states=("pending",)):
                retry = pending.attempted_at + BACKFILL_RETRY if pending.attempted_at else now
                soonest = min(soonest, max(retry, now))
        return soonest

    def empty_reason(self, feed_key: str, now: datetime) -> str | None:
        """Why a digest of a category (or set) would be empty, or None when we cannot honestly say (one of its
        categories is late, failing or never polled)."""
        return self.empty_reasons([feed_key], now)[feed_key]

    def empty_reasons(self, feed_keys: Iterable[str], now: datetime) -> dict[str, str | None]:
        """:meth:`empty_reason` of each key, each category's feed state read once however many sets share it."""
        known: dict[str, FeedHealth] = {}
        today = now.astimezone(calendar.EASTERN).date()
        reasons: dict[str, str | None] = {}
        for key in feed_keys:
            if self._worst(key, now, known).state != "ok":
                reasons[key] = None  # never blame arXiv for papers we could not fetch
            elif not calendar.is_announcement_day(today):
                reasons[key] = f"arXiv did not announce on {today:%a %d %b} (weekend or holiday)"
            else:
                reasons[key] = "nothing new matched your rules"
        return reasons


_WORSE = {"ok": 0, "late": 1, "stale": 2, "never polled": 3}


def _last_polled(state: FeedState | None) -> datetime:
    never = datetime.min.replace(tzinfo=UTC)
    return (state.last_polled or never) if state is not None else never


def _announced(state: FeedState | None) -> date | None:
    return state.last_announced if state is not None else None


def _no_connection(exc: BaseException) -> bool:
    """Whether ``exc`` comes from failing to connect at all: the host's name did not resolve, or every address
    refused (not a timeout, a reset or an answer, which another feed may not meet)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError):
            return True
        cause = cause.__cause__
    return False
