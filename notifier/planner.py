"""The outbox writer: turns stored papers into rendered, recorded deliveries for every subscriber that is due.

For each due subscriber: the papers its feed announced since its cursor are matched against its rules (all rules
of a feed at once, through the compiled :class:`RuleSet`), each recipient gets the matches it has not had yet,
the digest is rendered for its channel, and everything is written to the store in one transaction, state
``pending``, before anything is sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from notifier.channels.email import build_email, make_message_id
from notifier.config import Config, Subscriber
from notifier.digest import build_digest, papers_of, sections_for
from notifier.matching import MatchBatch
from notifier.metrics import Metrics
from notifier.models import Digest, DigestSection, Match, Paper
from notifier.render import Renderer
from notifier.settings import Settings
from notifier.store import NewDelivery
from notifier.store_factory import StoreLike
from notifier.store_sql import SubscriberState

log = logging.getLogger(__name__)

FIRST_DIGEST_LOOKBACK = timedelta(days=1)
UnsubscribeUrl = Callable[[str, str], str | None]


@dataclass
class PlanReport:
    digests: int = 0
    deliveries: int = 0
    papers: int = 0
    subscribers: list[str] = field(default_factory=list)


def _hash(*parts: str, length: int = 24) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]


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
        """Write pending deliveries for every due subscriber (every subscriber when ``force``)."""
        report = PlanReport()
        for feed_key, cursor, subscribers, _candidates, matches in self._due_matches(config, now, force=force):
            for subscriber in subscribers:
                reason = (empty_reasons or {}).get(feed_key)
                self._plan_one(config, subscriber, matches, cursor, now, reason, report)
        return report

    def papers_to_enrich(self, config: Config, now: datetime, *, force: bool = False) -> set[str]:
        """Ids of the papers the next :meth:`plan` needs comments for: those its rules match, and every candidate
        of a feed where a due rule reads the comment (``co:``), which only the API knows."""
        wanted: set[str] = set()
        for _key, _cursor, subscribers, candidates, matches in self._due_matches(config, now, force=force):
            if any(rule.key in config.comment_rules for subscriber in subscribers for rule in subscriber.rules):
                wanted.update(paper.arxiv_id for paper in candidates)
            else:
                wanted.update(paper.arxiv_id for key in matches for paper in matches.papers(key))
        return wanted

    def _due_matches(
        self, config: Config, now: datetime, *, force: bool
    ) -> Iterator[tuple[str, datetime, list[Subscriber], list[Paper], LazyMatches]]:
        """Due subscribers grouped by feed and cursor, with that feed's candidate papers and the matches of all
        their rules over them."""
        groups: dict[tuple[str, datetime], list[Subscriber]] = defaultdict(list)
        states = self.store.subscriber_states()
        for subscriber in config.subscribers:
            state = states.get(subscriber.name)
            if force or self.is_due(subscriber, now, state):
                groups[(subscriber.feed_key, self.cursor_of(subscriber, now, state))].append(subscriber)
        for (feed_key, cursor), subscribers in groups.items():
            candidates = self.store.candidates(feed_key, cursor, now)
            keys = [rule.key for subscriber in subscribers for rule in subscriber.rules]
            yield feed_key, cursor, subscribers, candidates, LazyMatches(config.rules.evaluate(candidates, keys))

    def _plan_one(
        self,
        config: Config,
        subscriber: Subscriber,
        matches: Mapping[str, list[Match]],
        cursor: datetime,
        now: datetime,
        empty_reason: str | None,
        report: PlanReport,
    ) -> None:
        digest_id = _hash(subscriber.name, now.isoformat(), length=20)
        unsubscribed = self.store.unsubscribed(subscriber.name)
        deliveries: list[NewDelivery] = []
        for channel, recipient in subscriber.recipients():
            if channel == "email" and recipient.lower() in unsubscribed:
                continue
            reserved = self.store.reserved_versions(subscriber.name, channel, recipient)
            sections = sections_for(subscriber, matches, reserved)
            reason = None
            if not any(section.matches for section in sections):
                if not subscriber.send_empty or subscriber.schedule.kind == "instant" or empty_reason is None:
                    continue
                reason = empty_reason
            digest = build_digest(
                subscriber,
                sections,
                period_start=cursor,
                period_end=now,
                config_path=config.path.name,
                empty_reason=reason,
            )
            deliveries.append(self._render(digest_id, subscriber, digest, channel, recipient, now))
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
