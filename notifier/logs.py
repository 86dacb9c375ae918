"""Log plumbing the command line installs once: a filter that keeps a flood of identical lines from filling a disk.

A failure that repeats in a loop (``accept()`` out of file descriptors, a dead server retried at once) can log the
same line thousands of times a second. :class:`RepeatFilter` lets the first one through and counts the rest for a
window; the count is logged as one summary line when the window has passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

REPEAT_WINDOW = 60.0  # seconds an identical warning or error is not logged again
MAX_TRACKED = 10_000  # distinct lines remembered at once; the oldest is forgotten (and summarised) first


@dataclass(slots=True)
class _Burst:
    started: float
    record: logging.LogRecord
    repeats: int = 0


class RepeatFilter(logging.Filter):
    """A handler's filter: a warning or error whose logger and text repeat those of one logged less than ``window``
    seconds ago is dropped and counted. When the window has passed, the next record through the handler first
    brings a summary, ``<text> (repeated N more times within 60 s)``. Records below ``level`` always pass.
    """

    def __init__(
        self,
        handler: logging.Handler,
        *,
        window: float = REPEAT_WINDOW,
        level: int = logging.WARNING,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._handler = handler
        self.window = window
        self.level = level
        self._max_tracked = max_tracked
        self._clock = clock
        self._bursts: dict[tuple[str, int, str], _Burst] = {}  # oldest first: all windows are equally long
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        with self._lock:
            ended = self._ended(now)
            passes = True
            if record.levelno >= self.level:
                key = (record.name, record.levelno, record.getMessage())
                burst = self._bursts.get(key)
                if burst is None:
                    self._bursts[key] = _Burst(now, record)
                    if len(self._bursts) > self._max_tracked:
                        ended.append(self._bursts.pop(next(iter(self._bursts))))
                else:
                    burst.repeats += 1
                    passes = False
        for burst in ended:
            if burst.repeats:
                self._handler.handle(self._summary(burst))
        return passes

    def _ended(self, now: float) -> list[_Burst]:
        ended: list[_Burst] = []
        while self._bursts:
            key, burst = next(iter(self._bursts.items()))
            if now - burst.started < self.window:
                break
            ended.append(self._bursts.pop(key))
        return ended

    def _summary(self, burst: _Burst) -> logging.LogRecord:
        first = burst.record
        return logging.makeLogRecord(
            {
                "name": first.name,
                "levelno": first.levelno,
                "levelname": first.levelname,
                "msg": "%s (repeated %d more times within %g s)",
                "args": (first.getMessage(), burst.repeats, self.window),
            }
        )
