"""The daemon: owns the store, the HTTP session and the channels, and runs the cycle and the loop.

One cycle is poll -> enrich -> embed -> summarise -> plan (match, render, write the outbox) -> send. ``run`` repeats
it: it polls shortly after each expected arXiv announcement (more often while one is overdue), plans digests as their
schedules come due, retries deliveries when their time comes, re-reads subscribers.yaml when it changes (or on
SIGHUP) and keeps the last good config when an edit is broken, and stops cleanly on SIGTERM/SIGINT (as ``once``
does: :func:`until_signalled`).

A poll, with its backfills and API look-ups, stays within ``NOTIFIER_POLL_TIMEOUT`` seconds in all (a time budget of
the politeness gate). ``run`` polls in a task of its own, one poll at a time, and keeps sending while it runs, so a
stalled arXiv never holds up digests that are due; it plans again as soon as the poll is over.

With an LLM configured, the papers the next digests show as rich entries are summarised right after each poll,
in a task of their own. A due digest whose summaries are still being made waits for them, but never more than
``NOTIFIER_LLM_GRACE`` seconds: then it goes out with the summaries there are, and the rest are never sent as a
second message.

With an embedding model configured, the papers ranking will need (the corpus window's, and those subscribers like or
dislike) are embedded right after each poll, those not embedded before; a failure is one warning, and the
subscribers whose papers are not all embedded are ranked by TF-IDF.

Poll, enrich, plan and send each run with the heap they found left out of the garbage collector's work, and with no
full collection, until the last of them ends (:func:`~notifier.heap.frozen`): a big config and the caches of a plan
would otherwise be walked again by every full collection, to find no garbage.

Several daemons may share one PostgreSQL database: the one that holds the store's lead polls, enriches and plans,
and every daemon sends (claiming deliveries, so each is sent once). When the leader dies, another takes the lead
at its next tick. With SQLite there is one daemon, and it always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp

from notifier.arxiv.backfill import backfill
from notifier.arxiv.enrich import enrich_papers
from notifier.arxiv.gate import PoliteGate, user_agent
from notifier.arxiv.likes import refresh_likes
from notifier.arxiv.likes import sources as like_sources
from notifier.arxiv.poller import FeedHealth, Poller, PollOutcome
from notifier.channels.router import Channels
from notifier.config.last_good import load_and_keep
from notifier.config.settings import Settings
from notifier.config.subscribers import Config, Subscriber
from notifier.embeddings.stage import EmbeddingRun, EmbeddingStage
from notifier.errors import ConfigError, NotifierError, StoreError
from notifier.heap import frozen
from notifier.metrics import Metrics
from notifier.outbox.planner import Planner, PlanReport
from notifier.outbox.sender import Sender, SendReport
from notifier.render.pool import until_rendered
from notifier.render.renderer import Renderer
from notifier.store import Store, open_store
from notifier.store.rows import PruneReport
from notifier.summaries.stage import SummaryStage
from notifier.summaries.summariser import SummaryRun
from notifier.web.feedback import FeedbackLinks
from notifier.web.server import HttpServer
from notifier.web.unsubscribe import SECRET_KEY, UnsubscribeLinks

log = logging.getLogger(__name__)

TICK = timedelta(seconds=10)
SHUTDOWN_GRACE = 5.0
LEAD = "poll"  # the lead that polls, enriches and plans
LEAD_WAIT = 5.0  # seconds ``once`` tries to take the lead before it only sends
PRUNE_EVERY = timedelta(days=1)  # how often ``run`` prunes what the retention period no longer keeps
PLAN_SLICE = 0.05  # seconds of planning between two hand-backs of the event loop

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CycleReport:
    polls: list[PollOutcome] = field(default_factory=list)
    plan: PlanReport = field(default_factory=PlanReport)
    sent: SendReport = field(default_factory=SendReport)
    stopped: bool = False  # a signal stopped the cycle; what it did not send goes out at the next run
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time: poll, enrich, plan, send, prune

    def timing(self) -> str:
        """``poll 3.1 s, enrich 0.4 s, plan 12.0 s, send 5.2 s, prune 0.0 s`` (the stages that ran)."""
        return ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.seconds.items()) or "no stage"


class _StageTimer:
    """``with timer("plan"): ...`` adds the block's wall time to ``seconds["plan"]``."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.monotonic() - started


