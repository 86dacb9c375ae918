"""Polling: announcements and repeats, hostile answers, Retry-After, cadence, feed health, and the backfill."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from notifier import calendar
from notifier.backfill import backfill, missed_days
from notifier.config import load_config
from notifier.daemon import Notifier
from notifier.gate import PoliteGate
from notifier.models import Paper
from notifier.poller import Poller
from notifier.settings import load_settings
from notifier.store import Store
from tests.arxiv_server import ArxivStandIn, day_feed, fixtures_dir

SMALL = "cs.SD+eess.AS"
SMALL_0603 = fixtures_dir() / f"rss-{SMALL}-2025-06-03.DERIVED.xml"
CONFIG = """\
subscribers:
  - name: plain
    email: plain@lab.example
    categories: [cs.SD, eess.AS]
    rules: [{name: all, query: NOT zzzqqq}]
  - name: updates
    email: upd@lab.example
    categories: [cs.SD, eess.AS]
    announce_types: [new, cross, replace]
    rules: [{name: all, query: NOT zzzqqq}]
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings_for(tmp_path: Path, server: ArxivStandIn, **extra: object):
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    return load_settings(
        {},
        {
            "subscribers": str(tmp_path / "subscribers.yaml"),
            "data_dir": str(tmp_path / "data"),
            "arxiv_rss_url": server.rss_base_url,
            "arxiv_api_url": server.api_url,
            "min_request_interval": 0.05,
            **extra,
        },
    )


class Rig:
    def __init__(self, tmp_path: Path, server: ArxivStandIn, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.server = server
        self.clock = clock
        self.settings = settings_for(tmp_path, server)
        self.store = Store(self.settings.database)
        self.gate = PoliteGate(
            session, user_agent="test", min_interval=0.05, timeout=1.0, max_attempts=2, backoff_base=0.05
        )
        self.poller = Poller(self.store, self.gate, self.settings, clock)

    def items(self, key: str = SMALL) -> list[Paper]:
        return self.store.candidates(key, utc(2000, 1, 1), utc(2100, 1, 1))


@pytest.fixture
async def rig(tmp_path):
    async with ArxivStandIn(day="2025-06-03") as server, aiohttp.ClientSession() as session:
        rig = Rig(tmp_path, server, session, Clock(utc(2025, 6, 3, 4, 10)))
        try:
            yield rig
        finally:
            rig.store.close()


# -- announcements and repeats -----------------------------------------------------------------------------------


async def test_a_repeated_announcement_is_nothing_new_and_nothing_is_sent_again(tmp_path):
    clock = Clock(utc(2025, 6, 3, 4, 10))
    async with ArxivStandIn(day="2025-06-03") as server:
        settings = settings_for(tmp_path, server)
        async with Notifier(settings, load_config(settings.subscribers, {}), clock=clock) as app:
            first = await app.cycle(force_send=True)
            assert [(o.status, o.announced) for o in first.polls] == [("ok", date(2025, 6, 3))]
            assert first.sent.sent == 2
            # The same items again with a new lastBuildDate (so a new ETag): a repeat, not an announcement.
            rebuilt = re.sub(
                rb"<lastBuildDate>[^<]*", b"<lastBuildDate>Tue, 03 Jun 2025 05:01:00 +0000", SMALL_0603.read_bytes()
            )
            server.add_feed("2025-06-03", SMALL, rebuilt)
            clock.now += timedelta(minutes=15)
            again = await app.cycle(force_send=True)
            assert [(o.status, o.new_items, o.announced) for o in again.polls] == [("repeat", 0, None)]
            assert again.plan.deliveries == 0 and again.sent.sent == 0
            assert app.poller.health(SMALL, clock()).state == "ok"
    assert len(list((tmp_path / "data" / "outbox" / "email").glob("*.eml"))) == 2


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("bomb", "DTD or entities"),
        ("html", "HTML page instead of a feed"),
        ("malformed", "malformed XML"),
        ("huge", r"sent more than the \d+-byte limit"),
        ("huge-declared", "announced 52428800 bytes"),
        ("reset", "connection to arXiv failed"),
        ("stall", "did not answer .* within 1s"),
    ],
)
async def test_a_hostile_answer_is_an_error_that_touches_nothing_and_the_next_poll_recovers(rig, mode, message):
    assert (await rig.poller.poll_one(SMALL)).status == "ok"
    before_state, before_items = rig.store.feed_state(SMALL), rig.items()
    before_papers = rig.store.paper_count()
    rig.server.set_day("2025-06-04")
    rig.clock.now += timedelta(days=1)
    attempts = 2 if mode in ("reset", "stall") else 1  # the gate retries what may be transient
    rig.server.fail_next("/rss/", mode, count=attempts, stall=30)
    outcome = await rig.poller.poll_one(SMALL)
    assert outcome.status == "error"
    assert outcome.error is not None and re.search(message, outcome.error), outcome.error
    after = rig.store.feed_state(SMALL)
    assert after is not None and before_state is not None
    assert (after.last_announced, after.etag, after.last_items_hash) == (
        before_state.last_announced,
        before_state.etag,
        before_state.last_items_hash,
    )
    assert after.last_status == "error" and after.last_error == outcome.error
    assert rig.items() == before_items and rig.store.paper_count() == before_papers
    assert rig.poller.health(SMALL, rig.clock()).state == "late"
    assert rig.poller.empty_reason(SMALL, rig.clock()) is None, "never 'no papers' when we could not fetch"
    recovered = await rig.poller.poll_one(SMALL)
    assert (recovered.status, recovered.announced) == ("ok", date(2025, 6, 4)) and recovered.new_items > 0
    assert rig.poller.health(SMALL, rig.clock()).state == "ok"


