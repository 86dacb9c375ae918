"""arXiv's announcement calendar (pure: no I/O, no clock).

arXiv announces Sunday to Thursday at 20:00 US Eastern. The RSS feeds roll over shortly after midnight Eastern
and are dated the next day, so the *announcement day* ``d`` used here is the date of the feed and of the mailing:
Monday to Friday, each carrying the announcement made on the evening of ``d - 1 day``. A day has no announcement
when it is a weekend or when arXiv skipped the announcement on the evening before (holidays, see
:data:`SKIPPED_EVENINGS`); on such days the feed is valid but empty.

Submissions: arXiv announces the papers submitted between two cut-offs, 14:00 US Eastern on business days. The
feed for day ``d`` carries the papers submitted after the cut-off of the previous announcement and up to 14:00 on
the last weekday before ``d`` (:func:`submission_window`). This is an approximation: arXiv moves a cut-off now and
then around holidays, and papers put on hold are announced later than their window says.

The holiday table must be updated yearly from https://info.arxiv.org/help/availability.html (source:
arXiv/arxiv-docs ``source/help/availability.md``); arXiv lists the *evenings* it does not announce.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("America/New_York")
CUTOFF_HOUR = 14  # submission deadline, US Eastern, on business days

# Evenings (US Eastern dates) on which arXiv does not announce. "published": listed on arXiv's availability page;
# "fixture": an empty feed observed on the following day; "rule": arXiv's usual pattern (New Year, MLK Day,
# Juneteenth, Independence Day, Labor Day, Thanksgiving, Christmas; a holiday falling on a Friday cancels the
# following Sunday's announcement, as Independence Day did in 2025), not yet confirmed by arXiv. arXiv also skips
# some evenings around Christmas and New Year that it announces late each year; add them when it does.
SKIPPED_EVENINGS: frozenset[date] = frozenset(
    {
        # 2024 (rule)
        date(2024, 1, 1),
        date(2024, 1, 15),
        date(2024, 6, 19),
        date(2024, 7, 4),
        date(2024, 9, 2),
        date(2024, 11, 28),
        date(2024, 12, 25),
        # 2025 (published, except December)
        date(2025, 1, 1),
        date(2025, 1, 20),
        date(2025, 6, 19),
        date(2025, 7, 6),
        date(2025, 9, 1),
        date(2025, 11, 27),
        date(2025, 12, 25),  # rule
        date(2025, 12, 30),  # fixture: the physics feed of Wed 31 Dec 2025 was empty
        # 2026 (rule)
        date(2026, 1, 1),
        date(2026, 1, 19),
        date(2026, 6, 21),  # Juneteenth is a Friday
        date(2026, 7, 5),  # Independence Day observed Friday 3 July
        date(2026, 9, 7),
        date(2026, 11, 26),
        date(2026, 12, 27),  # Christmas is a Friday
        # 2027 (rule)
        date(2027, 1, 3),  # New Year's Day is a Friday
        date(2027, 1, 18),
        date(2027, 6, 20),  # Juneteenth observed Friday 18 June
        date(2027, 7, 5),
        date(2027, 9, 6),
        date(2027, 11, 25),
        date(2027, 12, 26),  # Christmas observed Friday 24 December
    }
)
KNOWN_YEARS = range(2024, 2028)
_SEARCH_LIMIT = 60  # days; no real gap between announcements comes near this


def is_announcement_day(d: date) -> bool:
    """True when the feed dated ``d`` carries an announcement: a weekday, and arXiv announced the evening before."""
    return d.weekday() < 5 and (d - timedelta(days=1)) not in SKIPPED_EVENINGS


def announcement_time(d: date) -> datetime:
    """When the feed for day ``d`` is expected: 00:00 US Eastern on ``d``, as an aware UTC datetime."""
    return datetime.combine(d, time(0), tzinfo=EASTERN).astimezone(UTC)


def next_announcement(after: datetime) -> datetime:
    """The first :func:`announcement_time` strictly after ``after`` (an aware datetime)."""
    _require_aware(after)
    d = after.astimezone(EASTERN).date()
    for _ in range(_SEARCH_LIMIT):
        if is_announcement_day(d) and announcement_time(d) > after:
            return announcement_time(d)
        d += timedelta(days=1)
    raise ValueError(f"no arXiv announcement within {_SEARCH_LIMIT} days after {after.isoformat()}")


def latest_announcement(at: datetime) -> date | None:
    """The most recent announcement day whose feed is due at or before ``at``; None if none in the last 60 days."""
    _require_aware(at)
    d = at.astimezone(EASTERN).date()
    for _ in range(_SEARCH_LIMIT):
        if is_announcement_day(d) and announcement_time(d) <= at:
            return d
        d -= timedelta(days=1)
    return None


def announcement_days_between(a: date, b: date) -> list[date]:
    """Announcement days ``d`` with ``a <= d <= b`` (both ends included), in order; empty when ``a > b``."""
    days: list[date] = []
    d = a
    while d <= b:
        if is_announcement_day(d):
            days.append(d)
        d += timedelta(days=1)
    return days


def previous_announcement(d: date) -> date | None:
    """The last announcement day strictly before ``d``; None if there is none in the 60 days before."""
    for back in range(1, _SEARCH_LIMIT + 1):
        if is_announcement_day(d - timedelta(days=back)):
            return d - timedelta(days=back)
    return None


def submission_cutoff(d: date) -> datetime:
    """The submission deadline of the announcement carried by the feed for ``d``: 14:00 US Eastern on the last
    weekday before ``d`` (Friday for a Monday feed), as an aware UTC datetime."""
    day = d - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return datetime.combine(day, time(CUTOFF_HOUR), tzinfo=EASTERN).astimezone(UTC)


def submission_window(d: date) -> tuple[datetime, datetime]:
    """The submissions the feed for announcement day ``d`` carries: ``(start, end]`` in UTC.

    ``start`` is the cut-off of the previous announcement, so a window after a holiday or a weekend spans every
    business day since; ``end`` is :func:`submission_cutoff` of ``d``.
    """
    end = submission_cutoff(d)
    previous = previous_announcement(d)
    start = submission_cutoff(previous) if previous is not None else end - timedelta(days=1)
    return start, end


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"an aware datetime is required, got naive {moment.isoformat()}")
