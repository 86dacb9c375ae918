"""Papers ranked by how much they look like a subscriber's own: the scores a planned digest orders and filters by.

The TF-IDF corpus is fitted on the papers the store has seen lately (:data:`CORPUS_DAYS`, at most
:data:`CORPUS_PAPERS`), once a UTC day; each ranked subscriber's profile is made once from its liked and disliked
papers (looked up on arXiv after each poll, kept in the store). A subscriber whose liked papers are not known yet
(the first poll has not fetched them, arXiv failed) is planned as if it did not rank: its keyword sections as
usual, in announcement order, and its similar-only sections empty; one log line says so.

What a subscriber's readers said through the links under ranked papers counts as well (:func:`with_feedback`): a
paper they want more like joins its liked papers, one they want fewer like its disliked papers; a click overrules
the config for its paper.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta

from notifier.arxiv.likes import liked_papers_of
from notifier.config.subscribers import Rule, Subscriber
from notifier.errors import StoreError
from notifier.models import Match, Paper
from notifier.relevance import Corpus, Profile
from notifier.store import Store
from notifier.store.feedback import Feedback

log = logging.getLogger(__name__)

CORPUS_DAYS = 30  # days of papers the vectoriser is fitted on
CORPUS_PAPERS = 20_000  # at most this many of them, the newest
TOP_SLACK = 50  # a ranked rule's best papers beyond its top, for the recipients who already had some of them


class Rankings:
    """The planner's view of similarity: one corpus a day, one profile per subscriber and definition."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._corpus: tuple[date, Corpus] | None = None
        self._profiles: dict[str, Profile | None] = {}  # made from the papers in _liked, with today's corpus
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
        feedback = self.store.feedback_of(s.name for s in wanted)
        given = self.store.reference_papers({arxiv_id for each in feedback.values() for arxiv_id in each})
        for subscriber in wanted:
            name = subscriber.name
            papers = with_feedback(liked[name], disliked.get(name, []), feedback.get(name, {}), given)
            if self._liked.get(subscriber.name) != papers:
                self._liked[subscriber.name] = papers
                self._profiles.pop(subscriber.name, None)

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
                return self._profiles[subscriber.name]
            if subscriber.name not in self._liked:
                self.prepare([subscriber])
            liked, disliked = self._liked[subscriber.name]
            profile = corpus.profile(liked, disliked) if liked else None
        except StoreError:
            raise
        except Exception:  # a failure of the ranking itself: this digest goes out unranked, the others as usual
            log.exception("ranking %s's papers failed: its digest is not ranked this time", subscriber.name)
            self._profiles[subscriber.name] = None
            return None
        if profile is None and subscriber.name not in self._unknown_logged:
            self._unknown_logged.add(subscriber.name)
            log.warning(
                "none of %s's liked papers is known yet (they are looked up on arXiv after each poll): its digest"
                " is not ranked this time",
                subscriber.name,
            )
        self._profiles[subscriber.name] = profile
        return profile


def with_feedback(
    liked: Sequence[Paper], disliked: Sequence[Paper], feedback: Feedback, papers: Mapping[str, Paper]
) -> tuple[list[Paper], list[Paper]]:
    """The liked and disliked papers a subscriber ranks by: those of its config, and those of its ``feedback``
    (looked up in ``papers``), a paper it wants more like added to the liked ones and taken out of the disliked
    ones, and the reverse for a paper it wants fewer like."""
    said = {arxiv_id: kind for arxiv_id, (kind, _at) in feedback.items()}

    def kept(config: Sequence[Paper], kind: str) -> list[Paper]:
        chosen = [paper for paper in config if said.get(paper.arxiv_id, kind) == kind]
        known = {paper.arxiv_id for paper in chosen}
        given = [papers[i] for i, k in said.items() if k == kind and i in papers and i not in known]
        return chosen + given

    return kept(liked, "more"), kept(disliked, "fewer")


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