async def test_429_with_retry_after_is_honoured(rig):
    rig.server.fail_next("/rss/", "429", retry_after=0.5)
    outcome = await rig.poller.poll_one(SMALL)
    assert outcome.status == "ok"
    first, second = rig.server.requests_to("/rss/")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.5 - 0.01


# -- health and the reason an empty digest gives -------------------------------------------------------------------


async def test_an_empty_feed_on_a_holiday_is_healthy(rig):
    rig.server.set_day("2025-06-20")  # arXiv does not announce on Juneteenth evening (Thu 19 June 2025)
    rig.clock.now = utc(2025, 6, 20, 4, 10)
    outcome = await rig.poller.poll_one(SMALL)
    assert (outcome.status, outcome.announced) == ("empty", date(2025, 6, 20))
    assert rig.poller.health(SMALL, rig.clock()).state == "ok"
    assert (
        rig.poller.empty_reason(SMALL, utc(2025, 6, 20, 12))
        == "arXiv did not announce on Fri 20 Jun (weekend or holiday)"
    )
    assert (
        rig.poller.empty_reason(SMALL, utc(2025, 6, 21, 12))
        == "arXiv did not announce on Sat 21 Jun (weekend or holiday)"
    )


async def test_an_empty_feed_when_an_announcement_is_due_is_late_then_stale(rig):
    assert (await rig.poller.poll_one(SMALL)).status == "ok"
    assert rig.poller.empty_reason(SMALL, rig.clock()) == "nothing new matched your rules"
    rig.server.set_day("2025-06-04")
    rig.server.fail_next("/rss/", "empty")
    rig.clock.now = utc(2025, 6, 4, 4, 10)
    outcome = await rig.poller.poll_one(SMALL)
    assert (outcome.status, outcome.announced) == ("empty", None)
    health = rig.poller.health(SMALL, rig.clock())
    assert (health.state, health.last_announced, health.expected) == ("late", date(2025, 6, 3), date(2025, 6, 4))
    assert rig.poller.empty_reason(SMALL, rig.clock()) is None
    assert rig.poller.health(SMALL, utc(2025, 6, 4, 10, 1)).state == "stale"
    assert rig.poller.empty_reason(SMALL, utc(2025, 6, 4, 10, 1)) is None


# -- cadence -------------------------------------------------------------------------------------------------------


