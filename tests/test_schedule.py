"""Schedules in people's own time zones, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notifier.config.schedule import Schedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_daily_schedule_is_due_at_local_time_on_both_sides_of_a_dst_change():
    berlin = Schedule.parse("daily 08:00 Europe/Berlin")
    # Winter: 08:00 CET is 07:00 UTC; summer: 08:00 CEST is 06:00 UTC. DST starts on 29 March 2026.
    assert berlin.next_due(at("2026-03-28T07:30:00+00:00")) == at("2026-03-29T06:00:00+00:00")
    assert berlin.next_due(at("2026-03-27T12:00:00+00:00")) == at("2026-03-28T07:00:00+00:00")


def test_weekly_schedule_lands_on_its_day():
    weekly = Schedule.parse("weekly mon 09:00 America/New_York")
    due = weekly.next_due(at("2026-11-23T15:00:00+00:00"))  # a Monday afternoon in New York
    assert due == at("2026-11-30T14:00:00+00:00")
    assert weekly.next_due(due) == at("2026-12-07T14:00:00+00:00"), "a week later, after the end of DST"


def test_instant_and_defaults():
    assert Schedule.parse("instant").kind == "instant"
    assert str(Schedule.parse("daily 7:05")) == "daily 07:05 UTC"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hourly", "expected 'daily HH:MM TZ'"),
        ("daily 25:00 UTC", "invalid time"),
        ("weekly 09:00 UTC", "needs a day"),
        ("daily 08:00 Nowhere/City", "unknown time zone"),
    ],
)
def test_bad_schedules_say_what_was_expected(text, message):
    with pytest.raises(ValueError, match=message):
        Schedule.parse(text)
