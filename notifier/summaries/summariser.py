"""Summaries for a list of papers, fail-open: within a budget of papers, a concurrency and a deadline.

Papers come most-wanted first. The first ``allowance`` of them are asked for (the rest are skipped by the daily
budget), at most ``concurrency`` at once. A paper whose request fails for a reason that may pass (429, 5xx, a timeout,
a dropped connection, an invalid answer) is asked again after an exponential backoff with jitter, or after the
server's Retry-After, which then holds back every worker. A refusal (401, 403, 404, another 4xx) is not retried; a
refusal that every request would get (a wrong key, an unknown model) stops the run.

Nothing runs past the deadline: a retry whose wait would end after it is not made, requests in flight are cancelled
when it comes, and papers not reached by then are left for a later run. A paper given up is logged once, at WARNING.
A failure is never raised: what was made and what was not is the :class:`SummaryRun`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from notifier.errors import LlmRateLimitError, LlmRefusedError, SummaryError
from notifier.metrics import Metrics
from notifier.models import Paper, Summary, SummaryKey
from notifier.summaries.client import LlmClient, Usage

log = logging.getLogger(__name__)

ATTEMPTS = 3
BACKOFF = 1.0  # seconds before the second attempt; doubled for each one after
MAX_WAIT = 120.0  # a Retry-After longer than this gives the paper up rather than wait

OnSummary = Callable[[Summary, Usage], None]
OnFailure = Callable[[Paper, str, Usage], None]


@dataclass(slots=True)
class SummaryRun:
    """What one run made and did not make. Tokens include those of failed requests."""

    made: list[Summary] = field(default_factory=list)
    failed: list[tuple[SummaryKey, str]] = field(default_factory=list)  # (paper, why it was given up)
    skipped: int = 0  # papers over the allowance: not asked
    unreached: int = 0  # papers within the allowance not asked before the deadline (or after a refusal of all)
    asked: int = 0  # papers asked for at least once
    requests: int = 0  # requests sent, retries included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds from a paper's first request to its summary


@dataclass(slots=True)
class _Shared:
    """What the workers of one run share."""

    queue: deque[Paper]
    affiliations: Mapping[str, tuple[str, ...]]
    deadline: float | None  # in clock time
    hard_deadline: float | None  # the same moment in loop time
    result: SummaryRun
    on_summary: OnSummary | None
    on_failure: OnFailure | None
    paused_until: float = 0.0  # clock time before which no request is sent (a Retry-After)
    stopped: str | None = None  # why no more papers are asked


class Summariser:
    """Runs summary requests through ``client``; one instance may serve many runs (one at a time or several)."""

    def __init__(
        self,
        client: LlmClient,
        *,
        concurrency: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        max_wait: float = MAX_WAIT,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1 or attempts < 1:
            raise ValueError("concurrency and attempts must be at least 1")
        self.client = client
        self.concurrency = concurrency
        self.metrics = metrics
        self._clock = clock
        self.attempts = attempts
        self.backoff = backoff
        self.max_wait = max_wait
        self._rng = rng or random.Random()

    def clock(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(
        self,
        papers: Sequence[Paper],
        affiliations: Mapping[str, tuple[str, ...]],
        *,
        allowance: int,
        deadline: float | None,
        on_summary: OnSummary | None = None,
        on_failure: OnFailure | None = None,
    ) -> SummaryRun:
        """Summarise the first ``allowance`` of ``papers`` (most-wanted first; ``affiliations`` by arXiv id) before
        ``deadline`` (clock time, None for none). ``on_summary`` is called as each summary is made, ``on_failure``
        as each paper is given up. Cancelling the run cancels its requests."""
        wanted: dict[SummaryKey, Paper] = {}
        for paper in papers:
            wanted.setdefault((paper.arxiv_id, paper.version), paper)
        distinct = list(wanted.values())
        chosen = distinct[: max(allowance, 0)]
        result = SummaryRun(skipped=len(distinct) - len(chosen))
        if result.skipped:
            log.info("%d of %d summaries skipped: over the daily budget", result.skipped, len(distinct))
        hard_deadline = None
        if deadline is not None:
            hard_deadline = asyncio.get_running_loop().time() + (deadline - self.clock())
        shared = _Shared(deque(chosen), affiliations, deadline, hard_deadline, result, on_summary, on_failure)
        workers = [asyncio.create_task(self._work(shared)) for _ in range(min(self.concurrency, len(chosen)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        result.unreached = len(shared.queue)
        if result.unreached:
            why = shared.stopped or "the deadline came first"
            log.warning("%d summaries not asked for: %s", result.unreached, why)
        if self.metrics is not None and result.skipped + result.unreached:
            self.metrics.record_summary("skipped", count=result.skipped + result.unreached)
        return result

    def _time_left(self, shared: _Shared) -> float | None:
        return None if shared.deadline is None else shared.deadline - self.clock()

    async def _work(self, shared: _Shared) -> None:
        while shared.queue and shared.stopped is None:
            left = self._time_left(shared)
            if left is not None and left <= 0:
                return
            if left is not None and shared.paused_until - self.clock() >= left:
                shared.stopped = "rate limited (429) until after the deadline"
                return
            await self._summarise(shared, shared.queue.popleft())

    async def _summarise(self, shared: _Shared, paper: Paper) -> None:
        result = shared.result
        result.asked += 1
        started = self.clock()
        spent = Usage()
        attempt = 0
        while True:
            wait = shared.paused_until - self.clock()
            if wait > 0:
                left = self._time_left(shared)
                if left is not None and wait >= left:
                    self._give_up(shared, paper, attempt, "rate limited (429): no time left to wait", spent)
                    return
                await asyncio.sleep(wait)
            attempt += 1
            result.requests += 1
            try:
                async with asyncio.timeout_at(shared.hard_deadline):
                    summary, usage = await self.client.summarise(paper, shared.affiliations.get(paper.arxiv_id, ()))
            except SummaryError as exc:
                spent += Usage(exc.prompt_tokens, exc.completion_tokens)
                error = exc
            except TimeoutError:
                self._give_up(shared, paper, attempt, "cut at the deadline", spent)
                return
            else:
                spent += usage
                self._made(shared, summary, spent, self.clock() - started)
                return
            delay = self._delay(attempt, error)
            if delay is None:
                if isinstance(error, LlmRefusedError) and error.affects_all and shared.stopped is None:
                    shared.stopped = f"the LLM server refused a request: {error}"
                self._give_up(shared, paper, attempt, str(error), spent)
                return
            left = self._time_left(shared)
            if left is not None and delay >= left:
                self._give_up(shared, paper, attempt, f"{error}; no time left to retry", spent)
                return
            if isinstance(error, LlmRateLimitError) and error.retry_after is not None:
                shared.paused_until = max(shared.paused_until, self.clock() + delay)
            log.debug(
                "summary of %s: attempt %d failed (%s); retrying in %.1f s", paper.versioned_id, attempt, error, delay
            )
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, error: SummaryError) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when there is to be none."""
        if not error.retryable or attempt >= self.attempts:
            return None
        if isinstance(error, LlmRateLimitError) and error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_wait else None
        return self.backoff * 2.0 ** (attempt - 1) * self._rng.uniform(0.75, 1.25)

    def _made(self, shared: _Shared, summary: Summary, spent: Usage, latency: float) -> None:
        result = shared.result
        result.made.append(summary)
        result.latencies.append(latency)
        result.prompt_tokens += spent.prompt_tokens
        result.completion_tokens += spent.completion_tokens
        if self.metrics is not None:
            self.metrics.record_summary(
                "made", latency=latency, prompt_tokens=spent.prompt_tokens, completion_tokens=spent.completion_tokens
            )
        if shared.on_summary is not None:
            shared.on_summary(summary, spent)

    def _give_up(self, shared: _Shared, paper: Paper, attempts: int, reason: str, spent: Usage) -> None:
        result = shared.result
        plural = "" if attempts == 1 else "s"
        log.warning("summary of %s given up after %d attempt%s: %s", paper.versioned_id, attempts, plural, reason)
        result.failed.append(((paper.arxiv_id, paper.version), reason))
        result.prompt_tokens += spent.prompt_tokens
        result.completion_tokens += spent.completion_tokens
        if self.metrics is not None:
            self.metrics.record_summary(
                "failed", prompt_tokens=spent.prompt_tokens, completion_tokens=spent.completion_tokens
            )
        if shared.on_failure is not None:
            shared.on_failure(paper, reason, spent)