def test_cadence_follows_the_calendar(tmp_path):
    settings = load_settings({}, {"subscribers": str(tmp_path / "s.yaml"), "data_dir": str(tmp_path)})
    store = Store(settings.database)
    poller = Poller(store, None, settings, lambda: utc(2025, 6, 3))  # type: ignore[arg-type]
    try:
        assert poller.next_poll_at([SMALL], utc(2025, 6, 3, 1)) == utc(2025, 6, 3, 1), "never polled: now"
        store.record_poll(SMALL, at=utc(2025, 6, 3, 4, 10), status="ok", announced=date(2025, 6, 3))
        # Quiet from a successful poll until the next feed is due (00:00 US Eastern) plus the grace period.
        for hour in (4, 12, 23):
            assert poller.next_poll_at([SMALL], utc(2025, 6, 3, hour, 11)) == utc(2025, 6, 4, 4, 10)
        # Overdue: from the grace period on, every poll_interval; hourly once stale.
        assert poller.next_poll_at([SMALL], utc(2025, 6, 4, 4, 1)) == utc(2025, 6, 4, 4, 10)
        store.record_poll(SMALL, at=utc(2025, 6, 4, 4, 10), status="repeat")
        assert poller.next_poll_at([SMALL], utc(2025, 6, 4, 4, 10)) == utc(2025, 6, 4, 4, 25)
        store.record_poll(SMALL, at=utc(2025, 6, 4, 10, 15), status="error", error="HTTP 503")
        assert poller.next_poll_at([SMALL], utc(2025, 6, 4, 10, 15)) == utc(2025, 6, 4, 11, 15)
        # Friday's feed seen: nothing until Monday's; Thursday before Juneteenth: nothing until the next Monday.
        store.record_poll(SMALL, at=utc(2025, 6, 6, 4, 10), status="ok", announced=date(2025, 6, 6))
        assert poller.next_poll_at([SMALL], utc(2025, 6, 7, 12)) == utc(2025, 6, 9, 4, 10)
        store.record_poll(SMALL, at=utc(2025, 6, 19, 4, 10), status="ok", announced=date(2025, 6, 19))
        assert poller.next_poll_at([SMALL], utc(2025, 6, 19, 5)) == utc(2025, 6, 23, 4, 10)
        # In winter the feed is due at 05:00 UTC.
        store.record_poll(SMALL, at=utc(2025, 12, 1, 5, 10), status="ok", announced=date(2025, 12, 1))
        assert poller.next_poll_at([SMALL], utc(2025, 12, 1, 6)) == utc(2025, 12, 2, 5, 10)
        # A backfill that failed is tried again after an hour.
        store.request_backfill(
            SMALL, date(2025, 11, 28), calendar.submission_window(date(2025, 12, 1)), "x", utc(2025, 12, 1, 5, 10)
        )
        store.record_backfill(SMALL, date(2025, 11, 28), utc(2025, 12, 1, 5, 10), error="HTTP 503")
        assert poller.next_poll_at([SMALL], utc(2025, 12, 1, 6)) == utc(2025, 12, 1, 6, 10)
    finally:
        store.close()


def test_submission_windows_and_missed_days():
    eastern = calendar.EASTERN
    # Tuesday's feed: Friday 14:00 to Monday 14:00 US Eastern; Monday's: Thursday 14:00 to Friday 14:00.
    assert calendar.submission_window(date(2025, 6, 3)) == (
        datetime(2025, 5, 30, 14, tzinfo=eastern).astimezone(UTC),
        datetime(2025, 6, 2, 14, tzinfo=eastern).astimezone(UTC),
    )
    assert calendar.submission_window(date(2025, 6, 2))[1] == datetime(2025, 5, 30, 14, tzinfo=eastern)
    # After Thanksgiving (no announcement on Thursday evening): Wednesday 14:00 to Friday 14:00.
    assert calendar.submission_window(date(2025, 12, 1)) == (
        datetime(2025, 11, 26, 14, tzinfo=eastern).astimezone(UTC),
        datetime(2025, 11, 28, 14, tzinfo=eastern).astimezone(UTC),
    )
    assert missed_days(date(2025, 6, 16), date(2025, 6, 19), earliest=date(2025, 6, 1)) == [
        date(2025, 6, 17),
        date(2025, 6, 18),
    ]
    assert missed_days(date(2025, 6, 19), date(2025, 6, 23), earliest=date(2025, 6, 1)) == []  # a holiday and a weekend
    assert missed_days(date(2025, 6, 2), date(2025, 6, 6), earliest=date(2025, 6, 4)) == [
        date(2025, 6, 4),
        date(2025, 6, 5),
    ]
    assert missed_days(None, date(2025, 6, 6), earliest=date(2025, 6, 1)) == [], "a first poll owes nothing"


# -- backfill ------------------------------------------------------------------------------------------------------


def week_feeds(server: ArxivStandIn, days: dict[str, slice]) -> None:
    body = SMALL_0603.read_bytes()
    for day, part in days.items():
        server.add_feed(day, SMALL, day_feed(body, day, part))


