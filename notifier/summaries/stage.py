"""The summarising stage: the owner of the LLM client, the daily budget and the papers given up today.

It asks the LLM for the papers the next digests will carry as rich entries (the planner says which, most-wanted
first), within ``NOTIFIER_LLM_DAILY_LIMIT`` papers per UTC day, counted in the store so that every process and
every ``notifier once`` shares it. Each summary is stored the moment it is made, once per (paper id, version),
so a crash loses none and nothing is asked twice. A paper the LLM could not summarise is given up for the rest of
the UTC day. Nothing here ever fails a digest: the daemon decides how long a digest may wait (its due time plus
``NOTIFIER_LLM_GRACE``), and what is not made by then is shown without a summary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import date, datetime

from notifier.config.settings import Settings
from notifier.metrics import Metrics
from notifier.models import Paper, Summary, SummaryKey
from notifier.outbox.wants import SummaryWants
from notifier.store import Store
from notifier.summaries.client import LlmClient, Usage
from notifier.summaries.summariser import Summariser, SummaryRun

log = logging.getLogger(__name__)


class SummaryStage:
    """Use as ``stage = SummaryStage(settings, store, clock)``, then :meth:`summarise` or :meth:`start`, and
    ``await stage.aclose()`` at the end. With no ``NOTIFIER_LLM_URL`` it is off, and asks nothing."""

    def __init__(
        self, settings: Settings, store: Store, clock: Callable[[], datetime], metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._client: LlmClient | None = None
        self._summariser: Summariser | None = None
        if settings.summaries_enabled:
            self._client = LlmClient.from_settings(settings)
            self._summariser = Summariser(self._client, concurrency=settings.llm_concurrency, metrics=self.metrics)
        self._given_up: dict[SummaryKey, date] = {}  # papers the LLM failed on, and the UTC day it did
        self._limit_logged: date | None = None
        self._task: asyncio.Task[SummaryRun | None] | None = None

    @property
    def enabled(self) -> bool:
        return self._summariser is not None

    @property
    def running(self) -> bool:
        """Whether a background run (:meth:`start`) is still asking the LLM."""
        return self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task[SummaryRun | None] | None:
        """The background run, done or not; None before the first."""
        return self._task

    def today(self) -> date:
        return self.clock().date()

    def allowance(self) -> int:
        """How many more papers may be sent to the LLM today (UTC), by every process together."""
        return max(0, self.settings.llm_daily_limit - self.store.llm_usage(self.today()).asked)

    def missing(self, wants: SummaryWants) -> list[Paper]:
        """The wanted papers, most-wanted first, that have no stored summary and were not given up today."""
        if not self.enabled or not wants.papers:
            return []
        stored = self.store.summaries(wants.papers)
        today = self.today()
        gone = {key for key, day in self._given_up.items() if day == today}
        return wants.ordered(leaving_out=stored.keys() | gone)

    async def summarise(self, papers: Sequence[Paper], *, within: float | None) -> SummaryRun | None:
        """Ask the LLM for ``papers`` (most-wanted first), at most ``within`` seconds from now (None: no limit),
        storing each summary as it is made; None when the stage is off or there is nothing to ask."""
        if self._summariser is None or not papers:
            return None
        allowance = self.allowance()
        if allowance < len(papers):
            self._log_limit(len(papers) - allowance)
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        affiliations = self.store.affiliations(paper.arxiv_id for paper in papers)
        run = await self._summariser.run(
            papers,
            affiliations,
            allowance=allowance,
            deadline=deadline,
            on_summary=self._made,
            on_failure=self._failed,
        )
        log.info(
            "summaries: %d made, %d failed, %d left for lack of budget, %d not reached in time (%d prompt and %d"
            " completion tokens)",
            len(run.made),
            len(run.failed),
            run.skipped,
            run.unreached,
            run.prompt_tokens,
            run.completion_tokens,
        )
        return run

    def start(self, papers: Sequence[Paper]) -> None:
        """Summarise ``papers`` in a background task, unless one is running already; :attr:`task` is it."""
        if self.running or not self.enabled or not papers:
            return
        self._task = asyncio.create_task(self._background(list(papers)))

    async def _background(self, papers: list[Paper]) -> SummaryRun | None:
        try:
            return await self.summarise(papers, within=None)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store or the client itself: the next tick tries again, and digests go on
            log.exception("summarising stopped; the digests go out without the summaries not made")
            return None

    def _made(self, summary: Summary, usage: Usage) -> None:
        self.store.save_summaries([summary], self.clock())
        self._count(usage, made=1)

    def _failed(self, paper: Paper, _reason: str, usage: Usage) -> None:
        self._given_up[paper.key] = self.today()
        self._count(usage, failed=1)

    def _count(self, usage: Usage, *, made: int = 0, failed: int = 0) -> None:
        """Add one paper asked, and what it cost, to the day's usage in the store (the daily limit reads it)."""
        self.store.record_llm_usage(
            self.today(),
            asked=1,
            made=made,
            failed=failed,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    def _log_limit(self, left: int) -> None:
        today = self.today()
        if self._limit_logged != today:
            self._limit_logged = today
            log.warning(
                "the daily limit of %d summaries (NOTIFIER_LLM_DAILY_LIMIT) is reached: %d papers are shown without"
                " a summary today",
                self.settings.llm_daily_limit,
                left,
            )

    async def aclose(self) -> None:
        """Stop a background run (what it made is stored) and close the client."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        if self._client is not None:
            await self._client.aclose()
            self._client = None
