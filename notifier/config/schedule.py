"""Digest schedules: ``daily HH:MM TZ``, ``weekly DAY HH:MM TZ`` and ``instant``; pure time arithmetic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notifier.models import ScheduleKind

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SCHEDULE = re.compile(
    r"^\s*(?:(?P<instant>instant)|(?P<kind>daily|weekly)\s+(?:(?P<day>[a-z]{3})[a-z]*\s+)?"
    r"(?P<hh>\d{1,2}):(?P<mm>\d{2})(?:\s+(?P<tz>\S+))?)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a subscriber's digest is due. ``weekday`` is 0 (Monday) to 6, only for weekly schedules."""

    kind: ScheduleKind
    at: time = time(8, 0)
    zone: str = "UTC"
    weekday: int | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse a schedule; raises ValueError with what was expected."""
        found = _SCHEDULE.match(text)
        if found is None:
            raise ValueError(
                f"invalid schedule {text!r}; expected 'daily HH:MM TZ', 'weekly DAY HH:MM TZ' or 'instant'"
            )
        if found["instant"]:
            return cls(kind="instant")
        kind: ScheduleKind = "weekly" if found["kind"].lower() == "weekly" else "daily"
        hour, minute = int(found["hh"]), int(found["mm"])
        if hour > 23 or minute > 59:
            raise ValueError(f"invalid time {found['hh']}:{found['mm']} in schedule {text!r}")
        zone = found["tz"] or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {zone!r} in schedule {text!r}; use an IANA name such as Europe/Berlin"
            ) from exc
        weekday: int | None = None
        if kind == "weekly":
            day = (found["day"] or "").lower()
            if day not in WEEKDAYS:
                raise ValueError(f"weekly schedule {text!r} needs a day: one of {', '.join(WEEKDAYS)}")
            weekday = WEEKDAYS.index(day)
        elif found["day"]:
            raise ValueError(f"daily schedule {text!r} takes no day")
        return cls(kind=kind, at=time(hour, minute), zone=zone, weekday=weekday)

    def __str__(self) -> str:
        if self.kind == "instant":
            return "instant"
        day = f"{WEEKDAYS[self.weekday]} " if self.weekday is not None else ""
        return f"{self.kind} {day}{self.at:%H:%M} {self.zone}"

    def next_due(self, after: datetime) -> datetime:
        """The first due time strictly after ``after`` (aware), in UTC; DST-correct for the schedule's zone."""
        if self.kind == "instant":
            return after.astimezone(UTC)
        zone = ZoneInfo(self.zone)
        local = after.astimezone(zone)
        day = local.date()
        for offset in range(8 + 1):
            candidate_day = day + timedelta(days=offset)
            if self.weekday is not None and candidate_day.weekday() != self.weekday:
                continue
            candidate = datetime.combine(candidate_day, self.at, tzinfo=zone)
            # A wall time that falls in a DST gap is normalised by a round trip through UTC.
            candidate = candidate.astimezone(UTC)
            if candidate > after:
                return candidate
        raise AssertionError("a schedule is due at least once a week")  # pragma: no cover
