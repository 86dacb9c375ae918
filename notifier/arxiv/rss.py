"""arXiv RSS: fetch one feed through the politeness gate, screen the XML, and parse it into :class:`Paper` objects.

A feed is named by its categories joined with "+" (``cs.CL+cs.LG``); the poller asks for one category at a time.

``fetch_feed`` does the conditional GET (ETag / 304); ``parse_feed`` is pure (bytes in, :class:`ParsedFeed` out)
and reads both the current RSS 2.0 feeds of rss.arxiv.org and the legacy RSS 1.0/RDF feeds. Every body is first
screened by :func:`~notifier.arxiv.xml.safe_xml_root`: a size limit, no DTD or entity declarations (no
entity-expansion bombs), no HTML error page served with status 200, and well-formed XML with a feed root element.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import feedparser

from notifier.arxiv.display import clean_display
from notifier.arxiv.gate import PoliteGate, parse_retry_after
from notifier.arxiv.xml import MalformedXML, safe_xml_root
from notifier.errors import FeedHTTPError, FeedParseError
from notifier.models import ANNOUNCE_TYPES, Paper, feed_key

logger = logging.getLogger(__name__)

EASTERN = ZoneInfo("America/New_York")
FEED_ITEM_CAP = 2000  # rss.arxiv.org truncates a feed (one category or a combined set) at this many items
# New-style ids (0704.0001 onwards) and old-style ids (math/0601001, math.AG/0601001), with a version.
_ID = r"(?P<id>\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Za-z]{2})?/\d{7})v(?P<version>\d+)"
ARXIV_ID = re.compile(_ID)
_ANNOUNCE = re.compile(r"Announce Type:\s*(?P<type>[a-z][a-z\-]*)")
# The tail of a legacy title, "Title. (arXiv:1209.2411v1 [math.PR] UPDATED)", matched from its last "(arXiv:" only.
_RDF_SUFFIX = re.compile(r"\(arXiv:" + _ID + r"\s*\[(?P<cat>[^\]]+)\]\s*(?P<flag>UPDATED|CROSS LISTED)?\)\s*")
# Subject classes listed under another archive's feed (math-ph papers are math.MP in the math feed).
_LEGACY_ALIASES = {"math-ph": "math.MP"}
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """What one feed body says: its dates, its papers (deduplicated), and how many items it carried."""

    feed_key: str
    last_build_date: datetime | None
    pub_date: date | None  # the announcement day the feed is for (US Eastern)
    papers: list[Paper] = field(default_factory=list)
    item_count: int = 0

    @property
    def capped(self) -> bool:
        """True when the feed hit arXiv's item cap, so papers are probably missing and a backfill is needed."""
        return self.item_count >= FEED_ITEM_CAP


@dataclass(frozen=True, slots=True)
class FeedResult:
    """The outcome of one conditional GET of one feed."""

    feed_key: str
    status: Literal["ok", "not_modified"]
    etag: str | None
    last_build_date: datetime | None
    pub_date: date | None
    papers: list[Paper]
    item_count: int
    capped: bool


