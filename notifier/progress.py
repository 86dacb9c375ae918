"""Progress of a long step: compiling the rules, planning the digests, sending the deliveries.

With 100,000 subscribers a step takes minutes, and a silent minute looks like a hang. :class:`Progress` logs a line
every :data:`LOG_EVERY` seconds with the count, the rate and what is left; when standard error is a terminal it also
draws a bar there (tqdm), which the log lines then make way for. A step that ends before the first interval logs
nothing but its closing line, and only when it took longer than :data:`QUIET_UNDER`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Never

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY = 5.0  # seconds between progress lines
QUIET_UNDER = 2.0  # seconds: a step shorter than this logs no closing line


class Progress:
    """``with Progress("planning", total=n, unit="digests") as progress: ... progress.advance(1)``.

    ``total`` may be None when it is not known in advance; the line then has no percentage or time left.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        *,
        unit: str = "items",
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self._clock = clock
        self._started = clock()
        self._logged = self._started
        show_bar = sys.stderr.isatty() if bar is None else bar
        self._bar: tqdm[Never] | None = (
            tqdm(total=total, desc=what, unit=f" {unit}", leave=False, dynamic_ncols=True) if show_bar else None
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close(finished=exc_type is None)

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more done; log a line when :data:`LOG_EVERY` has passed since the last."""
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        now = self._clock()
        if now - self._logged >= LOG_EVERY:
            self._logged = now
            log.info("%s: %s", self.what, self.line(now))

    def line(self, now: float | None = None) -> str:
        """``1,200 of 10,000 digests, 240/s, about 37 s left`` (what a progress line says)."""
        elapsed = max((now if now is not None else self._clock()) - self._started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.done:,} {self.unit}" if self.total is None else f"{self.done:,} of {self.total:,} {self.unit}"
        text += f", {rate:,.1f}/s" if rate < 10 else f", {rate:,.0f}/s"
        if self.total is not None and rate > 0 and self.done < self.total:
            text += f", about {(self.total - self.done) / rate:,.0f} s left"
        return text

    def close(self, *, finished: bool = True) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elapsed = self._clock() - self._started
        if elapsed >= QUIET_UNDER:
            state = "done" if finished else "stopped"
            log.info("%s %s: %s in %.1f s", self.what, state, self.line(), elapsed)
