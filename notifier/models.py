"""Plain frozen dataclasses shared by every stage of the flow.

feed bytes -> :class:`Paper` -> :class:`Match` -> :class:`Digest` -> rendered message -> :class:`Outgoing` -> delivery

Text fields of a :class:`Paper` are *display text*: HTML entities decoded exactly once, whitespace runs collapsed to
one space, stripped. Matching normalises further (case, accents, LaTeX, punctuation) but reports every
:class:`Hit` as a span of the display text, so renderers can highlight it.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, TypeVar, get_args

ANNOUNCE_TYPES = ("new", "cross", "replace", "replace-cross")

ScheduleKind = Literal["daily", "weekly", "instant"]
ChannelKind = Literal["email", "slack"]
FeedbackKind = Literal["more", "fewer"]  # a reader asks for more, or fewer, papers like a ranked one
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = get_args(FeedbackKind)


def feed_key(categories: Iterable[str]) -> str:
    """The key of a category set's feed, and its URL suffix: the categories deduplicated, sorted and joined by '+'
    (``cs.CL+cs.LG``), so that one set has one key (and one ETag) whatever order it is written in."""
    chosen = sorted(set(categories))
    if not chosen or any(not c or "+" in c or "/" in c for c in chosen):
        raise ValueError(f"invalid category set {chosen!r}")
    return "+".join(chosen)


_Class = TypeVar("_Class", bound=type)


def _pickled_by_fields(cls: _Class) -> _Class:
    """Pickle instances of the dataclass ``cls`` as their fields in order, made again by its constructor.

    A frozen dataclass with slots otherwise pickles through a generic state that looks its fields up anew for each
    object, which costs several times more; digests cross to render worker processes with thousands of papers,
    matches and hits in them."""
    values = operator.attrgetter(*(item.name for item in dataclasses.fields(cls)))

    def reduce(self: Any) -> tuple[type, tuple[object, ...]]:
        return cls, values(self)

    setattr(cls, "__reduce__", reduce)  # noqa: B010  (assigning a method to a class)
    return cls


# Where a delivery is in the outbox: pending -> sending -> sent, or retry (a temporary failure, sent again when due),
# failed (a permanent one, until `notifier retry`), cancelled (unsubscribed, or its subscriber left the config).
DeliveryState = Literal["pending", "sending", "sent", "retry", "failed", "cancelled"]
DELIVERY_STATES: tuple[DeliveryState, ...] = get_args(DeliveryState)


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Paper:
    """One arXiv paper as announced in one feed."""

    arxiv_id: str  # without version, e.g. "2506.00003" or "math/0601001"
    version: int  # 1 for "v1"
    title: str
    abstract: str
    authors: tuple[str, ...]  # one name per author, display text
    categories: tuple[str, ...] = ()  # primary first when known; empty when the feed carried none
    announce_type: str = "new"  # one of ANNOUNCE_TYPES, relative to the feed it came from
    announced: date | None = None  # the announcement day (the feed's pubDate, US Eastern)
    comment: str | None = None  # arXiv comment ("accepted at ..."), known after API enrichment
    journal_ref: str | None = None
    backfilled: bool = False  # came from the API after an overflow or downtime, not from the RSS feed

    def __hash__(self) -> int:
        """By id and version only, which equal papers share: renderers key their caches by papers, and hashing every
        field (the authors' tuple is hashed anew each time) cost as much as a look-up."""
        return hash((self.arxiv_id, self.version))

    @property
    def key(self) -> tuple[str, int]:
        """(arxiv_id, version): what a summary is stored under."""
        return (self.arxiv_id, self.version)

    @property
    def versioned_id(self) -> str:
        return f"{self.arxiv_id}v{self.version}"

    @property
    def abs_url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv_id}"

    @property
    def pdf_url(self) -> str:
        return f"https://arxiv.org/pdf/{self.versioned_id}"

    @property
    def html_url(self) -> str:
        return f"https://arxiv.org/html/{self.versioned_id}"

    @property
    def primary_category(self) -> str | None:
        return self.categories[0] if self.categories else None

    @property
    def is_cross_list(self) -> bool:
        return self.announce_type in ("cross", "replace-cross")

    @property
    def is_update(self) -> bool:
        return self.announce_type in ("replace", "replace-cross")


