"""Papers ranked by how much they look like a subscriber's own: the scores a planned digest orders and filters by.

The TF-IDF corpus is fitted on the papers the store has seen lately (:data:`CORPUS_DAYS`, at most
:data:`CORPUS_PAPERS`), once a UTC day; each ranked subscriber's profile is made once from its liked and disliked
papers (looked up on arXiv after each poll, kept in the store). A subscriber whose liked papers are not known yet
(the first poll has not fetched them, arXiv failed) is planned as if it did not rank: its keyword sections as
usual, in announcement order, and its similar-only sections empty; one log line says so.

With an embedding model set (``NOTIFIER_EMBEDDING_MODEL``), the vectors the store has for the corpus window's papers
and the ranked subscribers' liked and disliked papers are read once per plan, for all subscribers (a few
statements), and make an :class:`~notifier.relevance.embedded.EmbeddedSpace`. A subscriber is ranked there when
every paper it needs (the papers its digest can show, and its liked and disliked ones) has a vector; otherwise by
TF-IDF, as without a model, and one log line per plan says how many subscribers were, and why.

What a subscriber's readers said through the links under ranked papers counts as well (:func:`with_feedback`): a
paper they want more like joins its liked papers, one they want fewer like its disliked papers; a click overrules
the config for its paper.
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
from notifier.relevance.embedded import EmbeddedSpace
from notifier.store import Store
from notifier.store.feedback import Feedback

log = logging.getLogger(__name__)

CORPUS_DAYS = 30  # days of papers the vectoriser is fitted on
CORPUS_PAPERS = 20_000  # at most this many of them, the newest
TOP_SLACK = 50  # a ranked rule's best papers beyond its top, for the recipients who already had some of them
PROFILES_KEPT = 1_000  # profiles kept from one plan to the next (a trained one is about 100 KB), the latest used


class Rankings:
    """The planner's view of similarity: one corpus a day, one profile per subscriber and definition; with an
    ``embedding_model``, the embedding space of the plan and a profile there per subscriber whose papers it has."""

    def __init__(self, store: Store, embedding_model: str | None = None) -> None:
        self.store = store
        self.embedding_model = embedding_model
        self._corpus: tuple[date, Corpus] | None = None
        self._profiles: OrderedDict[str, Profile | None] = OrderedDict()  # from the papers in _liked, today's corpus
        self._liked: dict[str, tuple[list[Paper], list[Paper]]] = {}  # name -> (liked, disliked) papers
        self._fingerprints: dict[str, int] = {}  # name -> the hash of the keys of the papers its profile is made of
        self._unknown_logged: set[str] = set()
        self._space: EmbeddedSpace | None = None
        self._space_read: datetime | None = None  # the ``now`` of the plan the space was read for
        self._space_keys: frozenset[tuple[str, int]] = frozenset()
        self._embedded: dict[str, Profile] = {}  # profiles made in _space
        self._fallen_back: set[str] = set()  # subscribers of this plan ranked by TF-IDF for want of vectors
        self._unplaced: set[tuple[str, int]] = set()  # the papers they need that have no vector
        # Why the last embedding run stopped, when it did: its warning said ranking falls back, so the plan's line
        # about it is for debugging only.
        self.embedding_error: str | None = None

    def prepare(self, subscribers: Sequence[Subscriber], now: datetime | None = None, *, plan: bool = False) -> None:
        """Read the liked and disliked papers of the ranked subscribers among ``subscribers`` afresh (a poll may have
        looked more up), in a few queries for them all: one at a time, 10,000 subscribers take half a minute. A
        subscriber whose papers changed is profiled again. With ``plan`` (a plan's due subscribers), only theirs
        are held from then on. With an embedding model and ``now`` (the plan's), read the vectors of the plan too
        (:meth:`read_vectors`)."""
        wanted = [s for s in subscribers if s.ranks]
        if plan:
            self._liked = {}
        if not wanted:
            return
        for name, papers in ranking_papers(self.store, wanted).items():
            fingerprint = hash(tuple(tuple(paper.key for paper in group) for group in papers))
            if self._fingerprints.get(name) != fingerprint:
                self._fingerprints[name] = fingerprint
                self._profiles.pop(name, None)
                self._embedded.pop(name, None)
            self._liked[name] = papers
        if now is not None:
            self.read_vectors(wanted, now)

    def read_vectors(self, subscribers: Sequence[Subscriber], now: datetime) -> None:
        """With an embedding model, read the vectors of the corpus window's papers and of ``subscribers``' liked and
        disliked papers (those already read, by :meth:`prepare`), once for the plan at ``now``: a few statements
        for every subscriber. The space and its profiles are made again only when the vectors changed."""
        if self.embedding_model is None or self._space_read == now:
            return
        self._space_read = now
        self._fallen_back.clear()
        self._unplaced.clear()
        since = now - timedelta(days=CORPUS_DAYS)
        vectors = self.store.recent_embeddings(self.embedding_model, since, CORPUS_PAPERS)
        recent = sorted(vectors)
        keys = {paper.key for s in subscribers for group in self._liked.get(s.name, ()) for paper in group}
        vectors.update(self.store.embeddings(self.embedding_model, keys - vectors.keys()))
        if self._space is not None and self._space_keys == vectors.keys():
            return  # a paper version's vector never changes: the same keys are the same space
        self._space = EmbeddedSpace(vectors, recent)
        self._space_keys = frozenset(vectors)
        self._embedded.clear()

    def corpus(self, now: datetime) -> Corpus | None:
        """The corpus of the day, fitted on first use; None while the store has too few papers to fit one."""
        if self._corpus is None or self._corpus[0] != now.date():  # a new day: its papers join the corpus
            papers = self.store.recent_papers(now - timedelta(days=CORPUS_DAYS), CORPUS_PAPERS)
            if not papers:
                return None
            self._corpus = (now.date(), Corpus.fit(papers))
            self._profiles.clear()
        return self._corpus[1]

    def profile(self, subscriber: Subscriber, now: datetime, papers: Sequence[Paper] = ()) -> Profile | None:
        """``subscriber``'s profile, or None when none of its liked papers is known yet (logged once), or ranking
        them failed (logged): then its digest is planned unranked, and no one else's is held up. With an embedding
        model, the profile is in the embedding space when ``papers`` (those its digest can show) and its liked and
        disliked papers all have a vector there."""
        try:
            if self.embedding_model is not None:
                embedded = self._embedded_profile(subscriber, now, papers)
                if embedded is not None:
                    return embedded
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

    def _embedded_profile(self, subscriber: Subscriber, now: datetime, papers: Sequence[Paper]) -> Profile | None:
        """``subscriber``'s profile in the embedding space of the plan at ``now``; None (counted for
        :meth:`log_fallbacks`) when a paper it needs has no vector, or none of its liked papers is known."""
        if subscriber.name not in self._liked:
            self.prepare([subscriber], now)
        self.read_vectors([subscriber], now)
        liked, disliked = self._liked[subscriber.name]
        if self._space is None or not liked:
            return None
        if subscriber.name in self._embedded:
            unplaced = self._space.missing(papers)
        else:
            unplaced = self._space.missing([*papers, *liked, *disliked])
        if unplaced:
            self._fallen_back.add(subscriber.name)
            self._unplaced.update(paper.key for paper in unplaced)
            return None
        profile = self._embedded.get(subscriber.name)
        if profile is None:
            profile = self._embedded[subscriber.name] = self._space.profile(liked, disliked)
        return profile

    def log_fallbacks(self) -> None:
        """At the end of a plan: one line saying how many subscribers were ranked by TF-IDF for want of vectors."""
        if self._fallen_back:
            log.log(
                logging.DEBUG if self.embedding_error else logging.INFO,
                "%d ranked subscribers ranked by TF-IDF, not by embeddings (%s), this time: %d of the papers they"
                " need have no embedding yet (they are embedded after each poll)",
                len(self._fallen_back),
                ", ".join(sorted(self._fallen_back)[:5]) + (", ..." if len(self._fallen_back) > 5 else ""),
                len(self._unplaced),
            )
        self._fallen_back.clear()
        self._unplaced.clear()


def ranking_papers(store: Store, subscribers: Sequence[Subscriber]) -> dict[str, tuple[list[Paper], list[Paper]]]:
    """name -> the liked and disliked papers each of ``subscribers`` (those that rank) ranks by: its ``like:`` and
    ``dislike:`` entries' papers with its readers' feedback (:func:`with_feedback`), read in a few queries for all."""
    liked = liked_papers_of(store, {s.name: s.likes for s in subscribers})
    disliked = liked_papers_of(store, {s.name: s.dislikes for s in subscribers if s.dislikes})
    feedback = store.feedback_of(s.name for s in subscribers)
    given = store.reference_papers({arxiv_id for each in feedback.values() for arxiv_id in each})
    return {
        s.name: with_feedback(liked[s.name], disliked.get(s.name, []), feedback.get(s.name, {}), given)
        for s in subscribers
    }


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
        similarities = scores.similarities(chosen)  # the nearest liked papers of all of them, in one product
        return [
            Match(matches[i].paper, matches[i].rule, matches[i].hits, similarity)
            for i, similarity in zip(chosen, similarities, strict=True)
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(key for key, rule in self._rules.items() if rule.similar is not None or key in self.matches)

    def __len__(self) -> int:
        return sum(1 for _ in self)
