"""Papers ranked by how much they look like a subscriber's own: the scores a planned digest orders and filters by.

The TF-IDF corpus is fitted on the papers the store has seen lately (:data:`CORPUS_DAYS`, at most
:data:`CORPUS_PAPERS`), once a UTC day; each ranked subscriber's profile is made once from its liked and disliked
papers (looked up on arXiv after each poll, kept in the store). A subscriber whose liked papers are not known yet
(the first poll has not fetched them, arXiv failed) is planned as if it did not rank: its keyword sections as
usual, in announcement order, and its similar-only sections empty; one log line says so.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta

from notifier.arxiv.likes import liked_papers_of
from notifier.config.subscribers import Rule, Subscriber
from notifier.errors import StoreError
from notifier.models import Match, Paper
from notifier.relevance import Corpus, Profile
from notifier.store import Store

log = logging.getLogger(__name__)

CORPUS_DAYS = 30  # days of papers the vectoriser is fitted on
CORPUS_PAPERS = 20_000  # at most this many of them, the newest
TOP_SLACK = 50  # a ranked rule's best papers beyond its top, for the recipients who already had some of them
PROFILES_KEPT = 1_000  # profiles kept from one plan to the next (a trained one is about 100 KB), the latest used


class Rankings:
    """The planner's view of similarity: one corpus a day, one profile per subscriber and definition."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._corpus: tuple[date, Corpus] | None = None
        self._profiles: OrderedDict[str, Profile | None] = OrderedDict()  # from the papers in _liked, today's corpus
        self._liked: dict[str, tuple[list[Paper], list[Paper]]] = {}  # name -> (liked, disliked) papers
        self._unknown_logged: set[str] = set()

    def prepare(self, subscribers: Sequence[Subscriber]) -> None:
        """Read the liked and disliked papers of the ranked subscribers among ``subscribers`` afresh (a poll may have
        looked more up), in a few queries for them all: one at a time, 10,000 subscribers take half a minute."""
        wanted = [s for s in subscribers if s.ranks]
        if not wanted:
            return
        liked = liked_papers_of(self.store, {s.name: s.likes for s in wanted})
        disliked = liked_papers_of(self.store, {s.name: s.dislikes for s in wanted if s.dislikes})
        known, self._liked = self._liked, {}  # only this plan's subscribers' papers are held
        for subscriber in wanted:
            papers = (liked[subscriber.name], disliked.get(subscriber.name, []))
            if known.get(subscriber.name) != papers:
                self._profiles.pop(subscriber.name, None)
            self._liked[subscriber.name] = papers

    def corpus(self, now: datetime) -> Corpus | None:
        """The corpus of the day, fitted on first use; None while the store has too few papers to fit one."""
        if self._corpus is None or self._corpus[0] != now.date():  # a new day: its papers join the corpus
            papers = self.store.recent_papers(now - timedelta(days=CORPUS_DAYS), CORPUS_PAPERS)
            if not papers:
                return None
            self._corpus = (now.date(), Corpus.fit(papers))
            self._profiles.clear()
        return self._corpus[1]

    def profile(self, subscriber: Subscriber, now: datetime) -> Profile | None:
        """``subscriber``'s profile, or None when none of its liked papers is known yet (logged once), or ranking
        them failed (logged): then its digest is planned unranked, and no one else's is held up."""
        try:
            corpus = self.corpus(now)  # first: a new day's corpus drops the profiles made with the old one
            if corpus is None:
                return None
            if subscriber.name in self._profiles:
                self._profiles.move_to_end(subscriber.name)
                return self._profiles[subscriber.name]
            if subscriber.name not in self._liked:
                self.prepare([subscriber])
            liked, disliked = self._liked[subscriber.name]
            profile = corpus.profile(liked, disliked) if liked else None
        except StoreError:
            raise
        except Exception:  # a failure of the ranking itself: this digest goes out unranked, the others as usual
            log.exception("ranking %s's papers failed: its digest is not ranked this time", subscriber.name)
            self._keep(subscriber.name, None)
            return None
        if profile is None and subscriber.name not in self._unknown_logged:
            self._unknown_logged.add(subscriber.name)
            log.warning(
                "none of %s's liked papers is known yet (they are looked up on arXiv after each poll): its digest"
                " is not ranked this time",
                subscriber.name,
            )
        self._keep(subscriber.name, profile)
        return profile

    def _keep(self, name: str, profile: Profile | None) -> None:
        self._profiles[name] = profile
        while len(self._profiles) > PROFILES_KEPT:
            self._profiles.popitem(last=False)


class RankedMatches(Mapping[str, list[Match]]):
    """A subscriber's matches by rule key, with each match's similarity: a similar-only rule's matches are every
    paper it can see, a rule with ``similar`` keeps those over its ``min_score``, best first, and with ``sort:
    relevance`` every rule's matches come best first. How many a section shows (``top``) is the digest's to cut,
    once a recipient's papers already sent are left out."""

    def __init__(
        self, subscriber: Subscriber, matches: Mapping[str, list[Match]], visible: Sequence[Paper], profile: Profile
    ) -> None:
        self.subscriber = subscriber
        self.matches = matches
        self.visible = visible
        self.profile = profile
        self._rules = {rule.key: rule for rule in subscriber.rules}
        self._scored: dict[str, list[Match]] = {}

    def __getitem__(self, key: str) -> list[Match]:
        found = self._scored.get(key)
        if found is None:
            found = self._scored[key] = self._rank(self._rules[key])
        return found

    def _rank(self, rule: Rule) -> list[Match]:
        if rule.query:
            matches = list(self.matches.get(rule.key, ()))
        else:
            matches = [Match(paper, rule.name, ()) for paper in self.visible]
        if rule.similar is None and self.subscriber.sort != "relevance":
            return matches
        scores = self.profile.scores([match.paper for match in matches])
        similar = rule.similar
        top = None if similar is None or similar.top is None else similar.top + TOP_SLACK
        chosen = scores.best(top=top, min_score=None if similar is None else similar.min_score)
        return [Match(matches[i].paper, matches[i].rule, matches[i].hits, scores.similarity(i)) for i in chosen]

    def __iter__(self) -> Iterator[str]:
        return iter(key for key, rule in self._rules.items() if rule.similar is not None or key in self.matches)

    def __len__(self) -> int:
        return sum(1 for _ in self)
