"""The outbox writer: turns stored papers into rendered, recorded deliveries for every subscriber that is due.

For each due subscriber: the papers its feed announced since its cursor are matched against its rules (all rules
of a feed at once, through the compiled :class:`RuleSet`), each recipient gets the matches it has not had yet,
the digest is rendered for its channel, and everything is written to the store in one transaction, state
``pending``, before anything is sent.

One subscriber's digest that cannot be planned (any error while its matches are explained, its sections built or
its messages rendered) fails alone: it is logged with the subscriber's name, recorded in the store with the reason
(``notifier status``, the metrics), its cursor stays where it was, so its papers wait, and every other digest is
planned as usual. So does every subscriber of a feed whose papers cannot be read or matched, and no other. A
failed digest is tried again when the subscriber's definition changes, when a new process plans (a restart,
``notifier once``), or :data:`RETRY_FAILED_AFTER` after it last failed; not at every tick. A store error is not a
subscriber's failure: it ends the plan, and the caller tries again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np

from notifier.addresses import address_key
from notifier.config.settings import Settings
from notifier.config.subscribers import Config, Subscriber
from notifier.errors import PlanError, StoreError, describe_failure
from notifier.matching.positions import Positions
from notifier.matching.rules import MatchBatch
from notifier.metrics import Metrics
from notifier.models import ChannelKind, Digest, FeedbackUrls, Match, Paper, SummaryKey
from notifier.outbox.digest import build_digest, papers_of, rich_papers, sections_for
from notifier.outbox.ranking import RankedMatches, Rankings
from notifier.outbox.wants import SummaryWants
from notifier.progress import Progress
from notifier.relevance.matrix import one_thread
from notifier.render.mime import make_message_id
from notifier.render.pool import (
    Chunk,
    InProcess,
    Outcome,
    RenderFailure,
    Rendering,
    RenderPool,
    default_workers,
    render_all,
)
from notifier.render.renderer import Envelope, Renderer, RenderJob
from notifier.store import Store
from notifier.store.rows import NewDelivery, NewDigest, PlanFailure, SubscriberState, recipient_key

log = logging.getLogger(__name__)

FIRST_DIGEST_LOOKBACK = timedelta(days=1)
RETRY_FAILED_AFTER = timedelta(hours=1)  # a digest that failed, its definition unchanged, is tried again after this
WRITE_BATCH = 200  # digests written in one transaction
POOL_FROM = 100  # digests due from which a plan renders in worker processes (when there are any, see RenderPool)
POOL_CHUNK = 16  # digests handed to a worker at a time
POOL_WAIT = 0.01  # seconds a plan waits for its workers before it yields
UnsubscribeUrl = Callable[[str, str], str | None]
FeedbackUrl = Callable[[str, str], FeedbackUrls | None]  # (subscriber, arxiv_id) -> its more / fewer links


@dataclass(frozen=True, slots=True)
class Skipped:
    """A recipient a digest sends nothing to, and why: ``unsubscribed``, or ``nothing new`` for it."""

    channel: str
    recipient: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedDigest:
    record: NewDigest
    papers: int  # distinct papers across its deliveries
    skipped: tuple[Skipped, ...] = ()
    rich: int = 0  # distinct papers shown as rich entries
    summarised: int = 0  # of those, how many have a stored summary


@dataclass(frozen=True, slots=True)
class _Unrendered:
    """A delivery planned, its payload still to render."""

    delivery_id: str
    channel: str
    recipient: str
    message_id: str
    papers: tuple[tuple[str, int], ...]
    job: RenderJob


@dataclass(frozen=True, slots=True)
class _Draft:
    """A digest planned but for its payloads: ``record`` has no deliveries until they are rendered."""

    subscriber: Subscriber
    record: NewDigest
    deliveries: tuple[_Unrendered, ...]
    skipped: tuple[Skipped, ...]
    rich: int
    summarised: int

    @property
    def jobs(self) -> list[RenderJob]:
        return [delivery.job for delivery in self.deliveries]

    def rendered(self, outcomes: list[Outcome]) -> tuple[PlannedDigest | None, str | None]:
        """The digest with ``outcomes`` (one per delivery) as its payloads; or why it cannot be sent, when one of
        them could not be rendered."""
        deliveries = []
        for delivery, outcome in zip(self.deliveries, outcomes, strict=True):
            if isinstance(outcome, RenderFailure):
                return None, f"rendering its {delivery.channel} digest: {outcome.reason}"
            deliveries.append(
                NewDelivery(
                    delivery_id=delivery.delivery_id,
                    channel=delivery.channel,
                    recipient=delivery.recipient,
                    message_id=delivery.message_id,
                    payload=outcome,
                    papers=delivery.papers,
                )
            )
        papers = len({paper for delivery in deliveries for paper in delivery.papers})
        if deliveries:
            name, digest_id = self.subscriber.name, self.record.digest_id
            log.debug("digest %s for %s: %d papers, %d deliveries", digest_id, name, papers, len(deliveries))
        record = dataclasses.replace(self.record, deliveries=tuple(deliveries))
        return PlannedDigest(record, papers, self.skipped, self.rich, self.summarised), None


@dataclass
class PlanReport:
    digests: int = 0
    deliveries: int = 0
    papers: int = 0
    subscribers: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # subscribers whose digest could not be planned


def _hash(*parts: str, length: int = 24) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


def fingerprint(subscriber: Subscriber) -> str:
    """A digest of everything a subscriber's definition says (not where it stands in the file): a failed digest
    whose subscriber has another fingerprint is tried again at once."""
    definition = {f.name: getattr(subscriber, f.name) for f in dataclasses.fields(subscriber) if f.name != "line"}
    return _hash(json.dumps(definition, sort_keys=True, default=_plain))


def _plain(value: object) -> object:
    if isinstance(value, set | frozenset):
        return sorted(map(str, value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


class LazyMatches(Mapping[str, list[Match]]):
    """Rule key -> matches among the papers one subscriber can see (those of its categories), with hits looked up
    only for the rules its digest actually reads, only in those papers, and once for all its recipients."""

    def __init__(self, batch: MatchBatch, matched: frozenset[str], visible: Positions):
        self.batch = batch
        self.matched = matched
        self.visible = visible
        self._found: dict[str, list[Match]] = {}

    def __getitem__(self, key: str) -> list[Match]:
        found = self._found.get(key)
        if found is None:
            if key not in self.matched:
                raise KeyError(key)
            found = self._found[key] = self.batch.matches(key, within=self.visible)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self.matched)

    def __len__(self) -> int:
        return len(self.matched)


@dataclass
class _Group:
    """Due subscribers who share a cursor, the papers of all their categories since it, and every rule of theirs
    matched once over those papers. A subscriber sees only the papers of its own categories (:meth:`visible`)."""

    cursor: datetime
    subscribers: list[Subscriber]
    papers: list[Paper]  # in the batch's order
    batch: MatchBatch
    by_category: dict[str, Positions]  # category (or stored set) -> positions of the papers it announced
    matched: frozenset[str] = frozenset()  # keys of the rules that selected a paper
    # kept per category set (and announce types): a mask is a byte per paper, so 10,000 subscribers' take 4 MB
    _visible: dict[str, Positions] = field(default_factory=dict)
    _sendable: dict[tuple[str, frozenset[str]], Positions] = field(default_factory=dict)
    _announced: dict[frozenset[str], Positions] = field(default_factory=dict)  # types -> positions

    def visible(self, subscriber: Subscriber) -> Positions:
        """Positions of the papers announced in ``subscriber``'s categories."""
        key = subscriber.feed_key
        found = self._visible.get(key)
        if found is None:
            found = self._visible[key] = Positions.union(
                (self.by_category[c] for c in {*subscriber.categories, key} if c in self.by_category), len(self.papers)
            )
        return found

    def sendable(self, subscriber: Subscriber) -> Positions:
        """Positions of the papers ``subscriber``'s digest can list: those of its categories announced as a type it
        asked for."""
        types = subscriber.announce_types
        key = (subscriber.feed_key, types)
        found = self._sendable.get(key)
        if found is None:
            announced = self._announced.get(types)
            if announced is None:
                announced = self._announced[types] = Positions.of(
                    (i for i, paper in enumerate(self.papers) if paper.announce_type in types), len(self.papers)
                )
            found = self._sendable[key] = self.visible(subscriber) & announced
        return found

    def matches(self, subscriber: Subscriber) -> LazyMatches:
        """``subscriber``'s matches: among the papers its digest can list (:meth:`sendable`); for a subscriber who
        ranks, among every paper it sees, for its best papers are chosen among them all."""
        within = self.visible(subscriber) if subscriber.ranks else self.sendable(subscriber)
        return LazyMatches(self.batch, self.matched, within)