async def test_after_downtime_the_missed_day_is_backfilled_once(rig):
    clock = rig.clock
    rig.server.clock = clock
    week_feeds(rig.server, {"2025-06-16": slice(0, 30), "2025-06-17": slice(30, 70), "2025-06-18": slice(70, 108)})
    clock.now = utc(2025, 6, 16, 4, 10)
    assert (await rig.poller.poll_one(SMALL)).announced == date(2025, 6, 16)
    clock.now = utc(2025, 6, 18, 4, 10)  # Tuesday's announcement was never polled
    outcomes = await rig.poller.poll([SMALL])
    assert [(o.previous, o.announced) for o in outcomes] == [(date(2025, 6, 16), date(2025, 6, 18))]
    done = await backfill(rig.store, rig.gate, rig.settings, outcomes, clock)
    assert [(b.day, b.status) for b in done] == [(date(2025, 6, 17), "done")]
    tuesday = day_feed(SMALL_0603.read_bytes(), "2025-06-17", slice(30, 70))
    wanted = {
        m[1].decode()
        for m in re.finditer(rb"oai:arXiv.org:(\S+?)v1</guid>.*?<arxiv:announce_type>(new|cross)<", tuesday, re.DOTALL)
    }
    wanted = {re.sub(r"v\d+$", "", i) for i in wanted}
    backfilled = [p for p in rig.items() if p.backfilled]
    assert {p.arxiv_id for p in backfilled} == wanted and done[0].added == len(wanted)
    assert all(p.version == 1 and p.announced == date(2025, 6, 17) for p in backfilled)
    listings = rig.server.requests_to("/api/")
    assert {r.query["search_query"].split(" AND ")[0] for r in listings} == {"cat:cs.SD", "cat:eess.AS"}
    assert "submittedDate:[202506131801 TO 202506161800]" in listings[0].query["search_query"]
    # The window is remembered: later polls do not fetch it again.
    clock.now += timedelta(minutes=30)
    await backfill(rig.store, rig.gate, rig.settings, await rig.poller.poll([SMALL]), clock)
    assert len(rig.server.requests_to("/api/")) == len(listings)
    assert [(b.day, b.state, b.reason) for b in rig.store.backfills(SMALL)] == [(date(2025, 6, 17), "done", "missed")]


async def test_a_failed_backfill_keeps_what_is_stored_and_is_tried_again(rig):
    rig.server.clock = rig.clock
    week_feeds(rig.server, {"2025-06-16": slice(0, 30), "2025-06-17": slice(30, 70), "2025-06-18": slice(70, 108)})
    rig.clock.now = utc(2025, 6, 16, 4, 10)
    await rig.poller.poll_one(SMALL)
    rig.clock.now = utc(2025, 6, 18, 4, 10)
    rig.server.fail_next("/api/", "503", count=2)
    outcomes = await rig.poller.poll([SMALL])
    stored = rig.items()
    (failed,) = await backfill(rig.store, rig.gate, rig.settings, outcomes, rig.clock)
    assert failed.status == "error" and failed.error is not None and "503" in failed.error
    assert rig.items() == stored
    (pending,) = rig.store.backfills(SMALL, states=("pending",))
    assert pending.attempts == 1 and pending.last_error == failed.error
    assert rig.poller.next_poll_at([SMALL], rig.clock()) == rig.clock() + timedelta(hours=1)
    rig.clock.now += timedelta(hours=1)
    (retried,) = await backfill(rig.store, rig.gate, rig.settings, await rig.poller.poll([SMALL]), rig.clock)
    assert retried.status == "done" and retried.added > 0
    assert rig.poller.next_poll_at([SMALL], rig.clock()) == utc(2025, 6, 19, 4, 10)


async def test_a_capped_feed_is_completed_from_the_api_without_duplicates(rig, monkeypatch):
    monkeypatch.setattr("notifier.feeds.FEED_ITEM_CAP", 60)
    rig.server.add_feed("2025-06-03", SMALL, day_feed(SMALL_0603.read_bytes(), "2025-06-03", slice(0, 60)), api=False)
    outcome = await rig.poller.poll_one(SMALL)
    assert outcome.capped and outcome.announced == date(2025, 6, 3)
    from_rss = {(p.arxiv_id, p.version) for p in rig.items()}
    (done,) = await backfill(rig.store, rig.gate, rig.settings, [outcome], rig.clock)
    assert done.status == "done" and done.added > 0
    items = rig.items()
    assert len(items) == len({(p.arxiv_id, p.version) for p in items}) == len(from_rss) + done.added
    full = re.findall(rb"oai:arXiv.org:(\S+?)v1</guid>", SMALL_0603.read_bytes())
    assert {p.arxiv_id for p in items if p.backfilled} <= {i.decode() for i in full[60:]}
    assert [(b.reason, b.state) for b in rig.store.backfills(SMALL)] == [("capped", "done")]


# -- versions in digests with backfilled papers --------------------------------------------------------------------


def paper(arxiv_id: str, version: int = 1, announce_type: str = "new", *, backfilled: bool = False) -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=f"Paper {arxiv_id}",
        abstract="An abstract.",
        authors=("A. Author",),
        categories=("cs.SD",),
        announce_type=announce_type,
        announced=date(2025, 6, 3),
        backfilled=backfilled,
    )