class Field(enum.StrEnum):
    """The parts of a paper a query term can look at (``ti:``, ``abs:``, ``au:``, ``cat:``, ``co:``)."""

    TITLE = "title"
    ABSTRACT = "abstract"
    AUTHORS = "authors"
    CATEGORIES = "categories"
    COMMENT = "comment"


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Hit:
    """One place where a query term matched.

    ``start``/``end`` index the display text of ``field``; for AUTHORS and CATEGORIES, ``index`` is the position of
    the author or category in its tuple and the span is within that one string.
    """

    term: str  # the term as written in the query, e.g. '"reinforcement learning"' or 'au:"Y Zhang"'
    field: Field
    start: int
    end: int
    index: int = 0

    def __hash__(self) -> int:
        """Without ``field``: an enum member hashes in Python, and a hit's term, span and index rarely repeat."""
        return hash((self.term, self.start, self.end, self.index))


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Similarity:
    """Why a ranked paper was chosen: how much it looks like a subscriber's own papers, and the nearest of them."""

    score: float  # 0..1: higher is more like the papers the subscriber likes
    liked_id: str  # the nearest liked paper, e.g. "2401.01234"
    liked_title: str


@dataclass(frozen=True, slots=True)
class FeedbackUrls:
    """The signed links under a ranked paper that ask for more, or fewer, papers like it."""

    more: str
    fewer: str


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Match:
    """A paper that a rule selected, with the evidence: the terms that matched, and for a ranked rule (or a
    subscriber who sorts by relevance) its similarity to the subscriber's papers."""

    paper: Paper
    rule: str  # the rule's name
    hits: tuple[Hit, ...]
    similarity: Similarity | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """What an LLM wrote about one version of a paper: machine-written, shown as such, and escaped like any paper
    text. Every field is validated and capped in length before it gets here."""

    arxiv_id: str
    version: int
    summary: str  # one paragraph, the TL;DR
    topic: str  # a broad field, e.g. "mlsys"
    subtopic: str  # narrower, e.g. "llm training"
    keywords: tuple[str, ...]  # a few, e.g. ("asynchronous optimization", "sparse averaging")
    institution: str | None = None  # from the arXiv API's affiliations, else the abstract, else unknown
    model: str = ""  # the model that wrote it

    @property
    def key(self) -> tuple[str, int]:
        return (self.arxiv_id, self.version)


SummaryKey = tuple[str, int]  # (arxiv_id, version)


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class DigestSection:
    """One rule's part of a digest. A rich section shows each paper in full with its LLM summary and tags; the
    others, in a digest that has rich sections, one line per paper."""

    rule: str
    query: str
    matches: tuple[Match, ...]
    rich: bool = False


@dataclass(frozen=True, slots=True)
class Digest:
    """What one subscriber receives for one period, before it is rendered for a channel."""

    subscriber: str
    period_start: datetime
    period_end: datetime
    sections: tuple[DigestSection, ...]
    kind: ScheduleKind = "daily"
    empty_reason: str | None = None  # set when a digest with no papers is sent on purpose (send_empty)
    config_path: str = "subscribers.yaml"
    summaries: Mapping[SummaryKey, Summary] = field(default_factory=dict)  # stored summaries of its rich papers
    feedback: Mapping[str, FeedbackUrls] = field(default_factory=dict)  # arxiv_id -> links, for its ranked papers

    @property
    def has_rich(self) -> bool:
        """Whether some section asked for rich entries (then the others are shown one line per paper)."""
        return any(section.rich for section in self.sections)

    def summary_of(self, paper: Paper) -> Summary | None:
        """The stored summary of this version of ``paper``, or None (none asked for, or not made in time)."""
        return self.summaries.get((paper.arxiv_id, paper.version))

    @property
    def papers(self) -> tuple[Paper, ...]:
        """Distinct papers in section order (a paper that several rules select is counted once)."""
        return tuple(match.paper for match in self.first_matches)

    @property
    def first_matches(self) -> tuple[Match, ...]:
        """Each distinct paper's first match, in section order."""
        seen: dict[str, Match] = {}
        for section in self.sections:
            for match in section.matches:
                seen.setdefault(match.paper.arxiv_id, match)
        return tuple(seen.values())

    @property
    def is_empty(self) -> bool:
        return not any(section.matches for section in self.sections)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """One ``chat.postMessage`` worth of content: fallback text plus at most 50 blocks."""

    text: str
    blocks: tuple[dict[str, object], ...]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message that the outbox hands to a channel.

    ``payload`` is exactly what the channel sends: RFC 5322 bytes for email, a JSON list of Slack messages for
    Slack. ``part`` counts the Slack messages of this delivery already accepted, so a retry resumes after them.
    ``created_at`` is when the outbox wrote the delivery (None for a message sent outside it, such as a test message).
    """

    delivery_id: str
    subscriber: str
    channel: ChannelKind
    recipient: str  # an address, a Slack channel, or a webhook URL
    message_id: str  # stable across retries: Message-ID for email, client key for Slack
    payload: bytes
    part: int = 0
    created_at: datetime | None = None