class Notifier:
    """One running instance. Use as ``async with Notifier(settings, config) as app: await app.cycle()``."""

    def __init__(
        self,
        settings: Settings,
        config: Config,
        *,
        clock: Callable[[], datetime] = utcnow,
        recover_interrupted: bool = False,
    ):
        """``recover_interrupted``: this process sends (``run``, ``once``, ``retry``) and holds the data
        directory's lock (:mod:`notifier.lock`), so no other sender is alive on a SQLite store and deliveries left
        mid-send are sent again at once; commands that only look (``status``, ``preview``) leave them alone."""
        self.recover_interrupted = recover_interrupted
        self.settings = settings
        self.config = config
        self.clock = clock
        self.config_error: str | None = None
        self.metrics = Metrics()
        self._config_mtime = _mtime(settings)
        self._store: Store | None = None
        self._leading: bool | None = None  # None until the first tick asks
        self._session: aiohttp.ClientSession | None = None
        self._channels: Channels | None = None
        self._polling: asyncio.Task[datetime] | None = None  # the poll ``run`` runs beside its ticks
        self._pruned_at: datetime | None = None  # when this process last pruned the store
        self._holding: dict[str, datetime] = {}  # subscriber -> since when its due digest waits for summaries

    async def __aenter__(self) -> Notifier:
        try:
            self._store = open_store(self.settings.database_url or self.settings.database)
            if self.recover_interrupted:
                self._store.recover_interrupted(self.clock())
            self._session = aiohttp.ClientSession()
            self._channels = Channels(self.settings, self._session)
            secret = self._store.secret(SECRET_KEY)
            self.unsubscribe_links = UnsubscribeLinks(secret, self.settings.public_url)
            self.feedback_links = FeedbackLinks(secret, self.settings.public_url)
        except BaseException:
            await self.aclose()
            raise
        self.gate = PoliteGate(
            self._session,
            min_interval=self.settings.min_request_interval,
            user_agent=user_agent(self.settings.contact),
            timeout=self.settings.request_timeout,
            max_bytes=self.settings.max_feed_bytes,
        )
        self.poller = Poller(self._store, self.gate, self.settings, self.clock)
        self.metrics.watch(self._store)
        self.planner = Planner(
            self._store,
            Renderer(self.settings.templates),
            self.settings,
            unsubscribe_url=self.unsubscribe_links.url if self.settings.public_url else None,
            feedback_urls=self.feedback_links.urls if self.settings.public_url else None,
            metrics=self.metrics,
        )
        self.sender = Sender(
            self._store,
            self._channels,
            self.clock,
            metrics=self.metrics,
            lease=timedelta(seconds=self.settings.lease_seconds),
        )
        self.summaries = SummaryStage(self.settings, self._store, self.clock, self.metrics)
        self.embeddings = EmbeddingStage(self.settings, self._store, self.clock)
        self._store.register_subscribers((s.name for s in self.config.subscribers), self.clock())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if getattr(self, "summaries", None) is not None:
            await self.summaries.aclose()
        if getattr(self, "embeddings", None) is not None:
            await self.embeddings.aclose()
        if self._channels is not None:
            await self._channels.aclose()
            self._channels = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def feed_health(self, feed_key: str, now: datetime) -> FeedHealth:
        """How the feed ``feed_key`` has been doing, as of ``now``."""
        return self.poller.health(feed_key, now)

    @property
    def store(self) -> Store:
        assert self._store is not None, "use Notifier as an async context manager"
        return self._store

    @contextlib.contextmanager
    def poll_budget(self) -> Iterator[None]:
        """Every request to arXiv made inside the block shares the poll's time budget (``NOTIFIER_POLL_TIMEOUT``)."""
        seconds = self.settings.poll_timeout
        with self.gate.time_budget(seconds, f"the poll's time budget of {seconds:g}s (NOTIFIER_POLL_TIMEOUT)"):
            yield

    async def poll(self) -> list[PollOutcome]:
        """Poll every followed category's feed, then recover through the API what the feeds missed (an item cap,
        downtime), within the poll's time budget: a feed the budget does not reach is an error, polled first the
        next time."""
        with frozen(), self.poll_budget():
            outcomes = await self.poller.poll(self.config.categories)
            self.metrics.record_polls(outcomes)
            await backfill(self.store, self.gate, self.settings, outcomes, self.clock)
        return outcomes

    async def enrich(self, *, force: bool) -> int:
        """Fetch comments and journal references for the papers the next plan will send (fail-open)."""
        with frozen():
            ids = self.planner.papers_to_enrich(self.config, self.clock(), force=force)
            return await enrich_papers(self.store, self.gate, self.settings.arxiv_api_url, ids, self.clock)

    async def look_up_likes(self) -> None:
        """Fetch the metadata of the papers subscribers like (ids, authors' papers, BibTeX entries) that the store
        has not had for a week, in a few API requests (fail-open: what is cached stays in use)."""
        ranked = [subscriber for subscriber in self.config.subscribers if subscriber.likes or subscriber.dislikes]
        if ranked:
            await refresh_likes(self.store, self.gate, self.settings.arxiv_api_url, ranked, self.clock())

    async def embed(self) -> EmbeddingRun | None:
        """Embed what ranking will need and the store has no vector for, with an embedding model set (fail-open:
        a failure is one warning, and ranking falls back to TF-IDF)."""
        run = await self.embeddings.embed(self.config.subscribers)
        if run is not None:
            self.planner.rankings.embedding_error = run.error
        return run

    async def summarise(self, *, force: bool, only: Subscriber | None = None) -> SummaryRun | None:
        """Summarise the papers the rich sections of the due digests (every digest when ``force``; ``only``'s
        when given) will carry, waiting at most ``NOTIFIER_LLM_GRACE`` seconds (``once`` and ``preview``)."""
        if not self.summaries.enabled:
            return None
        wants = self.planner.papers_to_summarise(self.config, self.clock(), force=force, only=only)
        return await self.summaries.summarise(self.summaries.missing(wants), within=self.settings.llm_grace)

    def summarise_ahead(self) -> None:
        """Start summarising, in the background, the papers every subscriber's next digest will show as rich
        entries (right after a poll, so that the summaries are made before the digests are due)."""
        if self.summaries.enabled and not self.summaries.running:
            wants = self.planner.papers_to_summarise(self.config, self.clock(), force=True)
            self.summaries.start(self.summaries.missing(wants))

    def waiting_for_summaries(self) -> frozenset[str]:
        """The due subscribers whose digests wait for summaries being made: summarising them has started (here,
        if it had not) and their grace (``NOTIFIER_LLM_GRACE`` from when they first waited) has not run out."""
        if not self.summaries.enabled:
            return frozenset()
        now = self.clock()
        wants = self.planner.papers_to_summarise(self.config, now)
        missing = self.summaries.missing(wants)
        if missing and not self.summaries.running and self.summaries.allowance() > 0:
            self.summaries.start(missing)
        if not self.summaries.running:
            self._holding.clear()
            return frozenset()
        grace = timedelta(seconds=self.settings.llm_grace)
        waiting = wants.subscribers_waiting_for(paper.key for paper in missing)
        self._holding = {name: self._holding.get(name, now) for name in waiting}
        return frozenset(name for name, since in self._holding.items() if now < since + grace)

    async def plan(
        self, *, force: bool, stop: asyncio.Event | None = None, wait: frozenset[str] = frozenset()
    ) -> PlanReport:
        """Plan the due digests (every digest when ``force``), handing the event loop back every
        :data:`PLAN_SLICE` seconds, so that the endpoints answer and a signal is heard while 100,000 digests are
        planned, and whenever the plan waits for its render workers, so that the digests planned so far are sent
        meanwhile. Once ``stop`` is set, the plan writes what it has planned and stops; the rest waits its turn.
        The subscribers named in ``wait`` (:meth:`waiting_for_summaries`) are planned later."""
        now = self.clock()
        reasons = self.poller.empty_reasons(self.config.feed_keys, now)
        report = PlanReport()
        steps = self.planner.steps(self.config, now, report, force=force, empty_reasons=reasons, wait=wait)
        loop = asyncio.get_running_loop()
        handback = loop.time() + PLAN_SLICE
        stopped = False
        with frozen():
            try:
                for waiting in steps:
                    if waiting is not None:
                        await until_rendered(waiting)
                    elif loop.time() >= handback:
                        await asyncio.sleep(0)
                    else:
                        continue
                    if stop is not None and stop.is_set():
                        stopped = True
                        break
                    handback = loop.time() + PLAN_SLICE
            finally:
                steps.close()  # writes what was planned (and rendered) so far
        if stopped:
            log.info("plan stopped after %d digests; the rest are planned next time", report.digests)
        return report

    async def send(self, stop: asyncio.Event | None = None, more: asyncio.Event | None = None) -> SendReport:
        """Cancel the deliveries of subscribers removed from the config, and send the due ones of the others: the
        store knows which are which since the config was registered (``register_subscribers``). Until ``more`` is
        set, a plan is still writing deliveries, and they are sent as they come."""
        with frozen():
            self.store.cancel_removed(self.clock())
            return await self.sender.deliver_due(stop=stop, more=more)

    def prune(self) -> PruneReport | None:
        """Drop what ``NOTIFIER_RETENTION_DAYS`` no longer keeps (see :meth:`Store.prune`), as the leader, at most
        once every :data:`PRUNE_EVERY` in one process; None when it was not time, or the store failed (logged: the
        next cycle tries again, and nothing else waits for it)."""
        now = self.clock()
        days = self.settings.retention_days
        if not days or not self._leading or (self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY):
            return None
        try:
            report = self.store.prune(now, timedelta(days=days))
        except StoreError as exc:
            log.error("pruning failed, will try again: %s", exc)
            return None
        self._pruned_at = now
        log.info(
            "pruned what is older than %d days: %d payloads of finished deliveries, %d feed items, %d papers,"
            " %d summaries, %d embeddings",
            days,
            report.payloads,
            report.feed_items,
            report.papers,
            report.summaries,
            report.embeddings,
        )
        self.forget_likes()
        return report

    def forget_likes(self) -> None:
        """Drop the liked papers and like sources the config in use no longer names (logged when there were any;
        a store failure is logged and tried again at the next prune)."""
        in_use = {
            source
            for subscriber in self.config.subscribers
            for likes in (subscriber.likes, subscriber.dislikes)
            for source in like_sources(likes)
        }
        try:
            forgotten = self.store.forget_likes(in_use)
        except StoreError as exc:
            log.error("forgetting unused likes failed, will try again: %s", exc)
            return
        if any(forgotten):
            log.info("forgot %d like entries no subscriber has any more, and %d papers only they named", *forgotten)

    def lead(self) -> bool:
        """Whether this daemon polls and plans now (see :meth:`Store.try_lead`); logs when that changes."""
        leading = self.store.try_lead(LEAD)
        if leading != self._leading:
            if not leading:
                log.info("another daemon polls and plans; this one sends")
            elif self._leading is not None:
                log.info("took over polling and planning")
            self._leading = leading
        return leading

    async def _wait_for_lead(self, seconds: float) -> bool:
        deadline = asyncio.get_running_loop().time() + seconds
        while not self.lead():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.5)
        return True

    async def cycle(
        self, *, force_send: bool = False, poll: bool = True, stop: asyncio.Event | None = None
    ) -> CycleReport:
        """Poll (optionally), summarise, plan due digests (all of them when ``force_send``), and send what is due.

        Sending starts with the plan: each batch of digests the plan writes is sent while it plans the next, so that
        writing the messages out overlaps with rendering them (the "send" time is what is left after the plan).
        Polling and planning need the lead; when another daemon keeps it for a few seconds, this cycle only sends.
        Once ``stop`` is set, the cycle starts no new stage and claims no more deliveries (see :meth:`send`).
        """
        report = CycleReport()
        stopping = stop.is_set if stop is not None else lambda: False
        timer = _StageTimer(report.seconds)
        sending: asyncio.Task[SendReport] | None = None
        if await self._wait_for_lead(LEAD_WAIT):
            if poll:
                with self.poll_budget():
                    with timer("poll"):
                        report.polls = await self.poll()
                    if not stopping():
                        with timer("enrich"):
                            await self.enrich(force=force_send)
                            await self.look_up_likes()
                if not stopping() and self.embeddings.enabled:
                    with timer("embed"):
                        await self.embed()
            if not stopping() and self.summaries.enabled:
                with timer("summarise"):
                    await self.summarise(force=force_send)
            if not stopping():
                planned = asyncio.Event()
                sending = asyncio.create_task(self.send(stop, more=planned))
                try:
                    with timer("plan"):
                        report.plan = await self.plan(force=force_send, stop=stop)
                except BaseException:
                    sending.cancel()  # what it had in flight is sent again (see Sender), as when a cycle is cancelled
                    await asyncio.gather(sending, return_exceptions=True)
                    raise
                finally:
                    planned.set()
        if sending is not None or not stopping():
            with timer("send"):
                report.sent = await (sending if sending is not None else self.send(stop))
        if not stopping():
            with timer("prune"):
                self.prune()
        report.stopped = stopping()
        log.info("cycle took %s", report.timing())
        return report

    async def reload_config(self, *, force: bool = False) -> bool:
        """Switch to a changed subscribers.yaml if it is valid; keep the last good one otherwise.

        The file is parsed and its rules compiled in a worker thread: with 100,000 subscribers that takes seconds,
        during which sending and the HTTP endpoints carry on.
        """
        mtime = _mtime(self.settings)
        if not force and mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        try:
            config = await asyncio.to_thread(load_and_keep, self.settings.subscribers, self.settings.data_dir)
        except ConfigError as exc:
            self.config_error = str(exc)
            log.error("config rejected, keeping the last good one: %s", exc)
            return False
        except Exception as exc:  # a failure of the loader itself, not of the file: still no reason to stop
            self.config_error = f"{self.settings.subscribers}: could not be loaded ({type(exc).__name__})"
            log.error("config could not be loaded, keeping the last good one", exc_info=True)
            return False
        self.config = config
        self.config_error = None
        self.store.register_subscribers((s.name for s in config.subscribers), self.clock())
        log.info("config reloaded: %d subscribers, %d categories", len(config.subscribers), len(config.categories))
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """The daemon loop; returns when ``stop`` is set."""
        reload_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
        next_poll = self.clock()
        log.info(
            "daemon started: %d subscribers, categories %s",
            len(self.config.subscribers),
            ", ".join(self.config.categories),
        )
        try:
            while not stop.is_set():
                try:
                    await self.reload_config(force=reload_requested.is_set())
                    reload_requested.clear()
                    next_poll = await self.tick(next_poll, stop, background_poll=True)
                except NotifierError as exc:
                    log.error("cycle failed, will try again: %s", exc)
                # While a poll runs, the next pass comes after a tick, or as soon as the poll is over.
                wait = TICK if self._polling else min(TICK, max(next_poll - self.clock(), timedelta(seconds=1)))
                summarising = self.summaries.task if self.summaries.running else None
                await _wait_any((stop, reload_requested), wait.total_seconds(), self._polling, summarising)
        finally:
            await self._stop_polling()
        log.info("daemon stopping")

    async def tick(
        self, next_poll: datetime, stop: asyncio.Event | None = None, *, background_poll: bool = False
    ) -> datetime:
        """One pass of the loop: as the leader, poll if ``next_poll`` has come, enrich and plan; then send.

        Returns when the next poll is due. A failure after the poll is logged here, so the poll is not repeated.
        Right after a poll, the papers of every subscriber's next digest are looked up in the API, so that arXiv
        is asked while it is being polled anyway and not when a digest comes due. A daemon that does not lead
        only sends, and asks again at the next tick; when it takes over, it polls when the stored feed state says.

        With ``background_poll`` (``run``), the poll runs in a task of its own and this pass goes on without it:
        it sends, and plans the due digests whose papers need nothing more from arXiv (the others wait for the
        poll, which has the gate); the first pass after the poll is over plans everything due.
        """
        was_leading = self._leading
        if not self.lead():
            await self.send(stop)
            return self.clock() + TICK
        if was_leading is False:
            next_poll = self.poller.next_poll_at(self.config.categories, self.clock())
        if self._polling is None and self.clock() >= next_poll:
            self._polling = asyncio.create_task(self._poll_round())
        polled = False
        if self._polling is not None and (self._polling.done() or not background_poll):
            polling, self._polling = self._polling, None
            next_poll = await polling
            polled = True
        try:
            if polled:
                self.summarise_ahead()
            if self._polling is None:
                if not polled:
                    with self.poll_budget():
                        await self.enrich(force=False)
                await self.plan(force=False, stop=stop, wait=self.waiting_for_summaries())
            elif not self.store.not_enriched(self.planner.papers_to_enrich(self.config, self.clock())):
                await self.plan(force=False, stop=stop, wait=self.waiting_for_summaries())
            await self.send(stop)
            self.prune()
        except NotifierError as exc:
            log.error("cycle failed, will try again: %s", exc)
        return next_poll

    async def _poll_round(self) -> datetime:
        """Poll, then look up the papers of every subscriber's next digest, in one time budget; returns when the
        next poll is due. A failure after the poll is logged here, so the poll is not repeated."""
        with self.poll_budget():
            await self.poll()
            next_poll = self.poller.next_poll_at(self.config.categories, self.clock())
            log.info("next poll at %s", next_poll.isoformat(timespec="minutes"))
            try:
                await self.enrich(force=True)
                await self.look_up_likes()
            except NotifierError as exc:
                log.error("cycle failed, will try again: %s", exc)
        await self.embed()
        return next_poll

    async def _stop_polling(self) -> None:
        """Cancel a poll still running (the next start polls again) and reap it, so that its error surfaces."""
        polling, self._polling = self._polling, None
        if polling is None:
            return
        polling.cancel()
        await asyncio.wait([polling])
        if not polling.cancelled() and polling.exception() is not None:
            log.error("poll failed: %s", polling.exception())


