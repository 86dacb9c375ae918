"""A local stand-in for rss.arxiv.org and export.arxiv.org/api, serving captured arXiv feeds.

``ArxivStandIn`` serves ``/rss/{cats}`` (category order does not matter) from the captured feeds of the current day,
with a real ETag and 304 on ``If-None-Match``, and ``/api/query`` answers ``id_list`` look-ups,
``cat:X AND submittedDate:[A TO B]`` listings, and searches of authors (``au:"Name"``) and titles (``ti:"words"``,
several joined by ``OR``: the papers holding those words in a row, sorted as ``sortBy`` asks) from the captured
papers. What it serves is a :class:`Catalogue`: a folder of captured feeds (combined feeds of category sets such as
``cs.SD+eess.AS``), the recorded API answers for some exact ids, and whether to make up what the captures lack.
:func:`bundled_catalogue` is the day shipped in this package (``notifier demo``); the test suite uses a larger one.

The captures carry no per-item categories, submission dates, comments or journal references:

- Without ``synthetic`` (the bundled day), nothing is made up that a digest shows. A category of a captured set is
  served the set's whole feed, with the real announce types, and the API gives each paper its real title,
  abstract and authors and no categories, comment or journal reference.
- With ``synthetic`` (tests), a single category of a set is served its share of the set's feed
  (:func:`category_feed`): each item goes to one or two of the set's categories, chosen by a CRC of its id
  (:func:`item_categories`), the first its primary, so the union over the set's categories is the whole combined
  feed. In a category that is not its primary, a ``new`` item is announced as ``cross`` and a ``replace`` as
  ``replace-cross``, as arXiv does. For the API each paper gets the categories this split gives it (cross items:
  ``math.OC`` first, then those), a comment ("N pages, M figures; synthetic comment") for one paper in three and a
  journal reference ("Synthetic J. Test. V, P (2025)") for one in five, chosen by a CRC of the id
  (:func:`synthetic_metadata`; ``set_metadata`` overrides them).

Neither makes up affiliations: ``set_affiliations(arxiv_id, [...])`` gives a paper's authors theirs, which the API
then serves as each author's ``arxiv:affiliation`` elements.

Either way v1 is taken as submitted just before arXiv's 14:00 US Eastern cut-off on the last weekday before the
feed's day (one minute apart, in feed order), and replacements as first submitted 60 days earlier, so that listings
by submission date have something to select.

Days: ``set_day(day)``; a day with no captured feeds serves a valid empty feed for every category set (a holiday, as
on 2025-12-31). ``add_feed(day, categories, body)`` serves another feed on a day (and each of its categories'
shares, as above), and its papers join the API (a paper added again at a higher version keeps the submission date
of its first). With ``clock=`` (a callable returning an aware datetime) the day served follows that clock instead
of ``set_day``: the feed for day ``d`` from 00:00 US Eastern on ``d``, as arXiv rolls its feeds over;
``add_outage(start, end)`` then answers every request in that span with HTTP 503. :func:`day_feed` cuts a feed
into per-day feeds.

Faults: ``fail_next(path_prefix, mode)`` with mode in :data:`FAULT_MODES`. Every request except ``/_control`` is
recorded (monotonic time, the clock's time when there is one, method, path, query, headers) in ``requests``.

Use with ``async with ArxivStandIn() as server``. As a process, serving the bundled day::

    python -m notifier.demo.stand_in --port 0     # prints "READY http://127.0.0.1:PORT"

with ``POST /_control/day?d=2025-06-04``, ``POST /_control/fail?path=/rss&mode=429[&count=1&retry_after=1]``,
``POST /_control/affiliations?id=2506.00001`` (a JSON list as ``set_affiliations`` takes it) and
``GET /_control/requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import re
import signal
import time
import unicodedata
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from aiohttp import web

EASTERN = ZoneInfo("America/New_York")
ATOM = "http://www.w3.org/2005/Atom"
ARXIV = "http://arxiv.org/schemas/atom"
OPENSEARCH = "http://a9.com/-/spec/opensearch/1.1/"
SMALL = "cs.SD+eess.AS"
DEMO_DAY = "2025-06-03"
DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Catalogue:
    """What a stand-in serves: the files in ``folder``, and whether to make up what the captures lack."""

    folder: Path
    days: Mapping[str, Mapping[str, str]]  # day -> category set ("cs.SD+eess.AS") -> its feed's file
    holiday: str  # an empty feed of a real holiday, the model of the feed served on a day with none
    cassettes: Mapping[str, str] = field(default_factory=dict)  # arXiv id -> a recorded API exchange (JSON)
    search_cassette: str | None = None  # the recorded answer to search_query=testing
    synthetic: bool = False  # split sets into categories and make up API metadata (see the module doc)


def bundled_catalogue() -> Catalogue:
    """The day shipped in this package: the real cs.SD+eess.AS feed of 2025-06-03 (108 papers; see data/SOURCES.md)."""
    return Catalogue(
        folder=DATA,
        days={DEMO_DAY: {SMALL: f"rss-{SMALL}-{DEMO_DAY}.xml"}},
        holiday="rss-physics-2025-12-31-empty-holiday.xml",
    )


FAULT_MODES = (
    "429",  # Too Many Requests with Retry-After (seconds, or the given string)
    "503",  # Service Unavailable, Retry-After only when given
    "500",
    "stall",  # headers and a few bytes, then nothing until the client gives up
    "reset",  # half the body, then the TCP connection is aborted
    "huge",  # 50 MB, chunked (no Content-Length), generated on the fly
    "huge-declared",  # 50 MB with Content-Length
    "bomb",  # billion-laughs XML
    "malformed",  # a truncated feed
    "html",  # an HTML error page with status 200
    "empty",  # a valid feed with zero items
)
HUGE_BYTES = 50 * 1024 * 1024
_ID_OK = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z\-]*(\.[A-Za-z]{2})?/\d{7})(v\d+)?$")
_ITEM_ID = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Za-z]{2})?/\d{7})v(\d+)")
BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'.encode() for i in range(1, 10)
    )
    + b']>\n<rss version="2.0"><channel><title>&lol9;</title></channel></rss>\n'
)
MALFORMED = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n<rss version=\"2.0\"><channel><title>cs.LG updates</title>"
    b"<item><title>A truncated item</title><description>arXiv:2506.00001v1 Announce Type: new \nAbs"
)
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>"
    b"<body><h1>Service Temporarily Unavailable</h1><p>Please try again later.</p></body></html>\n"
)


def canonical_key(categories: str) -> frozenset[str]:
    return frozenset(c for c in categories.replace(" ", "+").split("+") if c)


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha1(body).hexdigest() + '"'


@dataclass(frozen=True)
class RecordedRequest:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    when: datetime | None = None  # the stand-in's clock when the request arrived, when it has one
    status: int | None = None  # the status answered (None when the connection was cut)


@dataclass
class Fault:
    path_prefix: str
    mode: str
    count: int = 1
    retry_after: float | str | None = None
    stall: float = 30.0


@dataclass
class _ApiPaper:
    arxiv_id: str
    version: int
    title: str
    abstract: str
    authors: list[str]
    categories: list[str]
    published: datetime
    updated: datetime
    extra: dict[str, str] = field(default_factory=dict)  # "comment", "journal_ref"
    affiliations: list[list[str]] = field(default_factory=list)  # the i-th author's, for the first authors


class ArxivStandIn:
    """The arXiv stand-in; ``url``, ``rss_base_url`` and ``api_url`` are valid after :meth:`start`."""

    def __init__(
        self,
        *,
        day: str = DEMO_DAY,
        catalogue: Catalogue | None = None,
        host: str = "127.0.0.1",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.catalogue = catalogue or bundled_catalogue()
        self.host = host
        self._day = day
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._outages: list[tuple[datetime, datetime]] = []
        self._extra_feeds: dict[tuple[str, frozenset[str]], tuple[list[str], bytes]] = {}  # with the set's order
        self._extra_papers: dict[str, _ApiPaper] = {}
        self._metadata: dict[str, dict[str, str]] = {}
        self._affiliations: dict[str, list[list[str]]] = {}
        self._cache: dict[str, bytes] = {}
        self._papers: dict[str, _ApiPaper] | None = None
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/rss/{cats}", self._rss)
        app.router.add_get("/api/query", self._api)
        app.router.add_post("/_control/day", self._control_day)
        app.router.add_post("/_control/fail", self._control_fail)
        app.router.add_post("/_control/affiliations", self._control_affiliations)
        app.router.add_get("/_control/requests", self._control_requests)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.url

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> ArxivStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def rss_base_url(self) -> str:
        return f"{self.url}/rss/"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/query"

    # -- controls ----------------------------------------------------------------------------------------------

    @property
    def day(self) -> str:
        """The day whose feeds are served: the clock's US Eastern date when there is a clock."""
        if self.clock is not None:
            return self.clock().astimezone(EASTERN).date().isoformat()
        return self._day

    def set_day(self, day: str) -> None:
        date.fromisoformat(day)
        self._day = day

    def add_feed(self, day: str, categories: str, body: bytes, *, api: bool = True) -> None:
        """Serve ``body`` for this category set on ``day``, and each category's share of it (both override the
        fixtures); its papers join the API."""
        self._extra_feeds[(day, canonical_key(categories))] = (canonical_order(categories), body)
        if not api:
            return
        try:
            added = _read_rss(body, day, canonical_order(categories), synthetic=self.catalogue.synthetic)
        except ET.ParseError:
            return  # a hostile or broken feed has nothing for the API
        for paper in added:
            known = self._extra_papers.get(paper.arxiv_id)
            if known is not None and paper.version > known.version:
                paper.published = known.published  # the first version's submission date stays
            if known is None or paper.version >= known.version:
                self._extra_papers[paper.arxiv_id] = paper
        self._papers = None

    def add_outage(self, start: datetime, end: datetime) -> None:
        """Answer every request whose clock time is in [start, end) with HTTP 503 (needs ``clock``)."""
        if self.clock is None:
            raise ValueError("an outage needs a clock")
        self._outages.append((start, end))

    def set_metadata(self, arxiv_id: str, *, comment: str | None = None, journal_ref: str | None = None) -> None:
        """Give a paper this comment and journal reference in the API (replacing the synthetic ones)."""
        self._metadata[arxiv_id] = {
            key: value for key, value in (("comment", comment), ("journal_ref", journal_ref)) if value is not None
        }
        self._papers = None

    def set_affiliations(self, arxiv_id: str, affiliations: Sequence[str | Sequence[str]]) -> None:
        """Give a paper's authors affiliations in the API: the i-th of ``affiliations`` is the i-th author's, one
        (a string) or several (a list, empty for none); authors beyond the list have none."""
        self._affiliations[arxiv_id] = [[each] if isinstance(each, str) else list(each) for each in affiliations]
        self._papers = None

    def fail_next(
        self,
        path_prefix: str,
        mode: str,
        *,
        count: int = 1,
        retry_after: float | str | None = None,
        stall: float = 30.0,
    ) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; one of {', '.join(FAULT_MODES)}")
        self._faults.append(Fault(path_prefix, mode, count, retry_after, stall))

    def requests_to(self, prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(prefix)]

    # -- handlers ----------------------------------------------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_control"):
            return await handler(request)
        when = self.clock() if self.clock is not None else None
        index = len(self.requests)
        self.requests.append(
            RecordedRequest(
                time.monotonic(), request.method, request.path, dict(request.query), dict(request.headers), when
            )
        )
        if when is not None and any(start <= when < end for start, end in self._outages):
            response: web.StreamResponse = web.Response(status=503, text="arXiv is down (simulated outage)")
        else:
            fault = self._take_fault(request.path)
            response = await (self._inject(request, fault) if fault is not None else handler(request))
        self.requests[index] = replace(self.requests[index], status=response.status)
        return response

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self._faults:
            if path.startswith(fault.path_prefix) and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _rss(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["cats"]
        body = self.feed_body(self.day, key)
        if body is None:
            available = ", ".join(sorted(self.catalogue.days.get(self.day, {})))
            return web.Response(status=404, text=f"no fixture feed for {key} on {self.day}; have: {available}")
        return self._conditional(request, body, "application/rss+xml")

    def feed_body(self, day: str, key: str) -> bytes | None:
        """The feed of ``key`` on ``day``: an added feed, its category's share of one, an empty feed on a day with
        no fixtures, a fixture, or a category's share of a fixture, in that order; None when there is none."""
        wanted = canonical_key(key)
        added = self._extra_feeds.get((day, wanted))
        if added is not None:
            return added[1]
        category = next(iter(wanted)) if len(wanted) == 1 else None
        for (added_day, added_set), (order, body) in self._extra_feeds.items():
            if category is not None and added_day == day and category in added_set:
                return category_feed(body, tuple(order), category)
        days = self.catalogue.days
        if day not in days:
            return self.empty_feed(day, key)
        for fixture_key, name in days[day].items():
            if canonical_key(fixture_key) == wanted:
                return self._file(name)
        for fixture_key, name in days[day].items():
            if category is not None and category in canonical_key(fixture_key) and name.startswith("rss-"):
                if not self.catalogue.synthetic:
                    return self._file(name)  # which of the set's categories a paper is in was not captured
                return category_feed(self._file(name), tuple(canonical_order(fixture_key)), category)
        return None

    def empty_feed(self, day: str, key: str) -> bytes:
        """A valid feed with zero items, built from the real holiday feed (byte-exact for physics on 2025-12-31)."""
        midnight = datetime.combine(date.fromisoformat(day), dtime(0), tzinfo=EASTERN)
        text = self._file(self.catalogue.holiday).decode()
        text = text.replace("Wed, 31 Dec 2025 05:00:02 +0000", _rfc822(midnight.astimezone(UTC) + timedelta(seconds=2)))
        text = text.replace("Wed, 31 Dec 2025 00:00:00 -0500", _rfc822(midnight))
        text = text.replace("rss/physics", f"rss/{key}").replace("physics updates", f"{key.replace('+', ', ')} updates")
        return text.encode()

    def _conditional(self, request: web.Request, body: bytes, content_type: str) -> web.Response:
        etag = etag_of(body)
        sent = request.headers.get("If-None-Match", "")
        if any(tag.strip().removeprefix("W/") == etag for tag in sent.split(",")):
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, headers={"ETag": etag, "Content-Type": f"{content_type}; charset=utf-8"})

    def _file(self, name: str) -> bytes:
        if name not in self._cache:
            self._cache[name] = (self.catalogue.folder / name).read_bytes()
        return self._cache[name]

    def _cassette(self, name: str) -> tuple[int, bytes]:
        data = json.loads(self._file(name))
        return int(data["status_code"]), str(data["body"]).encode()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        start = int(query.get("start", "0") or 0)
        size = int(query.get("max_results", "10") or 10)
        id_list = [i.strip() for i in query.get("id_list", "").split(",") if i.strip()]
        search = query.get("search_query", "").strip()
        if id_list and not search:
            if len(id_list) == 1 and id_list[0] in self.catalogue.cassettes:
                status, body = self._cassette(self.catalogue.cassettes[id_list[0]])
                return web.Response(status=status, body=body, content_type="application/atom+xml")
            bad = next((i for i in id_list if not _ID_OK.match(i)), None)
            if bad is not None:
                return _atom_response(_error_feed(f"incorrect id format for {bad}"), status=400)
            papers = self.api_papers()
            found = [papers[base] for base in (re.sub(r"v\d+$", "", i) for i in id_list) if base in papers]
            return _atom_response(_feed(found[start : start + size], len(found), start, size))
        if search in ("all:testing", "testing") and self.catalogue.search_cassette is not None:
            status, body = self._cassette(self.catalogue.search_cassette)
            return web.Response(status=status, body=body, content_type="application/atom+xml")
        terms = [_FIELD_SEARCH.match(term) for term in search.split(" OR ")]
        if all(terms):
            found = list(
                {p.arxiv_id: p for t in terms if t for p in self.search(t["field"], t["phrase"] or t["word"])}.values()
            )
            if query.get("sortBy") in ("submittedDate", "lastUpdatedDate"):
                by = "published" if query["sortBy"] == "submittedDate" else "updated"
                found.sort(key=lambda p: (getattr(p, by), p.arxiv_id), reverse=query.get("sortOrder") != "ascending")
            return _atom_response(_feed(found[start : start + size], len(found), start, size))
        cat = re.search(r"cat:(\S+)", search)
        window = re.search(r"submittedDate:\[(\d{12}) TO (\d{12})\]", search)
        if cat is None:
            return _atom_response(_error_feed(f"unsupported search_query {search!r}"), status=400)
        category = cat.group(1)
        low = _stamp(window.group(1)) if window else datetime.min.replace(tzinfo=UTC)
        high = _stamp(window.group(2)) + timedelta(seconds=59) if window else datetime.max.replace(tzinfo=UTC)
        matches = sorted(
            (
                p
                for p in self.api_papers().values()
                if low <= p.published <= high
                and any(c == category or c.startswith(category + ".") for c in p.categories)
            ),
            key=lambda p: (p.published, p.arxiv_id),
        )
        return _atom_response(_feed(matches[start : start + size], len(matches), start, size))

    def search(self, field: str, phrase: str) -> list[_ApiPaper]:
        """The papers whose title (``ti``) or one of whose authors (``au``) holds ``phrase``'s words in a row, case
        and accents aside, in catalogue order."""
        wanted = _words(phrase)
        if not wanted:
            return []
        texts = (lambda p: [p.title]) if field == "ti" else (lambda p: p.authors)
        return [p for p in self.api_papers().values() if any(_holds(_words(t), wanted) for t in texts(p))]

    def api_papers(self) -> dict[str, _ApiPaper]:
        """Every paper of the catalogue's RSS 2.0 feeds (latest version wins) and of the feeds added with
        ``add_feed``; with synthetic categories, comments and journal references when the catalogue says so."""
        if self._papers is None:
            papers: dict[str, _ApiPaper] = {}
            for day, feeds in sorted(self.catalogue.days.items()):
                for key, name in feeds.items():
                    if name.startswith("rss-"):
                        synthetic = self.catalogue.synthetic
                        for paper in _read_rss(self._file(name), day, key.split("+"), synthetic=synthetic):
                            papers[paper.arxiv_id] = paper
            papers.update(self._extra_papers)
            for arxiv_id, extra in self._metadata.items():
                if arxiv_id in papers:
                    papers[arxiv_id].extra = dict(extra)
            for arxiv_id, affiliations in self._affiliations.items():
                if arxiv_id in papers:
                    papers[arxiv_id].affiliations = [list(each) for each in affiliations]
            self._papers = papers
        return self._papers

    async def _inject(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        mode = fault.mode
        if mode in ("429", "503", "500"):
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            if mode == "429" and fault.retry_after is None:
                headers["Retry-After"] = "1"
            return web.Response(status=int(mode), headers=headers, text=f"injected HTTP {mode}")
        if mode == "bomb":
            return web.Response(body=BOMB, content_type="application/rss+xml")
        if mode == "malformed":
            return web.Response(body=MALFORMED, content_type="application/rss+xml")
        if mode == "html":
            return web.Response(body=HTML_PAGE, content_type="text/html")
        if mode == "empty":
            return web.Response(
                body=self.empty_feed(self.day, request.path.rsplit("/", 1)[-1]), content_type="application/rss+xml"
            )
        response = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        body = self.feed_body(self.day, request.path.rsplit("/", 1)[-1]) or MALFORMED
        if mode == "huge-declared":
            response.content_length = HUGE_BYTES
        elif mode == "reset":
            response.content_length = len(body)
        await response.prepare(request)
        try:
            if mode == "stall":
                await response.write(body[:200])
                await self._stall(request, fault.stall)
            elif mode == "reset":
                await response.write(body[: len(body) // 2])
                await asyncio.sleep(0.05)
                if request.transport is not None:
                    request.transport.abort()
            else:
                await self._stream_huge(response)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    async def _stall(self, request: web.Request, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.05)

    async def _stream_huge(self, response: web.StreamResponse) -> None:
        head = b"<?xml version='1.0' encoding='UTF-8'?>\n<rss version=\"2.0\"><channel>"
        chunk = b"<!-- " + b"x" * (64 * 1024 - 9) + b" -->"
        await response.write(head)
        sent = len(head)
        while sent + len(chunk) <= HUGE_BYTES and not self._closing.is_set():
            await response.write(chunk)
            sent += len(chunk)

    # -- control endpoints -------------------------------------------------------------------------------------

    async def _control_day(self, request: web.Request) -> web.Response:
        self.set_day(request.query["d"])
        return web.json_response({"day": self.day})

    async def _control_fail(self, request: web.Request) -> web.Response:
        q = request.query
        retry_after: float | str | None = q.get("retry_after")
        self.fail_next(
            q.get("path", "/"),
            q["mode"],
            count=int(q.get("count", "1")),
            retry_after=retry_after,
            stall=float(q.get("stall", "30")),
        )
        return web.json_response({"faults": len(self._faults)})

    async def _control_affiliations(self, request: web.Request) -> web.Response:
        affiliations = await request.json()
        self.set_affiliations(request.query["id"], affiliations)
        return web.json_response({"id": request.query["id"], "affiliations": affiliations})

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.__dict__ for r in self.requests], dumps=lambda data: json.dumps(data, default=str))


def canonical_order(categories: str) -> list[str]:
    return [c for c in categories.replace(" ", "+").split("+") if c]


def item_categories(arxiv_id: str, categories: list[str] | tuple[str, ...]) -> list[str]:
    """The categories of a combined feed (in the feed's order) that one of its items is announced in: one chosen by
    a CRC of the id (its primary, unless the item is a cross-list from outside the set), and for about half the
    items a second one."""
    crc = zlib.crc32(arxiv_id.encode())
    count = len(categories)
    first = crc % count
    if count == 1 or (crc >> 16) % 2 == 0:
        return [categories[first]]
    return [categories[first], categories[(first + 1 + (crc >> 17) % (count - 1)) % count]]


_AS_CROSS = {b"new": b"cross", b"replace": b"replace-cross"}


@functools.lru_cache(maxsize=64)
def category_feed(body: bytes, categories: tuple[str, ...], category: str) -> bytes:
    """``category``'s share of the combined RSS 2.0 feed ``body`` of ``categories``: the items
    :func:`item_categories` puts in it, announced as cross-lists where it is not their first category."""
    items = _ITEM.findall(body)
    if not items:
        return body.replace(("rss/" + "+".join(categories)).encode(), f"rss/{category}".encode())
    head = body[: body.index(items[0])]
    tail = body[body.rindex(items[-1]) + len(items[-1]) :]
    kept = []
    for item in items:
        found = _GUID_ID.search(item)
        listed = item_categories(found.group(1).decode(), categories) if found else [categories[0]]
        if category not in listed:
            continue
        if listed[0] != category:
            item = _ANNOUNCE_TAG.sub(lambda m: m[1] + _AS_CROSS.get(m[2], m[2]) + m[3], item)
            item = _ANNOUNCE_TEXT.sub(lambda m: m[1] + _AS_CROSS.get(m[2], m[2]), item)
        kept.append(item)
    head = head.replace(("rss/" + "+".join(categories)).encode(), f"rss/{category}".encode())
    head = head.replace(", ".join(categories).encode() + b" updates", category.encode() + b" updates")
    return head + b"\n    ".join(kept) + tail


def synthetic_metadata(arxiv_id: str) -> dict[str, str]:
    """The made-up comment and journal reference the stand-in's API gives a fixture paper (see the module doc)."""
    crc = zlib.crc32(arxiv_id.encode())
    extra = {}
    if crc % 3 == 0:
        extra["comment"] = f"{8 + crc % 23} pages, {1 + crc % 9} figures; synthetic comment"
    if crc % 5 == 0:
        extra["journal_ref"] = f"Synthetic J. Test. {10 + crc % 40}, {100 + crc % 900} (2025)"
    return extra


def submission_cutoff(day: date) -> datetime:
    """arXiv's 14:00 US Eastern deadline on the last weekday before the feed's ``day``."""
    before = day - timedelta(days=1)
    while before.weekday() >= 5:
        before -= timedelta(days=1)
    return datetime.combine(before, dtime(14), tzinfo=EASTERN)


_ITEM = re.compile(rb"<item>.*?</item>", re.DOTALL)
_GUID_ID = re.compile(rb"<guid[^>]*>[^<]*?(\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Za-z]{2})?/\d{7})v\d+</guid>")
_ANNOUNCE_TAG = re.compile(rb"(<arxiv:announce_type>)([a-z-]+)(</arxiv:announce_type>)")
_ANNOUNCE_TEXT = re.compile(rb"(Announce Type:\s*)([a-z-]+)")
_PUBDATE = re.compile(rb"<(pubDate|lastBuildDate)>[^<]*</(pubDate|lastBuildDate)>")


def day_feed(body: bytes, day: str, keep: slice) -> bytes:
    """A copy of the RSS 2.0 feed ``body`` dated ``day`` (00:00 US Eastern) holding only the items in ``keep``."""
    items = _ITEM.findall(body)
    if not items:
        raise ValueError("no <item> in the feed")
    head = body[: body.index(items[0])]
    tail = body[body.rindex(items[-1]) + len(items[-1]) :]
    midnight = datetime.combine(date.fromisoformat(day), dtime(0), tzinfo=EASTERN)

    def redate(text: bytes) -> bytes:
        def one(found: re.Match[bytes]) -> bytes:
            moment = midnight if found[1] == b"pubDate" else midnight.astimezone(UTC) + timedelta(minutes=13)
            return b"<%s>%s</%s>" % (found[1], _rfc822(moment).encode(), found[1])

        return _PUBDATE.sub(one, text)

    kept = [redate(item) for item in items[keep]]
    return redate(head) + b"\n    ".join(kept) + tail


_FIELD_SEARCH = re.compile(r'^(?P<field>au|ti):(?:"(?P<phrase>[^"]*)"|(?P<word>[^\s"]+))$')


def _words(text: str) -> list[str]:
    bare = "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))
    return re.findall(r"[a-z0-9]+", bare)


def _holds(words: list[str], run: list[str]) -> bool:
    return any(words[i : i + len(run)] == run for i in range(len(words) - len(run) + 1))


def _rfc822(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S %z")


def _stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M").replace(tzinfo=UTC)


def _read_rss(body: bytes, day: str, categories: list[str], *, synthetic: bool) -> list[_ApiPaper]:
    """The papers of a (trusted) captured feed, with submission dates; with made-up categories, comments and
    journal references when ``synthetic``."""
    cutoff = submission_cutoff(date.fromisoformat(day))
    papers = []
    dc = "{http://purl.org/dc/elements/1.1/}"
    for index, item in enumerate(ET.fromstring(body).iter("item")):
        found = _ITEM_ID.search(item.findtext("guid") or "")
        if found is None:
            continue
        arxiv_id, version = found.group(1), int(found.group(2))
        announce = item.findtext(f"{{{ARXIV}}}announce_type") or "new"
        cats: list[str] = []
        if synthetic:
            listed = item_categories(arxiv_id, categories)
            cats = ["math.OC", *listed] if announce in ("cross", "replace-cross") else listed
        submitted = cutoff - timedelta(minutes=index + 1)
        description = item.findtext("description") or ""
        papers.append(
            _ApiPaper(
                arxiv_id=arxiv_id,
                version=version,
                title=item.findtext("title") or "",
                abstract=description.partition("Abstract:")[2].strip(),
                authors=[a.strip() for a in (item.findtext(f"{dc}creator") or "").split(",") if a.strip()],
                categories=cats,
                published=submitted if version == 1 else submitted - timedelta(days=60),
                updated=submitted,
                extra=synthetic_metadata(arxiv_id) if synthetic else {},
            )
        )
    return papers


def _feed(papers: list[_ApiPaper], total: int, start: int, size: int) -> bytes:
    feed = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(feed, f"{{{ATOM}}}title").text = "arXiv Query"
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ET.SubElement(feed, f"{{{OPENSEARCH}}}itemsPerPage").text = str(size)
    ET.SubElement(feed, f"{{{OPENSEARCH}}}totalResults").text = str(total)
    ET.SubElement(feed, f"{{{OPENSEARCH}}}startIndex").text = str(start)
    for paper in papers:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        ET.SubElement(entry, f"{{{ATOM}}}id").text = f"http://arxiv.org/abs/{paper.arxiv_id}v{paper.version}"
        ET.SubElement(entry, f"{{{ATOM}}}title").text = paper.title
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = paper.updated.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ET.SubElement(entry, f"{{{ATOM}}}summary").text = paper.abstract
        for category in paper.categories:
            ET.SubElement(entry, f"{{{ATOM}}}category", term=category, scheme="http://arxiv.org/schemas/atom")
        published = paper.published.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ET.SubElement(entry, f"{{{ATOM}}}published").text = published
        if paper.categories:
            ET.SubElement(entry, f"{{{ARXIV}}}primary_category", term=paper.categories[0])
        for name in ("comment", "journal_ref"):
            if name in paper.extra:
                ET.SubElement(entry, f"{{{ARXIV}}}{name}").text = paper.extra[name]
        for index, name in enumerate(paper.authors):
            author = ET.SubElement(entry, f"{{{ATOM}}}author")
            ET.SubElement(author, f"{{{ATOM}}}name").text = name
            for place in paper.affiliations[index] if index < len(paper.affiliations) else []:
                ET.SubElement(author, f"{{{ARXIV}}}affiliation").text = place
    ET.register_namespace("", ATOM)
    ET.register_namespace("arxiv", ARXIV)
    ET.register_namespace("opensearch", OPENSEARCH)
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


def _error_feed(message: str) -> bytes:
    slug = re.sub(r"\W+", "_", message)
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<feed xmlns:opensearch="{OPENSEARCH}" xmlns:arxiv="{ARXIV}" xmlns="{ATOM}">\n'
        "  <title>arXiv Search Results</title>\n  <opensearch:totalResults>1</opensearch:totalResults>\n"
        f"  <entry>\n    <id>https://arxiv.org/api/errors#{slug}</id>\n    <title>Error</title>\n"
        f"    <summary>{message.replace('&', '&amp;').replace('<', '&lt;')}</summary>\n  </entry>\n</feed>\n"
    ).encode()


def _atom_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/atom+xml")


async def _serve(args: argparse.Namespace) -> None:
    await serve_until_stopped(ArxivStandIn(day=args.day, host=args.host), args.port)


async def serve_until_stopped(server: ArxivStandIn, port: int) -> None:
    """Serve on ``port`` (0: any free one), print ``READY <url>``, and stop on SIGINT or SIGTERM."""
    server.port = port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"READY {server.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the bundled arXiv day like rss.arxiv.org and the export API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--day", default=DEMO_DAY)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
