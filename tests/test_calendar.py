"""arXiv's announcement calendar: weekdays, holidays, DST and the helpers built on them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from notifier.arxiv import calendar
from notifier.arxiv.calendar import (
    announcement_days_between,
    announcement_time,
    is_announcement_day,
    latest_announcement,
    next_announcement,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2025, 6, 3), True),  # Tuesday of the fixture feeds
        (date(2025, 6, 2), True),  # Monday: Sunday evening's announcement
        (date(2025, 6, 7), False),  # Saturday
        (date(2025, 6, 8), False),  # Sunday
        (date(2025, 12, 31), False),  # the empty holiday feed
        (date(2025, 11, 28), False),  # no announcement on Thanksgiving evening
        (date(2025, 11, 27), True),  # Thanksgiving's own feed carries Wednesday evening's announcement
        (date(2025, 7, 7), False),  # arXiv skipped Sunday 6 July 2025
        (date(2025, 1, 21), False),  # MLK Day evening 2025
        (date(2026, 1, 5), True),
    ],
)
def test_is_announcement_day(day, expected):
    assert is_announcement_day(day) is expected


def test_every_table_entry_is_an_evening_arxiv_would_otherwise_announce():
    for evening in calendar.SKIPPED_EVENINGS:
        assert evening.year in calendar.KNOWN_YEARS or evening.year == 2028
        assert evening.weekday() in (0, 1, 2, 3, 6), evening  # Sunday to Thursday


def test_announcement_time_follows_dst():
    assert announcement_time(date(2025, 6, 3)) == utc(2025, 6, 3, 4, 0)  # EDT
    assert announcement_time(date(2025, 12, 30)) == utc(2025, 12, 30, 5, 0)  # EST
    assert announcement_time(date(2025, 3, 10)) == utc(2025, 3, 10, 4, 0)  # Monday after spring forward
    assert announcement_time(date(2025, 11, 3)) == utc(2025, 11, 3, 5, 0)  # Monday after fall back
    assert announcement_time(date(2025, 6, 3)).tzinfo is UTC


def test_next_announcement():
    assert next_announcement(utc(2025, 6, 3, 3, 59)) == utc(2025, 6, 3, 4, 0)
    assert next_announcement(utc(2025, 6, 3, 4, 0)) == utc(2025, 6, 4, 4, 0)  # strictly after
    assert next_announcement(utc(2025, 6, 6, 12, 0)) == utc(2025, 6, 9, 4, 0)  # Friday -> Monday
    assert next_announcement(utc(2025, 12, 30, 12, 0)) == utc(2026, 1, 1, 5, 0)  # skips the 31st
    assert next_announcement(utc(2025, 3, 7, 12, 0)) == utc(2025, 3, 10, 4, 0)  # across spring forward
    local = datetime(2025, 6, 2, 23, 30, tzinfo=timezone(timedelta(hours=-4)))
    assert next_announcement(local) == utc(2025, 6, 3, 4, 0)


def test_latest_announcement():
    assert latest_announcement(utc(2025, 6, 3, 4, 0)) == date(2025, 6, 3)
    assert latest_announcement(utc(2025, 6, 3, 3, 59)) == date(2025, 6, 2)
    assert latest_announcement(utc(2025, 6, 8, 12, 0)) == date(2025, 6, 6)  # Sunday
    assert latest_announcement(utc(2025, 12, 31, 12, 0)) == date(2025, 12, 30)
    assert latest_announcement(utc(2025, 11, 2, 6, 0)) == date(2025, 10, 31)  # fall-back Sunday


def test_announcement_days_between_is_inclusive():
    assert announcement_days_between(date(2025, 12, 29), date(2026, 1, 2)) == [
        date(2025, 12, 29),
        date(2025, 12, 30),
        date(2026, 1, 1),  # Wednesday evening's announcement is dated New Year's Day
    ]
    assert announcement_days_between(date(2025, 6, 2), date(2025, 6, 8)) == [date(2025, 6, d) for d in range(2, 7)]
    assert announcement_days_between(date(2025, 6, 8), date(2025, 6, 2)) == []


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="aware"):
        next_announcement(datetime(2025, 6, 3))
    with pytest.raises(ValueError, match="aware"):
        latest_announcement(datetime(2025, 6, 3))
