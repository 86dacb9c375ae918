"""Polling: announcements and repeats, hostile answers, Retry-After, cadence, feed health, and the backfill."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from notifier.arxiv import calendar
from notifier.arxiv.backfill import backfill, missed_days
from notifier.arxiv.gate import PoliteGate
from notifier.arxiv.poller import Poller
from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.models import Paper
from notifier.store.rows import NewDelivery, NewDigest
from notifier.store.sqlite import SqliteStore
from tests.arxiv_server import ArxivStandIn, day_feed, fixtures_dir
from tests.clock import Clock

SMALL = "cs.SD+eess.AS"  # a category set subscribers read; each of its categories is its own feed
SOUND, AUDIO = SMALL.split("+")
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


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


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
        self.store = SqliteStore(self.settings.database)
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


@pytest.mark.slow
async def test_a_repeated_announcement_is_nothing_new_and_nothing_is_sent_again(tmp_path):
    clock = Clock(utc(2025, 6, 3, 4, 10))
    async with ArxivStandIn(day="2025-06-03") as server:
        settings = settings_for(tmp_path, server)
        async with Notifier(settings, load_config(settings.subscribers, {}), clock=clock) as app:
            first = await app.cycle(force_send=True)
            assert [(o.feed_key, o.status, o.announced) for o in first.polls] == [
                (SOUND, "ok", date(2025, 6, 3)),
                (AUDIO, "ok", date(2025, 6, 3)),
            ]
            assert first.sent.sent == 2
            # The same items again with a new lastBuildDate (so a new ETag): a repeat, not an announcement.
            rebuilt = re.sub(
                rb"<lastBuildDate>[^<]*", b"<lastBuildDate>Tue, 03 Jun 2025 05:01:00 +0000", SMALL_0603.read_bytes()
            )
            server.add_feed("2025-06-03", SMALL, rebuilt)
            clock.now += timedelta(minutes=15)
            again = await app.cycle(force_send=True)
            assert [(o.status, o.new_items, o.announced) for o in again.polls] == [("repeat", 0, None)] * 2
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
@pytest.mark.slow
async def test_a_hostile_answer_is_an_error_that_touches_nothing_and_the_next_poll_recovers(rig, mode, message):
    assert [o.status for o in await rig.poller.poll([SOUND, AUDIO])] == ["ok", "ok"]
    before_state, before_items = rig.store.feed_state(SOUND), rig.items(SOUND)
    rig.server.set_day("2025-06-04")
    rig.clock.now += timedelta(days=1)
    attempts = 2 if mode in ("reset", "stall") else 1  # the gate retries what may be transient
    rig.server.fail_next(f"/rss/{SOUND}", mode, count=attempts, stall=30)
    outcome, other = await rig.poller.poll([SOUND, AUDIO])
    assert outcome.status == "error"
    assert outcome.error is not None and re.search(message, outcome.error), outcome.error
    # The failure is that category's alone: the other one's feed is polled and read as usual.
    assert (other.status, other.announced) == ("ok", date(2025, 6, 4))
    assert rig.poller.empty_reason(AUDIO, rig.clock()) == "nothing new matched your rules"
    after = rig.store.feed_state(SOUND)
    assert after is not None and before_state is not None
    assert (after.last_announced, after.etag, after.last_items_hash) == (
        before_state.last_announced,
        before_state.etag,
        before_state.last_items_hash,
    )
    assert after.last_status == "error" and after.last_error == outcome.error
    assert rig.items(SOUND) == before_items
    assert rig.poller.health(SOUND, rig.clock()).state == "late"
    late = rig.poller.health(SMALL, rig.clock())
    assert (late.state, late.feed_key) == ("late", SOUND), "a set is as healthy as its worst category"
    assert rig.poller.empty_reason(SMALL, rig.clock()) is None, "never 'no papers' when we could not fetch"
    recovered = await rig.poller.poll_one(SOUND)
    assert (recovered.status, recovered.announced) == ("ok", date(2025, 6, 4)) and recovered.new_items > 0
    assert rig.poller.health(SMALL, rig.clock()).state == "ok"


async def test_429_with_retry_after_is_honoured(rig):
    rig.server.fail_next("/rss/", "429", retry_after=0.5)
    outcome = await rig.poller.poll_one(SOUND)
    assert outcome.status == "ok"
    first, second = rig.server.requests_to("/rss/")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.5 - 0.01


# -- health and the reason an empty digest gives -------------------------------------------------------------------


async def test_an_empty_feed_on_a_holiday_is_healthy(rig):
    rig.server.set_day("2025-06-20")  # arXiv does not announce on Juneteenth evening (Thu 19 June 2025)
    rig.clock.now = utc(2025, 6, 20, 4, 10)
    outcomes = await rig.poller.poll([SOUND, AUDIO])
    assert [(o.status, o.announced) for o in outcomes] == [("empty", date(2025, 6, 20))] * 2
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
    assert rig.poller.empty_reason(SMALL, rig.clock()) is None, "never polled: nothing to say yet"
    assert [o.status for o in await rig.poller.poll([SOUND, AUDIO])] == ["ok", "ok"]
    assert rig.poller.empty_reason(SMALL, rig.clock()) == "nothing new matched your rules"
    rig.server.set_day("2025-06-04")
    rig.server.fail_next(f"/rss/{SOUND}", "empty")
    rig.clock.now = utc(2025, 6, 4, 4, 10)
    outcome, other = await rig.poller.poll([SOUND, AUDIO])
    assert (outcome.status, outcome.announced) == ("empty", None)
    assert (other.status, other.announced) == ("ok", date(2025, 6, 4))
    health = rig.poller.health(SMALL, rig.clock())
    assert (health.state, health.last_announced, health.expected) == ("late", date(2025, 6, 3), date(2025, 6, 4))
    assert rig.poller.empty_reason(SMALL, rig.clock()) is None
    assert rig.poller.health(SMALL, utc(2025, 6, 4, 10, 1)).state == "stale"
    assert rig.poller.empty_reason(SMALL, utc(2025, 6, 4, 10, 1)) is None


# -- cadence -------------------------------------------------------------------------------------------------------


def test_cadence_follows_the_calendar(tmp_path):
    settings = load_settings({}, {"subscribers": str(tmp_path / "s.yaml"), "data_dir": str(tmp_path)})
    store = SqliteStore(settings.database)
    poller = Poller(store, None, settings, lambda: utc(2025, 6, 3))  # type: ignore[arg-type]
    try:
        assert poller.next_poll_at([SOUND], utc(2025, 6, 3, 1)) == utc(2025, 6, 3, 1), "never polled: now"
        store.record_poll(SOUND, at=utc(2025, 6, 3, 4, 10), status="ok", announced=date(2025, 6, 3))
        # Quiet from a successful poll until the next feed is due (00:00 US Eastern) plus the grace period.
        for hour in (4, 12, 23):
            assert poller.next_poll_at([SOUND], utc(2025, 6, 3, hour, 11)) == utc(2025, 6, 4, 4, 10)
        # Overdue: from the grace period on, every poll_interval; hourly once stale.
        assert poller.next_poll_at([SOUND], utc(2025, 6, 4, 4, 1)) == utc(2025, 6, 4, 4, 10)
        store.record_poll(SOUND, at=utc(2025, 6, 4, 4, 10), status="repeat")
        assert poller.next_poll_at([SOUND], utc(2025, 6, 4, 4, 10)) == utc(2025, 6, 4, 4, 25)
        store.record_poll(SOUND, at=utc(2025, 6, 4, 10, 15), status="error", error="HTTP 503")
        assert poller.next_poll_at([SOUND], utc(2025, 6, 4, 10, 15)) == utc(2025, 6, 4, 11, 15)
        # Friday's feed seen: nothing until Monday's; Thursday before Juneteenth: nothing until the next Monday.
        store.record_poll(SOUND, at=utc(2025, 6, 6, 4, 10), status="ok", announced=date(2025, 6, 6))
        assert poller.next_poll_at([SOUND], utc(2025, 6, 7, 12)) == utc(2025, 6, 9, 4, 10)
        store.record_poll(SOUND, at=utc(2025, 6, 19, 4, 10), status="ok", announced=date(2025, 6, 19))
        assert poller.next_poll_at([SOUND], utc(2025, 6, 19, 5)) == utc(2025, 6, 23, 4, 10)
        # In winter the feed is due at 05:00 UTC.
        store.record_poll(SOUND, at=utc(2025, 12, 1, 5, 10), status="ok", announced=date(2025, 12, 1))
        assert poller.next_poll_at([SOUND], utc(2025, 12, 1, 6)) == utc(2025, 12, 2, 5, 10)
        # A backfill that failed is tried again after an hour.
        store.request_backfill(
            SOUND, date(2025, 11, 28), calendar.submission_window(date(2025, 12, 1)), "x", utc(2025, 12, 1, 5, 10)
        )
        store.record_backfill(SOUND, date(2025, 11, 28), utc(2025, 12, 1, 5, 10), error="HTTP 503")
        assert poller.next_poll_at([SOUND], utc(2025, 12, 1, 6)) == utc(2025, 12, 1, 6, 10)
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
    assert [o.announced for o in await rig.poller.poll([SOUND, AUDIO])] == [date(2025, 6, 16)] * 2
    clock.now = utc(2025, 6, 18, 4, 10)  # Tuesday's announcement was never polled
    outcomes = await rig.poller.poll([SOUND, AUDIO])
    assert [(o.previous, o.announced) for o in outcomes] == [(date(2025, 6, 16), date(2025, 6, 18))] * 2
    done = await backfill(rig.store, rig.gate, rig.settings, outcomes, clock)
    assert [(b.feed_key, b.day, b.status) for b in done] == [
        (SOUND, date(2025, 6, 17), "done"),
        (AUDIO, date(2025, 6, 17), "done"),
    ]
    tuesday = day_feed(SMALL_0603.read_bytes(), "2025-06-17", slice(30, 70))
    wanted = {
        m[1].decode()
        for m in re.finditer(rb"oai:arXiv.org:(\S+?)v1</guid>.*?<arxiv:announce_type>(new|cross)<", tuesday, re.DOTALL)
    }
    wanted = {re.sub(r"v\d+$", "", i) for i in wanted}
    backfilled = [p for p in rig.items() if p.backfilled]  # the set: both categories, each paper once
    assert sorted(p.arxiv_id for p in backfilled) == sorted(wanted)
    assert sum(b.added for b in done) == sum(len([p for p in rig.items(key) if p.backfilled]) for key in (SOUND, AUDIO))
    assert all(p.version == 1 and p.announced == date(2025, 6, 17) for p in backfilled)
    listings = rig.server.requests_to("/api/")
    assert {r.query["search_query"].split(" AND ")[0] for r in listings} == {"cat:cs.SD", "cat:eess.AS"}
    assert "submittedDate:[202506131801 TO 202506161800]" in listings[0].query["search_query"]
    # The window is remembered: later polls do not fetch it again.
    clock.now += timedelta(minutes=30)
    await backfill(rig.store, rig.gate, rig.settings, await rig.poller.poll([SOUND, AUDIO]), clock)
    assert len(rig.server.requests_to("/api/")) == len(listings)
    assert [(b.feed_key, b.day, b.state, b.reason) for b in rig.store.backfills()] == [
        (SOUND, date(2025, 6, 17), "done", "missed"),
        (AUDIO, date(2025, 6, 17), "done", "missed"),
    ]


@pytest.mark.slow
async def test_a_failed_backfill_keeps_what_is_stored_and_is_tried_again(rig):
    rig.server.clock = rig.clock
    week_feeds(rig.server, {"2025-06-16": slice(0, 30), "2025-06-17": slice(30, 70), "2025-06-18": slice(70, 108)})
    rig.clock.now = utc(2025, 6, 16, 4, 10)
    await rig.poller.poll([SOUND])
    rig.clock.now = utc(2025, 6, 18, 4, 10)
    rig.server.fail_next("/api/", "503", count=2)
    outcomes = await rig.poller.poll([SOUND])
    stored = rig.items(SOUND)
    (failed,) = await backfill(rig.store, rig.gate, rig.settings, outcomes, rig.clock)
    assert failed.status == "error" and failed.error is not None and "503" in failed.error
    assert rig.items(SOUND) == stored
    (pending,) = rig.store.backfills(SOUND, states=("pending",))
    assert pending.attempts == 1 and pending.last_error == failed.error
    assert rig.poller.next_poll_at([SOUND], rig.clock()) == rig.clock() + timedelta(hours=1)
    rig.clock.now += timedelta(hours=1)
    (retried,) = await backfill(rig.store, rig.gate, rig.settings, await rig.poller.poll([SOUND]), rig.clock)
    assert retried.status == "done" and retried.added > 0
    assert rig.poller.next_poll_at([SOUND], rig.clock()) == utc(2025, 6, 19, 4, 10)


async def test_a_capped_feed_is_completed_from_the_api_without_duplicates(rig, monkeypatch):
    monkeypatch.setattr("notifier.arxiv.rss.FEED_ITEM_CAP", 60)
    rig.server.add_feed("2025-06-03", SOUND, day_feed(SMALL_0603.read_bytes(), "2025-06-03", slice(0, 60)), api=False)
    outcome = await rig.poller.poll_one(SOUND)
    assert outcome.capped and outcome.announced == date(2025, 6, 3)
    from_rss = {(p.arxiv_id, p.version) for p in rig.items(SOUND)}
    (done,) = await backfill(rig.store, rig.gate, rig.settings, [outcome], rig.clock)
    assert done.status == "done" and done.added > 0
    items = rig.items(SOUND)
    assert len(items) == len({(p.arxiv_id, p.version) for p in items}) == len(from_rss) + done.added
    full = re.findall(rb"oai:arXiv.org:(\S+?)v1</guid>", SMALL_0603.read_bytes())
    assert {p.arxiv_id for p in items if p.backfilled} <= {i.decode() for i in full[60:]}
    assert [(b.reason, b.state) for b in rig.store.backfills(SOUND)] == [("capped", "done")]


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
                app.store.ingest(SOUND, papers, clock())
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

LEARNING = "cs.LG"


class RunningClock:
    """A clock that moves with real time from ``start``, so that records made during one poll differ."""

    def __init__(self, start: datetime) -> None:
        self.start, self.began = start, time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.began)


@pytest.mark.slow
async def test_a_poll_out_of_time_records_the_feeds_it_never_reached_and_starts_with_them_next_time(rig):
    rig.poller.clock = RunningClock(utc(2025, 6, 3, 4, 10))
    assert [o.status for o in await rig.poller.poll([SOUND, LEARNING])] == ["ok", "ok"]
    rig.server.fail_next("/rss/", "stall", stall=30)
    began = time.monotonic()
    with rig.gate.time_budget(0.5, "the test's time budget"):
        stalled, never_asked = await rig.poller.poll([SOUND, LEARNING])
    assert time.monotonic() - began < 2
    assert stalled.status == "error" and stalled.error is not None
    assert stalled.error.startswith("the test's time budget ran out before http://127.0.0.1")
    assert "was answered (last attempt: arXiv did not answer" in stalled.error
    assert never_asked.status == "error" and never_asked.error is not None
    assert never_asked.error.endswith(f"/rss/{LEARNING} was asked")
    assert [r.path for r in rig.server.requests_to("/rss/")][2:] == [f"/rss/{SOUND}"], "the second feed was not asked"
    small, big = rig.store.feed_state(SOUND), rig.store.feed_state(LEARNING)
    assert small is not None and big is not None and small.last_polled and big.last_polled
    assert big.last_polled < small.last_polled, "the feed never reached counts as polled when the poll began"
    assert (big.last_announced, big.last_status) == (date(2025, 6, 3), "error"), "what was stored is kept"
    assert [o.status for o in await rig.poller.poll([SOUND, LEARNING])] == ["not_modified", "not_modified"]
    assert [r.path for r in rig.server.requests_to("/rss/")][3:] == [f"/rss/{LEARNING}", f"/rss/{SOUND}"]


async def test_a_retry_after_beyond_the_budget_is_not_waited_for(rig):
    rig.server.fail_next("/rss/", "429", retry_after=30)
    began = time.monotonic()
    with rig.gate.time_budget(2, "the test's time budget"):
        (outcome,) = await rig.poller.poll([SOUND])
    assert time.monotonic() - began < 1
    assert outcome.status == "error" and outcome.error is not None
    assert "ran out before" in outcome.error and "HTTP 429" in outcome.error


# -- one feed per category, category sets composed locally ----------------------------------------------------------

SETS = """\
subscribers:
  - name: sound-and-audio
    email: both@lab.example
    categories: [eess.AS, cs.SD]
    rules: [{name: all, query: NOT zzzqqq}]
  - name: sound
    email: sound@lab.example
    categories: [cs.SD]
    rules: [{name: all, query: NOT zzzqqq}]
  - name: audio-and-learning
    email: al@lab.example
    categories: [eess.AS, cs.LG]
    rules: [{name: all, query: NOT zzzqqq}]
  - name: learning
    email: learning@lab.example
    categories: [cs.LG]
    rules: [{name: all, query: NOT zzzqqq}]