async def fetch_feed(gate: PoliteGate, base_url: str, categories: Sequence[str], etag: str | None) -> FeedResult:
    """GET ``base_url + "+".join(categories)`` with ``If-None-Match``; 304 gives status "not_modified"."""
    key = feed_key(categories)
    headers = {"If-None-Match": etag} if etag else {}
    response = await gate.get(base_url + key, headers=headers)
    if response.status == 304:
        return FeedResult(key, "not_modified", etag, None, None, [], 0, False)
    if response.status != 200:
        raise FeedHTTPError(
            f"arXiv answered HTTP {response.status} for feed {key}",
            status=response.status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    parsed = await asyncio.to_thread(parse_feed, response.body, key)
    return FeedResult(
        feed_key=key,
        status="ok",
        etag=response.headers.get("ETag"),
        last_build_date=parsed.last_build_date,
        pub_date=parsed.pub_date,
        papers=parsed.papers,
        item_count=parsed.item_count,
        capped=parsed.capped,
    )


def parse_feed(body: bytes, feed_key: str) -> ParsedFeed:
    """Parse one RSS 2.0 (or legacy RSS 1.0/RDF) feed body into papers; raises :class:`FeedParseError`."""
    what = f"feed {feed_key}"
    try:
        safe_xml_root(body, what=what)
        malformed: MalformedXML | None = None
    except MalformedXML as exc:
        malformed = exc
    parsed: Any = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    entries: list[Any] = list(parsed.entries)
    if malformed is not None:
        # A complete feed with a small well-formedness slip is still worth reading; a truncated one is not.
        if not entries or not body.rstrip().endswith((b"</rss>", b"</rdf:RDF>")):
            raise malformed
        logger.warning("%s: %s; read %d items leniently", what, malformed, len(entries))
    version = str(parsed.get("version") or "")
    if not version.startswith(("rss", "atom")):
        raise FeedParseError(f"{what}: not an RSS feed (feedparser saw {version or 'no feed'})")
    channel = parsed.feed
    pub = _parse_date(dict.get(channel, "published") or dict.get(channel, "updated"))  # no feedparser key aliasing
    categories = feed_key.split("+")
    legacy = version in ("rss090", "rss10")
    papers: dict[str, Paper] = {}
    for index, entry in enumerate(entries):
        paper = _legacy_paper(entry, categories, pub) if legacy else _paper(entry)
        if paper is None:
            logger.warning("%s: item %d has no arXiv id; skipped", what, index)
            continue
        known = papers.get(paper.arxiv_id)
        if known is None or paper.version > known.version:
            papers[paper.arxiv_id] = paper
    return ParsedFeed(
        feed_key=feed_key,
        last_build_date=None if legacy else _parse_date(dict.get(channel, "updated")),
        pub_date=pub.astimezone(EASTERN).date() if pub else None,
        papers=list(papers.values()),
        item_count=len(entries),
    )


def split_authors(text: str) -> tuple[str, ...]:
    """Split a ``dc:creator`` string into names: commas outside parentheses, and an " and " before the last."""
    names: list[str] = []
    depth = 0
    start = 0
    cleaned = clean_display(text)
    for i, char in enumerate(cleaned):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            names.append(cleaned[start:i])
            start = i + 1
    names.append(cleaned[start:])
    last = names.pop().strip()
    if last.startswith("and "):
        last = last[4:]
    names.extend(_split_last_and(last))
    return tuple(n for n in (name.strip() for name in names) if n)


def _split_last_and(name: str) -> list[str]:
    depth = 0
    for i, char in enumerate(name):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and name.startswith(" and ", i):
            return [name[:i], name[i + 5 :]]
    return [name]


def _paper(entry: Any) -> Paper | None:
    description = str(entry.get("summary") or "")
    match = ARXIV_ID.search(str(entry.get("id") or "")) or ARXIV_ID.search(description[:200])
    if match is None:
        return None
    announce = str(entry.get("arxiv_announce_type") or "").strip()
    if not announce:
        found = _ANNOUNCE.search(description[:200])
        announce = found.group("type") if found else "new"
    if announce not in ANNOUNCE_TYPES:
        logger.debug("unknown announce type %r for %s; treating as new", announce, match.group("id"))
        announce = "new"
    _, sep, abstract = description.partition("Abstract:")
    if not sep:
        abstract = _ANNOUNCE.sub("", description.replace(match.group(0), "", 1)).removeprefix("arXiv:")
    published = _parse_date(dict.get(entry, "published"))
    return Paper(
        arxiv_id=match.group("id"),
        version=int(match.group("version")),
        title=clean_display(entry.get("title")),
        abstract=clean_display(abstract),
        authors=split_authors(str(entry.get("author") or "")),
        categories=tuple(str(t["term"]) for t in entry.get("tags", ()) if t.get("term")),
        announce_type=announce,
        announced=published.astimezone(EASTERN).date() if published else None,
    )


def _legacy_paper(entry: Any, categories: list[str], pub: datetime | None) -> Paper | None:
    found = _split_rdf_title(str(entry.get("title") or ""))
    if found is None:
        return None
    title, match = found
    primary = match.group("cat").strip()
    canonical = _LEGACY_ALIASES.get(primary, primary)
    in_feed = (
        any(canonical == c or canonical.startswith(c + ".") for c in categories) and match["flag"] != "CROSS LISTED"
    )
    update = match.group("flag") is not None  # UPDATED: a replacement; CROSS LISTED: a new cross-list of an old paper
    announce = ("replace" if update else "new") if in_feed else ("replace-cross" if update else "cross")
    creators = _TAG.sub("", str(entry.get("author") or ""))
    return Paper(
        arxiv_id=match.group("id"),
        version=int(match.group("version")),
        title=clean_display(title).removesuffix("."),
        abstract=clean_display(_TAG.sub(" ", str(entry.get("summary") or ""))),
        authors=split_authors(creators),
        categories=(primary,),
        announce_type=announce,
        announced=pub.astimezone(EASTERN).date() if pub else None,
    )


def _split_rdf_title(text: str) -> tuple[str, re.Match[str]] | None:
    """A legacy title split into the title and its "(arXiv:ID [cat] FLAG)" tail; None without such a tail.

    One search from the last "(arXiv:", so the time grows with the title's length, not with its square (a lazy
    title group before the tail rescans every whitespace run once per character).
    """
    start = text.rfind("(arXiv:")
    tail = _RDF_SUFFIX.fullmatch(text, start) if start >= 0 else None
    return None if tail is None else (text[:start].rstrip(), tail)


def _parse_date(text: object) -> datetime | None:
    """An aware datetime from an RFC 822 (RSS) or ISO 8601 (RDF/Atom) date; None when absent or unreadable."""
    if not text:
        return None
    value = str(text).strip()
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=EASTERN)
