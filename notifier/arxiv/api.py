"""arXiv export API (``/api/query``): metadata for known ids, category listings for a backfill, and the searches
that find the papers a subscriber likes.

``fetch_metadata`` looks ids up in batches (``id_list``) to add comments, journal references, categories and the
authors' affiliations to papers first seen in an RSS feed, and to describe liked papers. ``fetch_listing`` pages
through ``cat:X AND submittedDate:[...]`` to recover papers that an RSS feed missed (an item cap, downtime).
``fetch_author`` asks for an author's newest papers (``au:"Name"``) and ``find_titles`` for the papers of BibTeX
entries that name no arXiv id (``ti:"..." OR ti:"..."``). All go through the shared :class:`PoliteGate`; the Atom
is screened by :func:`notifier.arxiv.xml.safe_xml_root` and read with ElementTree (``parse_atom`` is pure).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from notifier.arxiv.display import clean_display
from notifier.arxiv.gate import PoliteGate, parse_retry_after
from notifier.arxiv.rss import ARXIV_ID
from notifier.arxiv.xml import safe_xml_root
from notifier.errors import FeedHTTPError, FeedParseError
from notifier.matching.text import tokenize
from notifier.models import Paper

logger = logging.getLogger(__name__)

ID_BATCH = 100  # ids per id_list request
MAX_PAGE = 2000  # arXiv returns at most this many entries per call
DEFAULT_MAX_RESULTS = 10_000
AUTHOR_LIMIT = 100  # an author's newest papers, asked for in one request
TITLE_CANDIDATES = 10  # the answers to a title search read for the one whose title is the same
TITLE_BATCH = 10  # titles searched for in one request (ti:"..." OR ti:"...")
_NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "arxiv": "http://arxiv.org/schemas/atom",
    "opensearch": "http://a9.com/-/spec/opensearch/1.1/",
}
_VERSION = re.compile(r"v\d+$")
_ARXIV_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/)?10\.48550/arxiv\.(?P<id>\S+)$", re.IGNORECASE)
_PLAIN_ID = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Za-z]{2})?/\d{7})$")
# BibTeX's braces that keep a title's case ("{GPU}s"); those of a LaTeX command's argument ("\\emph{x}") stay.
_BIBTEX_BRACE = re.compile(r"(\\(?:[A-Za-z]+|[^A-Za-z\s])\s*)?\{")
_MOJIBAKE = re.compile("[\u00c2-\u00df][\u0080-\u00bf]|[\u00e0-\u00ef][\u0080-\u00bf]{2}")


@dataclass(frozen=True, slots=True)
class ApiEntry:
    """One paper as the export API describes it (display text throughout)."""

    arxiv_id: str  # without version
    version: int
    title: str
    abstract: str
    authors: tuple[str, ...]
    categories: tuple[str, ...]  # primary first
    comment: str | None
    journal_ref: str | None
    doi: str | None
    published: datetime | None  # first version submitted
    updated: datetime | None  # this version submitted
    affiliations: tuple[str, ...] = ()  # the authors' (arxiv:affiliation), distinct, in author order

    @property
    def primary_category(self) -> str | None:
        return self.categories[0] if self.categories else None

    def to_paper(self, *, announce_type: str = "new", backfilled: bool = True) -> Paper:
        return Paper(
            arxiv_id=self.arxiv_id,
            version=self.version,
            title=self.title,
            abstract=self.abstract,
            authors=self.authors,
            categories=self.categories,
            announce_type=announce_type,
            comment=self.comment,
            journal_ref=self.journal_ref,
            backfilled=backfilled,
        )


@dataclass(frozen=True, slots=True)
class AtomPage:
    """One API answer: the opensearch counters and the entries."""

    total_results: int
    start_index: int
    items_per_page: int
    entries: list[ApiEntry]


def enrich(paper: Paper, entry: ApiEntry) -> Paper:
    """``paper`` with what only the API knows (comment, journal ref, and categories when the feed had none)."""
    return replace(
        paper,
        comment=entry.comment or paper.comment,
        journal_ref=entry.journal_ref or paper.journal_ref,
        categories=paper.categories or entry.categories,
    )


async def fetch_metadata(gate: PoliteGate, api_url: str, ids: Sequence[str]) -> dict[str, ApiEntry]:
    """Look ``ids`` up (``2506.00003`` or ``2506.00003v2``), 100 per request; keyed by id without version.

    Ids arXiv does not know are simply absent from the result; a malformed id makes arXiv refuse the whole batch
    (:class:`FeedHTTPError` with status 400 and arXiv's message).
    """
    unique: dict[str, str] = {}  # one lookup per paper, whichever spelling came first
    for raw in ids:
        if raw.strip():
            unique.setdefault(_VERSION.sub("", raw.strip()), raw.strip())
    wanted = list(unique.values())
    found: dict[str, ApiEntry] = {}
    for start in range(0, len(wanted), ID_BATCH):
        batch = wanted[start : start + ID_BATCH]
        params = {"id_list": ",".join(batch), "start": "0", "max_results": str(len(batch))}
        page = await _query(gate, api_url, params, what=f"id_list of {len(batch)} ids")
        for entry in page.entries:
            found[entry.arxiv_id] = entry
    return found


async def fetch_author(gate: PoliteGate, api_url: str, name: str, *, limit: int = AUTHOR_LIMIT) -> list[ApiEntry]:
    """The papers of the author ``name`` (``au:"Tianyin Xu"``), newest submission first, at most ``limit``: one
    request. arXiv matches the name as a phrase among each paper's author names, as its own search does."""
    phrase = " ".join(name.replace('"', " ").split())
    if not phrase:
        return []
    params = {
        "search_query": f'au:"{phrase}"',
        "start": "0",
        "max_results": str(limit),
        "sortBy": "submittedDate",
        "sortOrder": "descending",
    }
    page = await _query(gate, api_url, params, what=f'author search au:"{phrase}"')
    return page.entries[:limit]


async def find_title(gate: PoliteGate, api_url: str, title: str) -> ApiEntry | None:
    """The arXiv paper whose title is ``title`` (a BibTeX entry's), or None: one request (``ti:"..."``).

    arXiv's answers to a title search are only candidates: one is accepted when its title is the same once both
    are normalised (:func:`normalise_title`: case, accents, LaTeX and BibTeX markup, punctuation and whitespace
    do not count), so a paper with a similar title is never taken for the one meant.
    """
    phrase = normalise_title(title)
    if not phrase:
        return None
    params = {"search_query": f'ti:"{phrase}"', "start": "0", "max_results": str(TITLE_CANDIDATES)}
    page = await _query(gate, api_url, params, what=f'title search ti:"{phrase}"')
    wanted = phrase.replace(" ", "")
    return next((e for e in page.entries if normalise_title(e.title).replace(" ", "") == wanted), None)


@dataclass(frozen=True, slots=True)
class TitleSearch:
    """The answer to :func:`find_titles`: the paper found for each title that has one, and the titles to ask about
    alone (:func:`find_title`) because arXiv had more candidates than it gave."""

    found: dict[str, ApiEntry]
    unsure: list[str]


async def find_titles(gate: PoliteGate, api_url: str, titles: Sequence[str]) -> TitleSearch:
    """:func:`find_title` of at most :data:`TITLE_BATCH` titles in one request (``ti:"..." OR ti:"..."``).

    When arXiv has more candidates than one answer holds, a title without its paper among them is *unsure*: a
    generic title's many namesakes may have crowded it out.
    """
    if len(titles) > TITLE_BATCH:
        raise ValueError(f"at most {TITLE_BATCH} titles a request")
    phrases = {title: phrase for title in titles if (phrase := normalise_title(title))}
    if not phrases:
        return TitleSearch({}, [])
    size = TITLE_BATCH * TITLE_CANDIDATES
    params = {
        "search_query": " OR ".join(f'ti:"{phrase}"' for phrase in dict.fromkeys(phrases.values())),
        "start": "0",
        "max_results": str(size),
    }
    page = await _query(gate, api_url, params, what=f"title search of {len(phrases)} titles")
    by_title: dict[str, ApiEntry] = {}
    for entry in page.entries:
        by_title.setdefault(normalise_title(entry.title).replace(" ", ""), entry)
    found = {title: by_title[key] for title, phrase in phrases.items() if (key := phrase.replace(" ", "")) in by_title}
    complete = page.total_results <= len(page.entries)
    return TitleSearch(found, [] if complete else [title for title in phrases if title not in found])


def normalise_title(title: str) -> str:
    """A title as :func:`find_title` compares it: its words case-, accent- and LaTeX-folded, BibTeX's protecting
    braces dropped, one space apart (``"{GPU}s Re-visited: \\\"{U}ber"`` -> ``"gpus re visited uber"``)."""
    unbraced = _BIBTEX_BRACE.sub(lambda m: m.group(0) if m.group(1) else "", title).replace("}", "")
    return " ".join(tokenize(unbraced))


def arxiv_id_of_doi(doi: str) -> str | None:
    """The arXiv id that a DOI arXiv registered names (``10.48550/arXiv.2401.01234`` -> ``2401.01234``), else None.

    The export API cannot search by DOI: a paper known by another DOI (a journal's) can only be found by its title.
    """
    found = _ARXIV_DOI.match(doi.strip())
    if found is None:
        return None
    arxiv_id = _VERSION.sub("", found.group("id"))
    return arxiv_id if _PLAIN_ID.match(arxiv_id) else None


def is_arxiv_id(text: str) -> bool:
    """Whether ``text`` is an arXiv id without version (``2401.01234``, ``math/0601001``): arXiv refuses a whole
    ``id_list`` that holds a malformed one."""
    return _PLAIN_ID.match(text) is not None


async def fetch_listing(
    gate: PoliteGate,
    api_url: str,
    category: str,
    start: datetime,
    end: datetime,
    *,
    page_size: int = MAX_PAGE,
    max_results: int = DEFAULT_MAX_RESULTS,
) -> list[Paper]:
    """Papers in ``category`` first submitted in [start, end] (aware datetimes), oldest first, as backfilled papers.

    ``announce_type`` is "new" when the paper's primary category is ``category`` (or inside it, for an archive such
    as ``math``), else "cross". Pages of ``page_size`` (at most 2,000) until arXiv has no more or ``max_results``.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("fetch_listing needs timezone-aware start and end")
    if not 0 < page_size <= MAX_PAGE:
        raise ValueError(f"page_size must be in 1..{MAX_PAGE}")
    window = f"{start.astimezone(UTC):%Y%m%d%H%M} TO {end.astimezone(UTC):%Y%m%d%H%M}"
    query = f"cat:{category} AND submittedDate:[{window}]"
    papers: dict[str, Paper] = {}
    offset = 0
    while offset < max_results:
        size = min(page_size, max_results - offset)
        params = {
            "search_query": query,
            "start": str(offset),
            "max_results": str(size),
            "sortBy": "submittedDate",
            "sortOrder": "ascending",
        }
        page = await _query(gate, api_url, params, what=f"listing {category} [{window}] from {offset}")
        for entry in page.entries:
            primary = entry.primary_category or ""
            own = primary == category or primary.startswith(category + ".")
            papers.setdefault(entry.arxiv_id, entry.to_paper(announce_type="new" if own else "cross"))
        offset += len(page.entries)
        if not page.entries or offset >= page.total_results:
            break
    return list(papers.values())


async def _query(gate: PoliteGate, api_url: str, params: dict[str, str], *, what: str) -> AtomPage:
    response = await gate.get(api_url, params=params)
    if response.status == 200:
        return parse_atom(response.body, what=what)
    message = f"arXiv API answered HTTP {response.status} for {what}"
    if response.body.lstrip().startswith(b"<"):
        with contextlib.suppress(FeedParseError):  # an Atom error entry raises FeedHTTPError with arXiv's words
            parse_atom(response.body, what=what, status=response.status)
    raise FeedHTTPError(
        message, status=response.status, retry_after=parse_retry_after(response.headers.get("Retry-After"))
    )


def parse_atom(body: bytes, *, what: str = "API answer", status: int = 200) -> AtomPage:
    """Parse an export-API Atom body. An error entry (title "Error") raises :class:`FeedHTTPError` with its text."""
    root = safe_xml_root(body, what=what)
    if root.tag != f"{{{_NS['atom']}}}feed":
        raise FeedParseError(f"{what}: expected an Atom feed, got <{root.tag}>")
    entries: list[ApiEntry] = []
    for node in root.findall("atom:entry", _NS):
        entry_id = _text(node, "atom:id") or ""
        if "/api/errors" in entry_id or _text(node, "atom:title") == "Error":
            detail = _text(node, "atom:summary") or entry_id
            raise FeedHTTPError(f"arXiv API refused {what}: {detail}", status=status)
        entry = _entry(node, entry_id)
        if entry is None:
            logger.warning("%s: entry without an arXiv id (%r); skipped", what, entry_id)
            continue
        entries.append(entry)
    return AtomPage(
        total_results=_int(root, "opensearch:totalResults", len(entries)),
        start_index=_int(root, "opensearch:startIndex", 0),
        items_per_page=_int(root, "opensearch:itemsPerPage", len(entries)),
        entries=entries,
    )


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 read as Latin-1 (``WÃ¼bben`` -> ``Wübben``), only when the whole string round-trips cleanly."""
    if not _MOJIBAKE.search(text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _entry(node: Element, entry_id: str) -> ApiEntry | None:
    match = ARXIV_ID.search(entry_id)
    if match is None:
        return None
    primary_node = node.find("arxiv:primary_category", _NS)
    primary = primary_node.get("term") if primary_node is not None else None
    terms = [t for c in node.findall("atom:category", _NS) if (t := c.get("term"))]
    categories = list(dict.fromkeys(([primary] if primary else []) + terms))
    author_nodes = node.findall("atom:author", _NS)
    authors = tuple(repair_mojibake(name) for a in author_nodes if (name := _text(a, "atom:name")))
    affiliations = (
        repair_mojibake(text)
        for a in author_nodes
        for place in a.findall("arxiv:affiliation", _NS)
        if (text := clean_display(place.text))
    )
    return ApiEntry(
        arxiv_id=match.group("id"),
        version=int(match.group("version")),
        title=repair_mojibake(_text(node, "atom:title") or ""),
        abstract=repair_mojibake(_text(node, "atom:summary") or ""),
        authors=authors,
        categories=tuple(categories),
        comment=_optional(node, "arxiv:comment"),
        journal_ref=_optional(node, "arxiv:journal_ref"),
        doi=_optional(node, "arxiv:doi"),
        published=_datetime(_text(node, "atom:published")),
        updated=_datetime(_text(node, "atom:updated")),
        affiliations=tuple(dict.fromkeys(affiliations)),
    )


def _text(node: Element, path: str) -> str | None:
    found = node.find(path, _NS)
    if found is None or found.text is None:
        return None
    return clean_display(found.text) or None


def _optional(node: Element, path: str) -> str | None:
    text = _text(node, path)
    return repair_mojibake(text) if text else None


def _int(root: Element, path: str, default: int) -> int:
    text = _text(root, path)
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