"""


def announced(key: str, day: str, types: tuple[str, ...] = ("new", "cross")) -> set[str]:
    """Ids of the items of the fixture feed ``key`` (a combined feed) on ``day`` announced as one of ``types``."""
    body = (fixtures_dir() / f"rss-{key}-{day}.DERIVED.xml").read_bytes()
    pattern = rb"oai:arXiv.org:(\S+?)v\d+</guid>.*?<arxiv:announce_type>([a-z-]+)<"
    return {m[1].decode() for m in re.finditer(pattern, body, re.DOTALL) if m[2].decode() in types}


@pytest.mark.slow
async def test_each_category_is_polled_once_and_each_set_reads_the_union_of_its_categories(tmp_path):
    clock = Clock(utc(2025, 6, 3, 4, 10))
    async with ArxivStandIn(day="2025-06-03") as server:
        settings = settings_for(tmp_path, server)
        settings.subscribers.write_text(SETS)
        config = load_config(settings.subscribers, {})
        assert config.categories == ["cs.LG", "cs.SD", "eess.AS"]
        async with Notifier(settings, config, clock=clock) as app:
            report = await app.cycle(force_send=True)
            had = {s.name: set(app.store.reserved_versions(s.name, "email", s.emails[0])) for s in config.subscribers}
            learning = {p.arxiv_id for p in app.store.candidates("cs.LG", utc(2000, 1, 1), clock())}
    # Four subscribers in four category sets: three requests, one per category.
    assert sorted(r.path for r in server.requests_to("/rss/")) == ["/rss/cs.LG", "/rss/cs.SD", "/rss/eess.AS"]
    assert [o.status for o in report.polls] == ["ok"] * 3 and report.sent.sent == 4
    # A set gets what the combined feed of its categories announces: the union, each paper once, as "new" where
    # one of the set's categories is its primary (cs.SD's cross-lists from eess.AS are new to the set).
    assert had["sound-and-audio"] == announced("cs.SD+eess.AS", "2025-06-03")
    assert had["sound"] < had["sound-and-audio"]
    assert had["learning"] == learning & announced("cs.CL+cs.CV+cs.MM+cs.LG+cs.SI", "2025-06-03")
    assert had["audio-and-learning"] > had["learning"]


async def test_a_set_holds_each_paper_version_once_with_the_type_its_primary_category_gives(tmp_path):
    store = SqliteStore(tmp_path / "notifier.sqlite3")
    try:
        at = utc(2025, 6, 3, 4, 10)
        store.ingest(AUDIO, [paper("2506.1", announce_type="cross"), paper("2506.2")], at)
        store.ingest(SOUND, [paper("2506.1"), paper("2506.2", 2, "replace-cross")], at + timedelta(minutes=1))
        found = [
            (p.arxiv_id, p.version, p.announce_type)
            for p in store.candidates(SMALL, at - timedelta(1), at + timedelta(1))
        ]
        assert found == [("2506.1", 1, "new"), ("2506.2", 1, "new"), ("2506.2", 2, "replace-cross")]
        assert [p.announce_type for p in store.candidates(AUDIO, at - timedelta(1), at + timedelta(1))] == [
            "cross",
            "new",
        ]
        # The window applies to each category's items: what one category brought later comes in a later window.
        assert [p.arxiv_id for p in store.candidates(SMALL, at, at + timedelta(days=1))] == ["2506.1", "2506.2"]
    finally:
        store.close()


@pytest.mark.slow
async def test_a_category_that_fails_holds_back_only_its_own_subscribers(tmp_path):
    clock = Clock(utc(2025, 6, 3, 4, 10))
    async with ArxivStandIn(day="2025-06-03") as server:
        settings = settings_for(tmp_path, server)
        settings.subscribers.write_text(SETS)
        config = load_config(settings.subscribers, {})
        async with Notifier(settings, config, clock=clock) as app:
            server.fail_next(f"/rss/{AUDIO}", "html")
            report = await app.cycle(force_send=True)
            assert [(o.feed_key, o.status) for o in report.polls] == [
                ("cs.LG", "ok"),
                (SOUND, "ok"),
                (AUDIO, "error"),
            ]
            assert sorted(report.plan.subscribers) == ["audio-and-learning", "learning", "sound", "sound-and-audio"]
            reasons = app.poller.empty_reasons(config.feed_keys, clock())
            assert reasons == {
                "cs.LG": "nothing new matched your rules",
                "cs.LG+eess.AS": None,
                SOUND: "nothing new matched your rules",
                SMALL: None,
            }
            # The next poll brings the failed category; its subscribers get what it announced, and nothing twice.
            clock.now += timedelta(minutes=15)
            again = await app.cycle(force_send=True)
            assert [(o.feed_key, o.status) for o in again.polls] == [
                ("cs.LG", "not_modified"),
                (SOUND, "not_modified"),
                (AUDIO, "ok"),
            ]
            assert sorted(again.plan.subscribers) == ["audio-and-learning", "sound-and-audio"]
            both = app.store.reserved_versions("sound-and-audio", "email", "both@lab.example")
            assert set(both) == announced(SMALL, "2025-06-03")
    mails = [m.read_text() for m in (tmp_path / "data" / "outbox" / "email").glob("*.eml")]
    assert len(mails) == 6
    for arxiv_id in both:
        assert sum(m.count(f"arxiv.org/abs/{arxiv_id}\n") for m in mails if "both@lab.example" in m) == 1


@pytest.mark.slow
async def test_after_an_upgrade_from_set_feeds_the_first_per_category_poll_sends_nothing_twice(tmp_path):
    clock = Clock(utc(2025, 6, 3, 4, 10))
    async with ArxivStandIn(day="2025-06-03") as server:
        settings = settings_for(tmp_path, server)
        async with Notifier(settings, load_config(settings.subscribers, {}), clock=clock) as app:
            # The store as feeds per category set left it: the day's combined feed under the set's key, and each
            # subscriber's digest of it recorded (every paper of the types it asked for).
            assert (await app.poller.poll_one(SMALL)).status == "ok"
            old = app.store.candidates(SMALL, clock() - timedelta(days=1), clock())
            assert {p.arxiv_id for p in old} == announced(
                SMALL, "2025-06-03", ("new", "cross", "replace", "replace-cross")
            )
            for subscriber in app.config.subscribers:
                address = subscriber.emails[0]
                app.store.record_digests(
                    [
                        NewDigest(
                            digest_id=f"before-{subscriber.name}",
                            subscriber=subscriber.name,
                            kind="daily",
                            period_start=clock() - timedelta(days=1),
                            period_end=clock(),
                            now=clock(),
                            deliveries=(
                                NewDelivery(
                                    delivery_id=f"before-{subscriber.name}",
                                    channel="email",
                                    recipient=address,
                                    message_id=f"<before-{subscriber.name}@lab.example>",
                                    payload=b"Subject: before the upgrade\r\n\r\nsent\r\n",
                                    papers=tuple(
                                        (p.arxiv_id, p.version)
                                        for p in old
                                        if p.announce_type in subscriber.announce_types
                                    ),
                                ),
                            ),
                            cursor=clock(),
                        )
                    ]
                )
            reserved = {
                s.name: app.store.reserved_versions(s.name, "email", s.emails[0]) for s in app.config.subscribers
            }
            # The first poll per category lists the same day again, under the categories' keys, seen now.
            clock.now += timedelta(minutes=15)
            again = await app.cycle(force_send=True)
            assert [(o.feed_key, o.status, o.new_items > 0) for o in again.polls] == [
                (SOUND, "ok", True),
                (AUDIO, "ok", True),
            ]
            # So the papers are candidates again, but the digest before the upgrade reserved every version.
            for category in (SOUND, AUDIO):
                assert app.store.candidates(category, clock() - timedelta(minutes=1), clock())
            assert (again.plan.digests, again.plan.deliveries) == (0, 0)
            after = {s.name: app.store.reserved_versions(s.name, "email", s.emails[0]) for s in app.config.subscribers}
            assert after == reserved


async def test_when_arxiv_cannot_be_reached_the_poll_asks_no_other_feed_and_the_next_starts_with_them(tmp_path):
    async with ArxivStandIn(day="2025-06-03") as server:
        settings = settings_for(tmp_path, server)
    # The stand-in is closed: its port refuses connections.
    clock = RunningClock(utc(2025, 6, 3, 4, 10))
    store = SqliteStore(settings.database)
    try:
        asked: list[str] = []
        trace = aiohttp.TraceConfig()

        async def record(_session: object, _context: object, params: aiohttp.TraceRequestStartParams) -> None:
            asked.append(params.url.name)

        trace.on_request_start.append(record)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            gate = PoliteGate(
                session, user_agent="test", min_interval=0.0, timeout=1.0, max_attempts=2, backoff_base=0.01
            )
            poller = Poller(store, gate, settings, clock)
            first, second, third = await poller.poll([SOUND, AUDIO, LEARNING])
            assert first.status == "error" and first.unreachable
            assert first.error is not None and "connection to arXiv failed" in first.error
            for skipped in (second, third):
                assert skipped.status == "error" and not skipped.unreachable
                assert skipped.error == f"not asked: arXiv could not be reached for {SOUND} in this poll"
            assert asked == [SOUND, SOUND], "only the first feed was asked, once per attempt"
            await poller.poll([SOUND, AUDIO, LEARNING])
            assert asked[2:4] == [AUDIO, AUDIO]
    finally:
        store.close()
