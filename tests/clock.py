"""A clock for tests: it says ``now`` until a test moves it (``clock.now += timedelta(...)``)."""

from __future__ import annotations

from datetime import UTC, datetime

MORNING = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)  # Tue 3 Jun 2025, after that day's announcement


class Clock:
    def __init__(self, now: datetime = MORNING) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