async def _wait_any(events: tuple[asyncio.Event, ...], seconds: float, *tasks: asyncio.Task[Any] | None) -> None:
    """Return when any of ``events`` is set, one of ``tasks`` (those not None) is done, or after ``seconds``."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        running = [task for task in tasks if task is not None]
        await asyncio.wait([*waiters, *running], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _mtime(settings: Settings) -> float | None:
    try:
        return settings.subscribers.stat().st_mtime
    except OSError:
        return None


async def until_signalled(work: Callable[[asyncio.Event], Awaitable[T]]) -> T | None:
    """Run ``work(stop)`` to its end; SIGTERM or SIGINT sets ``stop``. ``run`` and ``once`` both stop this way.

    Given ``stop``, the work claims no more deliveries and returns once those in flight are sent and recorded. If it
    has not returned :data:`SHUTDOWN_GRACE` seconds after the signal, it is cancelled and None is returned: what
    it still had in flight stays ``sending`` and is sent again at the next start.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_on(signum: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s received: finishing the sends in flight (up to %gs)", signum.name, SHUTDOWN_GRACE)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop_on, signum)
    task = asyncio.ensure_future(work(stop))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        try:
            return await asyncio.wait_for(task, SHUTDOWN_GRACE)
        except TimeoutError:
            log.warning("in-flight sends handed back; they are sent again at the next start")
            return None
    finally:
        stopper.cancel()
        for signum in signals:
            loop.remove_signal_handler(signum)


async def run_daemon(settings: Settings, config: Config, rejected: ConfigError | None = None) -> None:
    """Run until SIGTERM or SIGINT (see :func:`until_signalled`). ``rejected``: why subscribers.yaml was not
    loaded at start, ``config`` then being the last good one (reported by ``/readyz`` until an edit loads)."""

    async def daemon(stop: asyncio.Event) -> None:
        async with Notifier(settings, config, recover_interrupted=True) as app:
            app.config_error = None if rejected is None else str(rejected)
            server = HttpServer(app, settings.http_host, settings.http_port) if settings.http_addr else None
            if server is not None:
                await server.start()
            try:
                await app.run(stop)
            finally:
                if server is not None:
                    await server.close()

    await until_signalled(daemon)