async def test_backfilled_papers_keep_the_version_rules_of_digests(tmp_path):
    clock = Clock(utc(2025, 6, 3, 9))
    async with ArxivStandIn() as server:
        settings = settings_for(tmp_path, server)
        async with Notifier(settings, load_config(settings.subscribers, {}), clock=clock) as app:

            async def step(*papers: Paper) -> dict[str, dict[str, int]]:
                clock.now += timedelta(hours=1)
                app.store.ingest(SMALL, papers, clock())
                clock.now += timedelta(minutes=1)
                await app.cycle(force_send=True, poll=False)
                return {
                    "plain": app.store.reserved_versions("plain", "email", "plain@lab.example"),
                    "updates": app.store.reserved_versions("updates", "email", "upd@lab.example"),
                }

            had = await step(paper("2506.1"))
            assert had == {"plain": {"2506.1": 1}, "updates": {"2506.1": 1}}
            sent = app.store.delivery_counts()["sent"]
            # The same paper again from the API: stored once, sent once.
            await step(paper("2506.1", backfilled=True))
            assert app.store.delivery_counts()["sent"] == sent
            # A replacement of a paper already delivered goes only to the subscriber asking for replacements.
            had = await step(paper("2506.1", 2, "replace"))
            assert had == {"plain": {"2506.1": 1}, "updates": {"2506.1": 2}}
            # A backfilled new paper and its replacement in one digest: each subscriber gets it once.
            had = await step(paper("2506.2", backfilled=True), paper("2506.2", 2, "replace"))
            assert had["plain"]["2506.2"] == 1 and had["updates"]["2506.2"] == 2
            # A replacement of a paper never seen is new to us only for a subscriber asking for replacements.
            had = await step(paper("2506.3", 3, "replace"))
            assert "2506.3" not in had["plain"] and had["updates"]["2506.3"] == 3
    for mail in (tmp_path / "data" / "outbox" / "email").glob("*.eml"):
        text = mail.read_text()
        for arxiv_id in ("2506.1", "2506.2", "2506.3"):
            assert text.count(f"arxiv.org/abs/{arxiv_id}\n") <= 1


# -- the poll's time budget ----------------------------------------------------------------------------------------

BIG = "cs.CL+cs.CV+cs.MM+cs.LG+cs.SI"


class RunningClock:
    """A clock that moves with real time from ``start``, so that records made during one poll differ."""

    def __init__(self, start: datetime) -> None:
        self.start, self.began = start, time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.began)


async def test_a_poll_out_of_time_records_the_feeds_it_never_reached_and_starts_with_them_next_time(rig):
    rig.poller.clock = RunningClock(utc(2025, 6, 3, 4, 10))
    assert [o.status for o in await rig.poller.poll([SMALL, BIG])] == ["ok", "ok"]
    rig.server.fail_next("/rss/", "stall", stall=30)
    began = time.monotonic()
    with rig.gate.time_budget(0.5, "the test's time budget"):
        stalled, never_asked = await rig.poller.poll([SMALL, BIG])
    assert time.monotonic() - began < 2
    assert stalled.status == "error" and stalled.error is not None
    assert stalled.error.startswith("the test's time budget ran out before http://127.0.0.1")
    assert "was answered (last attempt: arXiv did not answer" in stalled.error
    assert never_asked.status == "error" and never_asked.error is not None
    assert never_asked.error.endswith(f"/rss/{BIG} was asked")
    assert [r.path for r in rig.server.requests_to("/rss/")][2:] == [f"/rss/{SMALL}"], "the second feed was not asked"
    small, big = rig.store.feed_state(SMALL), rig.store.feed_state(BIG)
    assert small is not None and big is not None and small.last_polled and big.last_polled
    assert big.last_polled < small.last_polled, "the feed never reached counts as polled when the poll began"
    assert (big.last_announced, big.last_status) == (date(2025, 6, 3), "error"), "what was stored is kept"
    assert [o.status for o in await rig.poller.poll([SMALL, BIG])] == ["not_modified", "not_modified"]
    assert [r.path for r in rig.server.requests_to("/rss/")][3:] == [f"/rss/{BIG}", f"/rss/{SMALL}"]


async def test_a_retry_after_beyond_the_budget_is_not_waited_for(rig):
    rig.server.fail_next("/rss/", "429", retry_after=30)
    began = time.monotonic()
    with rig.gate.time_budget(2, "the test's time budget"):
        (outcome,) = await rig.poller.poll([SMALL])
    assert time.monotonic() - began < 1
    assert outcome.status == "error" and outcome.error is not None
    assert "ran out before" in outcome.error and "HTTP 429" in outcome.error