_CROSS = frozenset({"cross", "replace-cross"})


def _match(
    config: Config, cursor: datetime, subscribers: list[Subscriber], listed: Mapping[str, list[Paper]]
) -> _Group:
    """Match every rule of ``subscribers`` once over the papers of all categories in ``listed``.

    A paper version announced in several categories is one paper per announce type: a subscriber sees the type
    its own categories gave it (a cross-list in one is new in its primary category), and where both reach it the
    paper's own type comes first, as in a feed of several categories.
    """
    union: dict[tuple[str, int, str], Paper] = {}
    for papers in listed.values():
        for paper in papers:
            union.setdefault((paper.arxiv_id, paper.version, paper.announce_type), paper)
    papers = sorted(
        union.values(),
        key=lambda p: (p.announced or date.min, p.arxiv_id, p.version, p.announce_type in _CROSS, p.announce_type),
    )
    position = {(p.arxiv_id, p.version, p.announce_type): i for i, p in enumerate(papers)}
    by_category = {
        category: Positions.of((position[p.arxiv_id, p.version, p.announce_type] for p in found), len(papers))
        for category, found in listed.items()
    }
    keys = list(dict.fromkeys(rule.key for subscriber in subscribers for rule in subscriber.rules if rule.query))
    batch = config.rules.evaluate(papers, keys)
    return _Group(cursor, subscribers, papers, batch, by_category, frozenset(batch.keys()))


