"""A simulated week: the daemon's loop, tick by tick on a simulated clock, against a local arXiv that announces
real papers (the fixture feeds cut into days), is down for two days, and keeps a holiday.

The week of Sunday 15 June 2025: announcements dated Monday 16 to Thursday 19 June, none on Friday 20 (arXiv does
not announce on Juneteenth evening) or over the weekend, and again on Monday 23. arXiv answers nothing but HTTP 503
from Tuesday 00:00 to Thursday 00:00 US Eastern, so Tuesday's and Wednesday's feeds are never seen and their papers
must come from the API listing. The subscriber's catch-all rule makes "every paper announced" literal.
"""

from __future__ import annotations

import collections
import email
import email.policy
import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.arxiv import calendar
from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from tests.arxiv_server import ArxivStandIn, day_feed, fixtures_dir

pytestmark = pytest.mark.slow  # a simulated week of polling, planning and sending

SMALL = "cs.SD+eess.AS"
EASTERN = calendar.EASTERN
MIN_INTERVAL = 0.05
STEP = timedelta(minutes=10)
CONFIG = """\
subscribers:
  - name: everything
    email: all@lab.example
    categories: [cs.SD, eess.AS]
    schedule: "daily 07:00 America/New_York"
    rules: [{name: all, query: NOT zzzqqq}]
"""
# Which fixture items each announcement day carries: (fixture day, slice).
DAYS = {
    "2025-06-16": ("2025-06-03", slice(0, 40)),
    "2025-06-17": ("2025-06-03", slice(40, 80)),
    "2025-06-18": ("2025-06-03", slice(80, 108)),
    "2025-06-19": ("2025-06-04", slice(0, 30)),
    "2025-06-23": ("2025-06-04", slice(30, 59)),
}
ITEM = re.compile(
    rb"<guid[^>]*>oai:arXiv.org:(?P<id>\S+?)v\d+</guid>.*?<arxiv:announce_type>(?P<type>[a-z-]+)<", re.DOTALL
)
ABS_LINK = re.compile(r"arxiv\.org/abs/(\d{4}\.\d{4,5})")


