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

import dataclasses
import hashlib
import json
import logging
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from notifier.addresses import address_key
from notifier.channels.email import build_email, make_message_id
from notifier.config import Config, Subscriber
from notifier.digest import build_digest, papers_of, sections_for
from notifier.errors import StoreError
from notifier.matching import MatchBatch
from notifier.metrics import Metrics
from notifier.models import Digest, DigestSection, Match, Paper
from notifier.render import Renderer
from notifier.settings import Settings
from notifier.store import NewDelivery
from notifier.store_factory import StoreLike
from notifier.store_sql import PlanFailure, SubscriberState, recipient_key

log = logging.getLogger(__name__)

FIRST_DIGEST_LOOKBACK = timedelta(days=1)
RETRY_FAILED_AFTER = timedelta(hours=1)  # a digest that failed, its definition unchanged, is tried again after this
MAX_REASON = 500  # characters of a failure's reason kept in the store
UnsubscribeUrl = Callable[[str, str], str | None]


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


def describe_failure(exc: BaseException) -> str:
    """One line saying what went wrong, and where in a template when a template raised it."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f for f in frames if f.filename and not f.filename.endswith(".py") and not f.filename.startswith("<")]
    if where:
        text += f" (at {Path(where[-1].filename).name}:{where[-1].lineno})"
    return " ".join(text.split())[:MAX_REASON]


class LazyMatches(Mapping[str, list[Match]]):
    """Rule key -> matches, with hits looked up only for the rules a digest actually reads."""

    def __init__(self, batch: MatchBatch):
        self.batch = batch
        self._keys = batch.keys()
        self._known = set(self._keys)

    def __getitem__(self, key: str) -> list[Match]:
        if key not in self._known:
            raise KeyError(key)
        return self.batch.matches(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def papers(self, key: str) -> list[Paper]:
        return self.batch.papers(key)


class Planner:
    def __init__(
        self,
        store: StoreLike,
        renderer: Renderer,
        settings: Settings,
        unsubscribe_url: UnsubscribeUrl | None = None,
        metrics: Metrics | None = None,
    ):
        self.store = store
        self.renderer = renderer
        self.settings = settings
        self.unsubscribe_url = unsubscribe_url or (lambda _subscriber, _address: None)
        self.metrics = metrics or Metrics()
        self._tried: set[tuple[str, str]] = set()  # (subscriber, fingerprint) whose digest failed in this planner

    def cursor_of(self, subscriber: Subscriber, now: datetime, state: SubscriberState | None = None) -> datetime:
        """Where ``subscriber``'s next digest starts (``state``: its stored state, if already read)."""
        state = state or self.store.subscriber_state(subscriber.name)
        if state is None:
            return now - FIRST_DIGEST_LOOKBACK
        return state.cursor or state.created_at - FIRST_DIGEST_LOOKBACK

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
    ) -> PlanReport:
        """Write pending deliveries for every due subscriber (every subscriber when ``force``).

        A subscriber whose digest cannot be planned is recorded as failing (see the module's docstring) and
        reported in ``failed``; the others are planned all the same. A :class:`StoreError` ends the plan.
        """
        report = PlanReport()
        failures = self.store.plan_failures()
        failed: list[tuple[Subscriber, str]] = []

        def group_failed(feed_key: str, subscribers: list[Subscriber], exc: Exception) -> None:
            reason = f"reading or matching the papers of {feed_key}: {describe_failure(exc)}"
            names = ", ".join(s.name for s in subscribers[:5]) + (", ..." if len(subscribers) > 5 else "")
            log.error(
                "digests of %d subscribers (%s) not planned; their papers wait: %s", len(subscribers), names, reason
            )
            log.debug("papers of %s could not be read or matched", feed_key, exc_info=exc)
            failed.extend((subscriber, reason) for subscriber in subscribers)

        for feed_key, cursor, subscribers, _candidates, matches in self._due_matches(
            config, now, force=force, failures=failures, on_failure=group_failed
        ):
            for subscriber in subscribers:
                reason = (empty_reasons or {}).get(feed_key)
                problem = self._plan_one(config, subscriber, matches, cursor, now, reason, report)
                if problem is not None:
                    failed.append((subscriber, problem))
                elif subscriber.name in failures:
                    self.store.clear_plan_failure(subscriber.name)
                    self._tried = {tried for tried in self._tried if tried[0] != subscriber.name}
                    attempts = failures[subscriber.name].attempts
                    log.info("digest for %s planned again after %d failed attempts", subscriber.name, attempts)
        if failed:
            self._record_failures(failed, now, report)
        return report

    def _record_failures(self, failed: list[tuple[Subscriber, str]], now: datetime, report: PlanReport) -> None:
        rows = [(subscriber.name, fingerprint(subscriber), reason) for subscriber, reason in failed]
        self.store.record_plan_failures(rows, now)
        for name, definition, _reason in rows:
            self._tried.add((name, definition))
            report.failed.append(name)
        self.metrics.record_plan_failures(len(rows))

    def _held(self, subscriber: Subscriber, failure: PlanFailure | None, now: datetime) -> bool:
        """Whether a failed digest is left alone for now: this planner tried the same definition of the
        subscriber less than :data:`RETRY_FAILED_AFTER` ago."""
        if failure is None or now - failure.last_failed >= RETRY_FAILED_AFTER:
            return False
        current = fingerprint(subscriber)
        return current == failure.fingerprint and (subscriber.name, current) in self._tried

    def papers_to_enrich(self, config: Config, now: datetime, *, force: bool = False) -> set[str]:
        """Ids of the papers the next :meth:`plan` needs comments for: those its rules match, and every candidate
        of a feed where a due rule reads the comment (``co:``), which only the API knows."""
        wanted: set[str] = set()
        failures = self.store.plan_failures()

        def skipped(feed_key: str, _subscribers: list[Subscriber], exc: Exception) -> None:
            log.debug("papers of %s could not be read or matched; the plan records it", feed_key, exc_info=exc)

        for _key, _cursor, subscribers, candidates, matches in self._due_matches(
            config, now, force=force, failures=failures, on_failure=skipped
        ):
            if any(rule.key in config.comment_rules for subscriber in subscribers for rule in subscriber.rules):
                wanted.update(paper.arxiv_id for paper in candidates)
            else:
                wanted.update(paper.arxiv_id for key in matches for paper in matches.papers(key))
        return wanted

    def _due_matches(
        self,
        config: Config,
        now: datetime,
        *,
        force: bool,
        failures: Mapping[str, PlanFailure],
        on_failure: Callable[[str, list[Subscriber], Exception], None],
    ) -> Iterator[tuple[str, datetime, list[Subscriber], list[Paper], LazyMatches]]:
        """Due subscribers grouped by feed and cursor, with that feed's candidate papers and the matches of all
        their rules over them. Subscribers whose failed digest is held back are left out; a group whose papers
        cannot be read or matched goes to ``on_failure`` instead (a store error is raised)."""
        groups: dict[tuple[str, datetime], list[Subscriber]] = defaultdict(list)
        states = self.store.subscriber_states()
        for subscriber in config.subscribers:
            state = states.get(subscriber.name)
            if (force or self.is_due(subscriber, now, state)) and not self._held(
                subscriber, failures.get(subscriber.name), now
            ):
                groups[(subscriber.feed_key, self.cursor_of(subscriber, now, state))].append(subscriber)
        for (feed_key, cursor), subscribers in groups.items():
            try:
                candidates = self.store.candidates(feed_key, cursor, now)
                keys = [rule.key for subscriber in subscribers for rule in subscriber.rules]
                matches = LazyMatches(config.rules.evaluate(candidates, keys))
            except StoreError:
                raise
            except Exception as exc:
                on_failure(feed_key, subscribers, exc)
                continue
            yield feed_key, cursor, subscribers, candidates, matches

    def _plan_one(
        self,
        config: Config,
        subscriber: Subscriber,
        matches: Mapping[str, list[Match]],
        cursor: datetime,
        now: datetime,
        empty_reason: str | None,
        report: PlanReport,
    ) -> str | None:
        """Plan ``subscriber``'s digest and record it; or, when it cannot be planned, log and return the reason
        (and record nothing: its cursor stays)."""
        digest_id = _hash(subscriber.name, now.isoformat(), length=20)
        unsubscribed = self.store.unsubscribed(subscriber.name)
        deliveries: list[NewDelivery] = []
        seen: set[tuple[str, str]] = set()
        step = "planning its digest"
        try:
            for channel, recipient in subscriber.recipients():
                key = recipient_key(channel, recipient)
                if (channel == "email" and address_key(recipient) in unsubscribed) or (channel, key) in seen:
                    continue
                seen.add((channel, key))
                reserved = self.store.reserved_versions(subscriber.name, channel, recipient)
                step = "matching and sorting its papers"
                sections = sections_for(subscriber, matches, reserved)
                reason = None
                if not any(section.matches for section in sections):
                    if not subscriber.send_empty or subscriber.schedule.kind == "instant" or empty_reason is None:
                        continue
                    reason = empty_reason
                step = f"rendering its {channel} digest"
                digest = build_digest(
                    subscriber,
                    sections,
                    period_start=cursor,
                    period_end=now,
                    config_path=config.path.name,
                    empty_reason=reason,
                )
                deliveries.append(self._render(digest_id, subscriber, digest, channel, recipient, now))
        except StoreError:
            raise
        except Exception as exc:
            problem = f"{step}: {describe_failure(exc)}"
            log.error("digest for %s not planned; its papers wait for the next attempt: %s", subscriber.name, problem)
            log.debug("digest for %s not planned", subscriber.name, exc_info=exc)
            return problem
        self.store.record_digest(
            digest_id=digest_id,
            subscriber=subscriber.name,
            kind=subscriber.schedule.kind,
            period_start=cursor,
            period_end=now,
            now=now,
            deliveries=deliveries,
            cursor=now,
        )
        if deliveries:
            count = len({paper for delivery in deliveries for paper in delivery.papers})
            report.digests += 1
            report.deliveries += len(deliveries)
            report.papers += count
            report.subscribers.append(subscriber.name)
            self.metrics.record_digest(count)
            log.info("digest %s for %s: %d papers, %d deliveries", digest_id, subscriber.name, count, len(deliveries))
        return None

    def _render(
        self, digest_id: str, subscriber: Subscriber, digest: Digest, channel: str, recipient: str, now: datetime
    ) -> NewDelivery:
        delivery_id = _hash(digest_id, channel, recipient)
        message_id = make_message_id(f"{subscriber.name}|{channel}|{recipient}|{digest_id}", self.settings.mail_domain)
        if channel == "email":
            unsubscribe = self.unsubscribe_url(subscriber.name, recipient)
            rendered = self.renderer.email(digest, unsubscribe_url=unsubscribe)
            payload = build_email(
                rendered,
                sender=self.settings.mail_from,
                recipient=recipient,
                message_id=message_id,
                date=now,
                list_id=f"{subscriber.name}.{self.settings.mail_domain}",
                unsubscribe_url=unsubscribe,
            )
        else:
            messages = self.renderer.slack(digest)
            payload = json.dumps([{"text": m.text, "blocks": list(m.blocks)} for m in messages]).encode()
        return NewDelivery(
            delivery_id=delivery_id,
            channel=channel,
            recipient=recipient,
            message_id=message_id,
            payload=payload,
            papers=papers_of(digest.sections),
        )

    def preview(self, config: Config, subscriber: Subscriber, now: datetime) -> Digest:
        """The digest ``subscriber`` would get next, from stored papers; writes nothing."""
        cursor = self.cursor_of(subscriber, now)
        candidates = self.store.candidates(subscriber.feed_key, cursor, now)
        matches = config.rules.match(candidates, [rule.key for rule in subscriber.rules]) if candidates else {}
        recipients = subscriber.recipients()
        reserved = self.store.reserved_versions(subscriber.name, *recipients[0]) if recipients else {}
        sections: tuple[DigestSection, ...] = sections_for(subscriber, matches, reserved)
        return build_digest(subscriber, sections, period_start=cursor, period_end=now, config_path=config.path.name)
