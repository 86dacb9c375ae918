"""Prometheus metrics of one running instance, in a registry of its own (never the process-global one).

Counters and the latency histogram are updated where things happen (polls, plans, sends). The outbox depth, the
time each feed last brought new papers and how many subscribers' digests are failing are read from the store when
``/metrics`` is scraped, so they are right after a restart too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from notifier.errors import StoreError
from notifier.models import DELIVERY_STATES, DeliveryState

log = logging.getLogger(__name__)

# From a few seconds (instant subscribers, a healthy server) to the 24 hours after which a delivery is given up.
LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
# From a quick local model to a paper that waited out a Retry-After and retried.
SUMMARY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
SUMMARY_OUTCOMES = ("made", "failed", "skipped")


class Readings(Protocol):
    """What the gauges read from the store at each scrape (:class:`notifier.store.Store` has them)."""

    def delivery_counts(self) -> Mapping[DeliveryState, int]: ...

    def last_new_items(self) -> Mapping[str, datetime]: ...

    def plan_failures(self) -> Mapping[str, object]: ...


class PollCounts(Protocol):
    """What the poll counters read from one poll's outcome (:class:`notifier.arxiv.poller.PollOutcome` has it)."""

    @property
    def feed_key(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def new_items(self) -> int: ...


class _StoreGauges:
    """Gauges computed at scrape time from the store."""

    def __init__(self, store: Readings):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.store.delivery_counts()
            last_new = self.store.last_new_items()
            failing = len(self.store.plan_failures())
        except StoreError as exc:
            log.warning("metrics: cannot read the store: %s", exc)
            return
        depth = GaugeMetricFamily("notifier_outbox_deliveries", "Deliveries in the outbox by state", labels=["state"])
        for state in DELIVERY_STATES:
            depth.add_metric([state], counts.get(state, 0))
        yield depth
        announced = GaugeMetricFamily(
            "notifier_feed_last_announcement_timestamp_seconds",
            "Unix time at which a poll of the feed last brought new papers",
            labels=["feed"],
        )
        for feed, moment in sorted(last_new.items()):
            announced.add_metric([feed], moment.timestamp())
        yield announced
        yield GaugeMetricFamily(
            "notifier_subscribers_failing",
            "Subscribers whose last digest could not be planned or rendered (notifier status lists them)",
            value=failing,
        )


class Metrics:
    """Every metric of the daemon; ``render()`` is the body of ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._store_gauges: _StoreGauges | None = None
        self.feed_polls = Counter(
            "notifier_feed_polls", "Feed polls by feed and outcome", ["feed", "outcome"], registry=self.registry
        )
        self.papers_ingested = Counter(
            "notifier_papers_ingested", "Feed items new to the store", registry=self.registry
        )
        self.matches = Counter("notifier_matches", "Papers matched into digests", registry=self.registry)
        self.digests = Counter("notifier_digests", "Digests written to the outbox", registry=self.registry)
        self.plan_failures = Counter(
            "notifier_plan_failures",
            "Digests that could not be planned or rendered (each failed attempt of one subscriber's digest)",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "notifier_deliveries",
            "Delivery attempts by channel and outcome (sent, retry, failed)",
            ["channel", "state"],
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "notifier_delivery_latency_seconds",
            "Time from a delivery's creation in the outbox to its acceptance by the channel",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.summaries = Counter(
            "notifier_summaries",
            "Papers wanted with an LLM summary, by outcome: made, failed (given up), skipped (not asked: over the "
            "daily budget, or the deadline came first)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in SUMMARY_OUTCOMES:
            self.summaries.labels(outcome)
        self.summary_latency = Histogram(
            "notifier_summary_latency_seconds",
            "Time from a paper's first LLM request to its summary, retries included",
            buckets=SUMMARY_BUCKETS,
            registry=self.registry,
        )
        self.llm_tokens = Counter(
            "notifier_llm_tokens",
            "Tokens the LLM server reported for summary requests (failed ones included), by kind: prompt, completion",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("prompt", "completion"):
            self.llm_tokens.labels(kind)

    def watch(self, store: Readings) -> None:
        """Read the outbox depth and feed freshness from ``store`` at each scrape."""
        if self._store_gauges is not None:
            self.registry.unregister(self._store_gauges)
        self._store_gauges = _StoreGauges(store)
        self.registry.register(self._store_gauges)

    def record_polls(self, outcomes: Iterable[PollCounts]) -> None:
        for outcome in outcomes:
            self.feed_polls.labels(outcome.feed_key, outcome.status).inc()
            self.papers_ingested.inc(outcome.new_items)

    def record_digest(self, papers: int) -> None:
        self.digests.inc()
        self.matches.inc(papers)

    def record_plan_failures(self, count: int) -> None:
        self.plan_failures.inc(count)

    def record_delivery(self, channel: str, state: str, latency: timedelta | None = None) -> None:
        self.deliveries.labels(channel, state).inc()
        if latency is not None:
            self.delivery_latency.observe(max(latency.total_seconds(), 0.0))

    def record_summary(
        self,
        outcome: str,
        *,
        count: int = 1,
        latency: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """``count`` papers with ``outcome`` (made, failed or skipped), and what their requests cost."""
        self.summaries.labels(outcome).inc(count)
        if latency is not None:
            self.summary_latency.observe(max(latency, 0.0))
        self.llm_tokens.labels("prompt").inc(prompt_tokens)
        self.llm_tokens.labels("completion").inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