def eastern(*args: int) -> datetime:
    return datetime(*args, tzinfo=EASTERN).astimezone(UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def announced_papers(feeds: dict[str, bytes]) -> set[str]:
    """Ids of the new submissions and cross-lists announced in the week (what the subscriber asked for)."""
    return {m["id"].decode() for body in feeds.values() for m in ITEM.finditer(body) if m["type"] in (b"new", b"cross")}


def delivered(outbox: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in outbox.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        assert message["To"] == "all@lab.example"
        text = message.get_body(("plain",))
        assert text is not None
        counts.update(set(ABS_LINK.findall(text.get_content())))
    return counts


async def test_a_week_with_a_holiday_and_a_two_day_outage(tmp_path):
    began = time.monotonic()
    clock = Clock(eastern(2025, 6, 15, 8, 0))  # a Sunday morning: the first start
    end = eastern(2025, 6, 23, 12, 0)
    outage = (eastern(2025, 6, 17, 0, 0), eastern(2025, 6, 19, 0, 0))
    feeds = {
        day: day_feed((fixtures_dir() / f"rss-{SMALL}-{source}.DERIVED.xml").read_bytes(), day, part)
        for day, (source, part) in DAYS.items()
    }
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    health: dict[str, str] = {}
    async with ArxivStandIn(clock=clock) as server:
        for day, body in feeds.items():
            server.add_feed(day, SMALL, body)
        server.add_outage(*outage)
        settings = load_settings(
            {},
            {
                "subscribers": str(tmp_path / "subscribers.yaml"),
                "data_dir": str(tmp_path / "data"),
                "arxiv_rss_url": server.rss_base_url,
                "arxiv_api_url": server.api_url,
                "min_request_interval": MIN_INTERVAL,
            },
        )
        async with Notifier(settings, load_config(settings.subscribers, {}), clock=clock) as app:
            app.gate.max_attempts = 1  # one request per failed poll keeps the outage fast; retries: test_gate
            probes = {
                "Tue 03:00": eastern(2025, 6, 17, 3),
                "Tue 12:00": eastern(2025, 6, 17, 12),
                "Thu 03:00": eastern(2025, 6, 19, 3),
                "Sat 12:00": eastern(2025, 6, 21, 12),
            }
            next_poll = clock()
            while clock.now < end:
                next_poll = await app.tick(next_poll)
                for name, moment in list(probes.items()):
                    if clock.now >= moment:
                        health[name] = app.poller.health(SMALL, clock()).state
                        del probes[name]
                clock.now = max(min(next_poll, clock.now + STEP), clock.now + timedelta(seconds=1))
            final = app.poller.health(SMALL, clock())
            backfills = app.store.backfills()
            recovered = [p.arxiv_id for p in app.store.candidates(SMALL, eastern(2025, 6, 15), end) if p.backfilled]
            reason_on_saturday = app.poller.empty_reason(SMALL, eastern(2025, 6, 21, 7))
        requests = list(server.requests)

    # Every paper announced in the week reached the subscriber, exactly once.
    counts = delivered(tmp_path / "data" / "outbox" / "email")
    wanted = announced_papers(feeds)
    assert set(counts) == wanted
    assert [i for i, n in counts.items() if n > 1] == []
    missed = announced_papers({d: feeds[d] for d in ("2025-06-17", "2025-06-18")})
    assert missed, "the outage hid papers that only the backfill can bring"
    # Each category's feed recovers its own missed days; the subscriber's set reads each paper once.
    assert [(b.day.isoformat(), b.feed_key, b.state, b.reason) for b in backfills] == [
        ("2025-06-17", "cs.SD", "done", "missed"),
        ("2025-06-17", "eess.AS", "done", "missed"),
        ("2025-06-18", "cs.SD", "done", "missed"),
        ("2025-06-18", "eess.AS", "done", "missed"),
    ]
    assert sorted(recovered) == sorted(missed)

    # Feed health as `notifier status` shows it.
    assert health == {"Tue 03:00": "late", "Tue 12:00": "stale", "Thu 03:00": "ok", "Sat 12:00": "ok"}
    assert (final.state, final.last_announced.isoformat() if final.last_announced else None) == ("ok", "2025-06-23")
    assert final.next_expected == eastern(2025, 6, 24, 0, 0)
    assert reason_on_saturday == "arXiv did not announce on Sat 21 Jun (weekend or holiday)"

    # Politeness: the minimum spacing between any two requests, in real time.
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert min(gaps) >= MIN_INTERVAL - 0.01, "spaced by the gate; seen at the server with up to 10 ms of network jitter"

    # Quiet hours: nothing at all between a successful poll and the next announcement being due.
    rss = [r for r in requests if r.path.startswith("/rss/")]
    assert all(r.when is not None for r in requests)
    for poll in (r for r in rss if r.status == 200):
        assert poll.when is not None
        quiet_until = calendar.next_announcement(poll.when)
        inside = [r for r in requests if r.when is not None and poll.when < r.when < quiet_until]
        assert inside == [], f"requests after the successful poll at {poll.when}"
    # The first poll after each announcement comes shortly after it is due (00:10 US Eastern).
    # Each poll asks each category once.
    ok_polls = list(dict.fromkeys(r.when.astimezone(EASTERN) for r in rss if r.status == 200 and r.when is not None))
    assert [f"{w:%a %H:%M}" for w in ok_polls] == ["Sun 08:00", "Mon 00:10", "Thu 00:10", "Mon 00:10"]
    assert collections.Counter(r.path for r in rss if r.status == 200) == {"/rss/cs.SD": 4, "/rss/eess.AS": 4}
    # While overdue: every 15 minutes, hourly once stale (six hours after the feed was due); never on Friday to Sunday.
    failed = sorted({r.when for r in rss if r.status == 503 and r.when is not None})  # one time per poll
    assert failed and all(outage[0] <= w < outage[1] for w in failed)
    for a, b in itertools.pairwise(failed):
        due = calendar.announcement_time(calendar.latest_announcement(a) or a.date())
        stale = a - due >= timedelta(hours=6) and calendar.next_announcement(a) > b
        assert b - a >= (timedelta(hours=1) if stale else timedelta(minutes=15)), (a, b)
    assert len(failed) <= 2 * (6 * 4 + 18)
    api = [r for r in requests if r.path.startswith("/api/")]
    listings = [r for r in api if "search_query" in r.query]
    assert len(listings) == 4, "two missed days, two categories, one page each"
    assert all(r.when == eastern(2025, 6, 19, 0, 10) for r in listings)
    assert time.monotonic() - began < 60