class Planner:
    def __init__(
        self,
        store: Store,
        renderer: Renderer,
        settings: Settings,
        unsubscribe_url: UnsubscribeUrl | None = None,
        metrics: Metrics | None = None,
        feedback_urls: FeedbackUrl | None = None,
    ):
        self.store = store
        self.renderer = renderer
        self.settings = settings
        self.unsubscribe_url = unsubscribe_url or (lambda _subscriber, _address: None)
        self.feedback_urls = feedback_urls
        self.metrics = metrics or Metrics()
        self._tried: set[tuple[str, str]] = set()  # (subscriber, fingerprint) whose digest failed in this planner
        self.rankings = Rankings(store, settings.embedding_model if settings.embeddings_enabled else None)

    def _matches(self, group: _Group, subscriber: Subscriber, now: datetime) -> Mapping[str, list[Match]]:
        """``subscriber``'s matches in ``group``; ranked by similarity to its liked papers when it ranks."""
        matches = group.matches(subscriber)
        if not subscriber.ranks:
            return matches
        visible = [group.papers[i] for i in group.visible(subscriber)]
        profile = self.rankings.profile(subscriber, now, visible)
        if profile is None:
            return matches
        return RankedMatches(subscriber, matches, visible, profile)

    def cursor_of(self, subscriber: Subscriber, now: datetime, state: SubscriberState | None = None) -> datetime:
        """Where ``subscriber``'s next digest starts (``state``: its stored state, if already read)."""
        state = state or self.store.subscriber_state(subscriber.name)
        if state is None:
            return now - FIRST_DIGEST_LOOKBACK
        return state.cursor or state.created_at - FIRST_DIGEST_LOOKBACK

    @staticmethod
    def due_at(subscriber: Subscriber, now: datetime, state: SubscriberState | None) -> datetime:
        """When ``subscriber``'s next digest is (or was) due: ``now`` for an instant one or one never planned."""
        if state is None or subscriber.schedule.kind == "instant":
            return now
        return subscriber.schedule.next_due(state.last_digest_at or state.created_at)

    @staticmethod
    def is_due(subscriber: Subscriber, now: datetime, state: SubscriberState | None) -> bool:
        """Whether ``subscriber`` (whose stored state is ``state``) has a digest due at ``now``."""
        if state is None or subscriber.schedule.kind == "instant":
            return state is not None
        since = state.last_digest_at or state.created_at
        return subscriber.schedule.next_due(since) <= now

    def plan(
        self,
        config: Config,
        now: datetime,
        *,
        force: bool = False,
        empty_reasons: Mapping[str, str | None] | None = None,
        wait: frozenset[str] = frozenset(),
    ) -> PlanReport:
        """Write pending deliveries for every due subscriber (every subscriber when ``force``), all at once.

        A subscriber whose digest cannot be planned is recorded as failing (see the module's docstring) and
        reported in ``failed``; the others are planned all the same. A :class:`StoreError` ends the plan. The
        subscribers named in ``wait`` (their summaries are on their way) are left for a later plan.
        """
        report = PlanReport()
        for _ in self.steps(config, now, report, force=force, empty_reasons=empty_reasons, wait=wait):
            pass
        return report

    def steps(
        self,
        config: Config,
        now: datetime,
        report: PlanReport,
        *,
        force: bool = False,
        empty_reasons: Mapping[str, str | None] | None = None,
        wait: frozenset[str] = frozenset(),
    ) -> Generator[Chunk | None, None, None]:
        """:meth:`plan`, one subscriber at a time: yields after each, so that the daemon can answer its endpoints
        and signals in between, and yields the chunk of digests it waits for while their render workers have it
        (None otherwise). Digests are written in batches of :data:`WRITE_BATCH`; closing the generator
        early writes those planned so far, and the subscribers not reached keep their cursors for the next plan.
        """
        failures = self.store.plan_failures()
        unsubscribes = self.store.unsubscribes()  # one that comes during the plan: see Store.record_digests
        failed: list[tuple[Subscriber, str]] = []
        pending: list[PlannedDigest] = []
        drafts: list[_Draft] = []  # planned, not yet handed to the renderer
        rendering: deque[tuple[list[_Draft], Chunk]] = deque()  # handed to it, oldest first

        def group_failed(what: str, subscribers: list[Subscriber], exc: Exception) -> None:
            reason = f"reading or matching the papers of {what}: {describe_failure(exc)}"
            names = ", ".join(s.name for s in subscribers[:5]) + (", ..." if len(subscribers) > 5 else "")
            log.error(
                "digests of %d subscribers (%s) not planned; their papers wait: %s", len(subscribers), names, reason
            )
            log.debug("papers of %s could not be read or matched", what, exc_info=exc)
            failed.extend((subscriber, reason) for subscriber in subscribers)

        def hand_over() -> None:
            if drafts:
                rendering.append((drafts[:], renderer.submit([job for draft in drafts for job in draft.jobs])))
                drafts.clear()

        def settle(planned: PlannedDigest | None, problem: str | None, subscriber: Subscriber) -> None:
            if problem is not None:
                log.error(
                    "digest for %s not planned; its papers wait for the next attempt: %s", subscriber.name, problem
                )
                failed.append((subscriber, problem))
            elif planned is not None:
                pending.append(planned)
                if len(pending) >= WRITE_BATCH:
                    self._write(pending, failures, report)

        def collect(chunk_drafts: list[_Draft], chunk: Chunk) -> None:
            outcomes = iter(chunk.outcomes())
            for draft in chunk_drafts:
                settle(*draft.rendered([next(outcomes) for _ in draft.deliveries]), draft.subscriber)

        def rendered(keep: int) -> Iterator[Chunk | None]:
            """Collect the oldest chunks until ``keep`` are left rendering, yielding each while it is not done: a
            caller may wait for it with its event loop free (:func:`~notifier.render.pool.until_rendered`); one
            that does not is kept waiting a moment here."""
            while len(rendering) > keep:
                chunk = rendering[0][1]
                while not chunk.done():
                    yield chunk
                    chunk.wait(POOL_WAIT)
                collect(*rendering.popleft())

        def finish() -> None:
            hand_over()
            while rendering:
                collect(*rendering.popleft())
            self.rankings.log_fallbacks()
            self._write(pending, failures, report)
            if failed:
                self._record_failures(failed, now, report)

        due = self._due(config, now, force=force, failures=failures, wait=wait)
        count = sum(map(len, due.values()))
        renderer = self._rendering(count)
        chunk_size, in_flight = (1, 0) if isinstance(renderer, InProcess) else (POOL_CHUNK, 2 * self.workers)
        self.rankings.prepare([s for subscribers in due.values() for s in subscribers], now, plan=True)
        with contextlib.closing(renderer):
            try:
                with one_thread(), Progress("planning", count, unit="digests") as progress:
                    for group in self._groups(config, due, now, on_failure=group_failed):
                        for subscriber in group.subscribers:
                            reason = (empty_reasons or {}).get(subscriber.feed_key)
                            draft, problem = self._plan_one(
                                config,
                                subscriber,
                                self._matches(group, subscriber, now),
                                group.cursor,
                                now,
                                reason,
                                unsubscribes.get(subscriber.name, _NONE),
                            )
                            if draft is None:
                                settle(None, problem, subscriber)
                            else:
                                drafts.append(draft)
                                if len(drafts) >= chunk_size:
                                    hand_over()
                                    yield from rendered(in_flight)
                            progress.advance()
                            yield None
                    hand_over()
                    yield from rendered(0)
            except GeneratorExit:
                finish()
                raise
            finish()

    @property
    def workers(self) -> int:
        """Worker processes a large plan renders in (``NOTIFIER_RENDER_WORKERS``, by default one per core)."""
        workers = self.settings.render_workers
        return default_workers() if workers is None else workers

    def _rendering(self, digests: int) -> Rendering:
        """Where a plan of ``digests`` renders: in worker processes from :data:`POOL_FROM` digests, if any."""
        if digests >= POOL_FROM and self.workers > 0:
            return RenderPool(self.renderer, self.settings.templates, self.workers)
        return InProcess(self.renderer)

    def _write(self, pending: list[PlannedDigest], failures: Mapping[str, PlanFailure], report: PlanReport) -> None:
        """Record the planned digests in one transaction, then count them (and clear the failures they end)."""
        if not pending:
            return
        self.store.record_digests([planned.record for planned in pending])
        for planned in pending:
            name = planned.record.subscriber
            if planned.record.deliveries:
                report.digests += 1
                report.deliveries += len(planned.record.deliveries)
                report.papers += planned.papers
                report.subscribers.append(name)
                self.metrics.record_digest(planned.papers)
            if name in failures:
                self.store.clear_plan_failure(name)
                self._tried = {tried for tried in self._tried if tried[0] != name}
                log.info("digest for %s planned again after %d failed attempts", name, failures[name].attempts)
        pending.clear()

    def _record_failures(self, failed: list[tuple[Subscriber, str]], now: datetime, report: PlanReport) -> None:
        rows = [(subscriber.name, fingerprint(subscriber), reason) for subscriber, reason in failed]
        self.store.record_plan_failures(rows, now)
        for name, definition, _reason in rows:
            self._tried.add((name, definition))
            report.failed.append(name)
        self.metrics.record_plan_failures(len(rows))
        failed.clear()

    def _held(self, subscriber: Subscriber, failure: PlanFailure | None, now: datetime) -> bool:
        """Whether a failed digest is left alone for now: this planner tried the same definition of the
        subscriber less than :data:`RETRY_FAILED_AFTER` ago."""
        if failure is None or now - failure.last_failed >= RETRY_FAILED_AFTER:
            return False
        current = fingerprint(subscriber)
        return current == failure.fingerprint and (subscriber.name, current) in self._tried

    def papers_to_enrich(self, config: Config, now: datetime, *, force: bool = False) -> set[str]:
        """Ids of the papers the next :meth:`plan` needs comments for: those its rules match among what each
        subscriber sees, and every paper a subscriber sees when one of its rules reads the comment (``co:``),
        which only the API knows."""
        wanted: set[str] = set()

        def skipped(what: str, _subscribers: list[Subscriber], exc: Exception) -> None:
            log.debug("papers of %s could not be read or matched; the plan records it", what, exc_info=exc)

        due = self._due(config, now, force=force, failures=self.store.plan_failures())
        for group in self._groups(config, due, now, on_failure=skipped):
            positions = np.zeros(len(group.papers), dtype=np.bool_)
            for subscriber in group.subscribers:
                visible = group.visible(subscriber)
                if any(rule.key in config.comment_rules for rule in subscriber.rules):
                    positions |= visible.mask
                    continue
                for rule in subscriber.rules:
                    if rule.key in group.matched:
                        positions[visible.among(group.batch.paper_indices(rule.key))] = True
            wanted.update(group.papers[i].arxiv_id for i in np.flatnonzero(positions).tolist())
        return wanted

    def papers_to_summarise(
        self, config: Config, now: datetime, *, force: bool = False, only: Subscriber | None = None
    ) -> SummaryWants:
        """The papers the rich sections of the next digests will carry (of every due subscriber, of every
        subscriber when ``force``, of ``only`` alone when given): what :meth:`plan` would put in them, each
        recipient's already-sent papers left out, and unsubscribed addresses too, so that nothing is summarised
        that no one will read."""
        wants = SummaryWants()
        asking = [only] if only is not None else config.subscribers
        if not self.settings.summaries_enabled or not any(r.summaries for s in asking for r in s.rules):
            return wants

        def skipped(what: str, _subscribers: list[Subscriber], exc: Exception) -> None:
            log.debug("papers of %s could not be read or matched; the plan records it", what, exc_info=exc)

        states = self.store.subscriber_states()
        unsubscribes = self.store.unsubscribes()
        if only is not None:
            due = {self.cursor_of(only, now, states.get(only.name)): [only]}
        else:
            due = self._due(config, now, force=force, failures=self.store.plan_failures())
        rich = {cursor: [s for s in group if any(r.summaries for r in s.rules)] for cursor, group in due.items()}
        self.rankings.prepare([subscriber for group in rich.values() for subscriber in group], now)
        with one_thread():
            for group in self._groups(config, {c: g for c, g in rich.items() if g}, now, on_failure=skipped):
                for subscriber in group.subscribers:
                    matches = self._matches(group, subscriber, now)
                    papers: list[Paper] = []
                    matched = _matched_ids(subscriber, matches)
                    for channel, recipient, unsubscribed in _recipients(
                        subscriber, unsubscribes.get(subscriber.name, _NONE)
                    ):
                        if unsubscribed:
                            continue
                        reserved = self.store.reserved_versions(subscriber.name, channel, recipient, matched)
                        sections = sections_for(subscriber, matches, reserved, rich=True)
                        papers.extend(m.paper for section in sections if section.rich for m in section.matches)
                    when = self.due_at(subscriber, now, states.get(subscriber.name))
                    wants.add(subscriber.name, when, papers)
        return wants

    def _due(
        self,
        config: Config,
        now: datetime,
        *,
        force: bool,
        failures: Mapping[str, PlanFailure],
        wait: frozenset[str] = frozenset(),
    ) -> dict[datetime, list[Subscriber]]:
        """Due subscribers by cursor, in the config's order; those whose failed digest is held back, and those
        named in ``wait``, are left out."""
        due: dict[datetime, list[Subscriber]] = defaultdict(list)
        states = self.store.subscriber_states()
        for subscriber in config.subscribers:
            if subscriber.name in wait:
                continue
            state = states.get(subscriber.name)
            if (force or self.is_due(subscriber, now, state)) and not self._held(
                subscriber, failures.get(subscriber.name), now
            ):
                due[self.cursor_of(subscriber, now, state)].append(subscriber)
        return due

    def _groups(
        self,
        config: Config,
        due: Mapping[datetime, list[Subscriber]],
        now: datetime,
        *,
        on_failure: Callable[[str, list[Subscriber], Exception], None],
    ) -> Iterator[_Group]:
        """For each cursor: the papers of every category its subscribers follow, read once per category, and all
        their rules matched once over them. The subscribers of a category whose papers cannot be read go to
        ``on_failure``; so do those of a feed whose papers cannot be matched (matching then runs feed by feed, so
        that no one else fails with them). A store error is raised."""
        combined = [
            (s.feed_key, s.last_polled) for s in self.store.feed_states() if "+" in s.feed_key and s.last_polled
        ]
        for cursor, subscribers in due.items():
            listed: dict[str, list[Paper]] = {}
            sets = {s.feed_key for s in subscribers}
            # Items stored under a category set's own key, when sets were polled rather than categories, and
            # that set was polled after this cursor: read once, they join that set's subscribers' papers.
            legacy = [key for key, polled in combined if key in sets and polled is not None and polled > cursor]
            for key in [*sorted({c for subscriber in subscribers for c in subscriber.categories}), *legacy]:
                try:
                    listed[key] = self.store.candidates(key, cursor, now)
                except StoreError:
                    raise
                except Exception as exc:
                    members = set(key.split("+"))
                    unread = [s for s in subscribers if members & set(s.categories)]
                    on_failure(key, unread, exc)
                    subscribers = [s for s in subscribers if not members & set(s.categories)]
            if not subscribers:
                continue
            try:
                group = _match(config, cursor, subscribers, listed)
            except StoreError:
                raise
            except Exception:
                log.debug("matching the papers of %d categories at once failed; matching feed by feed", len(listed))
                yield from self._feed_by_feed(config, cursor, subscribers, listed, on_failure)
                continue
            yield group

    @staticmethod
    def _feed_by_feed(
        config: Config,
        cursor: datetime,
        subscribers: list[Subscriber],
        listed: Mapping[str, list[Paper]],
        on_failure: Callable[[str, list[Subscriber], Exception], None],
    ) -> Iterator[_Group]:
        feeds: dict[str, list[Subscriber]] = defaultdict(list)
        for subscriber in subscribers:
            feeds[subscriber.feed_key].append(subscriber)
        for feed_key, members in feeds.items():
            try:
                own = {*members[0].categories, feed_key}
                group = _match(config, cursor, members, {key: papers for key, papers in listed.items() if key in own})
            except StoreError:
                raise
            except Exception as exc:
                on_failure(feed_key, members, exc)
                continue
            yield group

    def _plan_one(
        self,
        config: Config,
        subscriber: Subscriber,
        matches: Mapping[str, list[Match]],
        cursor: datetime,
        now: datetime,
        empty_reason: str | None,
        unsubscribed: Collection[str],
    ) -> tuple[_Draft | None, str | None]:
        """Plan ``subscriber``'s digest, to be rendered, then recorded with others in one transaction; or, when it
        cannot be planned, return the reason (and record nothing: its cursor stays)."""
        digest_id = _hash(subscriber.name, now.isoformat(), length=20)
        deliveries: list[_Unrendered] = []
        skipped: list[Skipped] = []
        rich: dict[SummaryKey, bool] = {}  # paper shown as a rich entry -> whether it has a summary
        links: dict[str, FeedbackUrls | None] = {}  # ranked paper -> its feedback links, made once for all recipients
        step = "planning its digest"
        try:
            matched = _matched_ids(subscriber, matches)
            for channel, recipient, gone in _recipients(subscriber, unsubscribed):
                if gone:
                    skipped.append(Skipped(channel, recipient, "unsubscribed"))
                    continue
                reserved = self.store.reserved_versions(subscriber.name, channel, recipient, matched)
                step = "matching and sorting its papers"
                sections = sections_for(subscriber, matches, reserved, rich=self.settings.summaries_enabled)
                reason = None
                if not any(section.matches for section in sections):
                    if not subscriber.send_empty or subscriber.schedule.kind == "instant" or empty_reason is None:
                        skipped.append(Skipped(channel, recipient, "nothing new"))
                        continue
                    reason = empty_reason
                wanted = rich_papers(sections)
                summaries = self.store.summaries(wanted) if wanted else {}
                rich.update((key, key in summaries) for key in wanted)
                step = f"rendering its {channel} digest"
                digest = build_digest(
                    subscriber,
                    sections,
                    period_start=cursor,
                    period_end=now,
                    config_path=config.path.name,
                    empty_reason=reason,
                    summaries=summaries,
                )
                if self.feedback_urls is not None:
                    digest = dataclasses.replace(digest, feedback=self._feedback(subscriber.name, digest, links))
                deliveries.append(self._unrendered(digest_id, subscriber, digest, channel, recipient, now))
        except StoreError:
            raise
        except Exception as exc:
            log.debug("digest for %s not planned", subscriber.name, exc_info=exc)
            return None, f"{step}: {describe_failure(exc)}"
        record = NewDigest(
            digest_id=digest_id,
            subscriber=subscriber.name,
            kind=subscriber.schedule.kind,
            period_start=cursor,
            period_end=now,
            now=now,
            deliveries=(),
            cursor=now,
        )
        return _Draft(subscriber, record, tuple(deliveries), tuple(skipped), len(rich), sum(rich.values())), None

    def _feedback(
        self, subscriber: str, digest: Digest, links: dict[str, FeedbackUrls | None]
    ) -> dict[str, FeedbackUrls]:
        """The feedback links of the ranked papers of ``digest`` (those with a similarity), by arXiv id; ``links``
        keeps those already made for another of the subscriber's recipients."""
        assert self.feedback_urls is not None
        found: dict[str, FeedbackUrls] = {}
        for section in digest.sections:
            for match in section.matches:
                arxiv_id = match.paper.arxiv_id
                if match.similarity is None or arxiv_id in found:
                    continue
                if arxiv_id not in links:
                    links[arxiv_id] = self.feedback_urls(subscriber, arxiv_id)
                if (urls := links[arxiv_id]) is not None:
                    found[arxiv_id] = urls
        return found

    def _unrendered(
        self, digest_id: str, subscriber: Subscriber, digest: Digest, channel: str, recipient: str, now: datetime
    ) -> _Unrendered:
        message_id = make_message_id(f"{subscriber.name}|{channel}|{recipient}|{digest_id}", self.settings.mail_domain)
        envelope = None
        if channel == "email":
            envelope = Envelope(
                sender=self.settings.mail_from,
                recipient=recipient,
                message_id=message_id,
                date=now,
                list_id=f"{subscriber.name}.{self.settings.mail_domain}",
                unsubscribe_url=self.unsubscribe_url(subscriber.name, recipient),
            )
        return _Unrendered(
            delivery_id=_hash(digest_id, channel, recipient),
            channel=channel,
            recipient=recipient,
            message_id=message_id,
            papers=papers_of(digest.sections),
            job=RenderJob(digest, envelope),
        )

    def preview(self, config: Config, subscriber: Subscriber, now: datetime) -> PlannedDigest:
        """What :meth:`plan` would write for ``subscriber`` at ``now``, due or not, planned by the same code from
        the stored papers: a delivery for each recipient that would get one, and the others in ``skipped``. The
        store is only read. Raises :class:`~notifier.errors.PlanError` when the digest could not be planned."""

        def unreadable(what: str, _subscribers: list[Subscriber], exc: Exception) -> None:
            raise PlanError(f"the papers of {what} could not be read or matched: {describe_failure(exc)}") from exc

        due = {self.cursor_of(subscriber, now): [subscriber]}
        (group,) = self._groups(config, due, now, on_failure=unreadable)
        matches = self._matches(group, subscriber, now)
        unsubscribed = self.store.unsubscribed(subscriber.name)
        draft, problem = self._plan_one(config, subscriber, matches, group.cursor, now, None, unsubscribed)
        planned = None
        if draft is not None:
            planned, problem = draft.rendered(render_all(self.renderer, draft.jobs))
        if planned is None:
            raise PlanError(f"the digest for {subscriber.name} could not be planned: {problem}")
        return planned


_NONE: frozenset[str] = frozenset()


def _matched_ids(subscriber: Subscriber, matches: Mapping[str, Collection[Match]]) -> set[str]:
    """The arXiv ids of the papers ``subscriber``'s rules matched: the only papers whose reservations for its
    recipients a plan needs to know (none to ask about when nothing matched). Only its own rules are looked up, as
    :func:`~notifier.outbox.digest.sections_for` does: ``matches`` may hold its group's other rules too, whose hits
    would be worked out for nothing."""
    return {match.paper.arxiv_id for rule in subscriber.rules for match in matches.get(rule.key, ())}


def _recipients(subscriber: Subscriber, unsubscribed: Collection[str]) -> Iterator[tuple[ChannelKind, str, bool]]:
    """Each of ``subscriber``'s recipients once (an address however it is spelt), and whether it is among the
    address keys ``unsubscribed`` from it."""
    seen: set[tuple[str, str]] = set()
    for channel, recipient in subscriber.recipients():
        key = (channel, recipient_key(channel, recipient))
        if key not in seen:
            seen.add(key)
            yield channel, recipient, channel == "email" and address_key(recipient) in unsubscribed
