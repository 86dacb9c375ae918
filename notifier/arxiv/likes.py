"""The papers subscribers like, fetched from the export API fail-open, cached in the store, refreshed weekly.

Each ``like:`` (or ``dislike:``) entry is a *source*, the key under which the store remembers what it resolved to:

- an arXiv id is ``id:2401.01234``; so is a BibTeX entry whose DOI is one arXiv registered (``10.48550/arXiv.…``);
- an author is ``au:Tianyin Xu``: their newest papers (:data:`~notifier.arxiv.api.AUTHOR_LIMIT` at most);
- any other BibTeX entry is ``ti:<its normalised title>``: the one paper whose title is the same. The export API
  cannot search by DOI, so a journal's DOI does not help; an entry with neither title nor arXiv DOI is
  ``doi:<doi>`` (or ``bib:<key>``), which nothing can resolve.

:func:`refresh_likes` asks arXiv about the sources of every subscriber that were never resolved or were resolved
:data:`REFRESH_AFTER` ago or more, in as few requests as it can: every such id of every subscriber in shared
``id_list`` batches of 100 (500 liked papers are 5 requests), one request per author, and the titles ten to a
request (``ti:"..." OR ti:"..."``; a title whose answer was too crowded to be sure is asked about alone). A request that
fails is one log line, and what its sources resolved to before stays in use until a later call succeeds. A source
that resolves to nothing is logged once, naming where it was written (``lab.bib:12: no arXiv paper titled '…'``).

:func:`liked_papers` reads what a subscriber's entries resolved to from the store alone, for ranking, and
:func:`liked_papers_of` what many subscribers' did, together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from notifier.arxiv.api import (
    ID_BATCH,
    TITLE_BATCH,
    ApiEntry,
    arxiv_id_of_doi,
    fetch_author,
    fetch_metadata,
    find_title,
    find_titles,
    is_arxiv_id,
    normalise_title,
)
from notifier.arxiv.gate import PoliteGate
from notifier.config.subscribers import BibReference, Likes, Subscriber
from notifier.errors import FeedError
from notifier.models import Paper
from notifier.store import Store

log = logging.getLogger(__name__)

REFRESH_AFTER = timedelta(days=7)  # a source resolved this long ago is asked about again


@dataclass(frozen=True, slots=True)
class LikesReport:
    """What one :func:`refresh_likes` did."""

    sources: int  # distinct sources the subscribers name
    refreshed: int  # resolved afresh (nothing found included)
    failed: int  # asked about, but the request failed: what they resolved to before stays
    requests: int  # requests made to the API
    papers: int  # papers stored


def id_source(arxiv_id: str) -> str:
    return f"id:{arxiv_id}"


def author_source(name: str) -> str:
    return "au:" + " ".join(name.split())


def reference_source(reference: BibReference) -> str:
    """The source of a BibTeX entry without an arXiv id: its arXiv DOI's id, else its title, else what is left."""
    if reference.doi and (arxiv_id := arxiv_id_of_doi(reference.doi)) is not None:
        return id_source(arxiv_id)
    if reference.title and (title := normalise_title(reference.title)):
        return f"ti:{title}"
    if reference.doi:
        return f"doi:{reference.doi.strip()}"
    return f"bib:{reference.key}"


def sources(likes: Likes) -> list[str]:
    """The sources of ``likes``' entries, each once, in the order written: ids, authors, then references."""
    named = [id_source(i) for i in likes.arxiv_ids] + [author_source(a) for a in likes.authors]
    return list(dict.fromkeys(named + [reference_source(r) for r in likes.references]))


def liked_papers(store: Store, likes: Likes) -> list[Paper]:
    """The papers ``likes`` resolved to as the store has them, each once, in the order of the entries; an entry
    not resolved yet, or that found nothing, adds none."""
    return liked_papers_of(store, {"": likes})[""]


def liked_papers_of(store: Store, likes: Mapping[str, Likes]) -> dict[str, list[Paper]]:
    """:func:`liked_papers` of each of ``likes`` (keyed as the caller likes, by subscriber say), read together: the
    sources and the papers of all of them in a few statements, each paper made once however many like it."""
    named = {key: sources(each) for key, each in likes.items()}
    resolved = store.like_sources({s for each in named.values() for s in each if not s.startswith("id:")})
    ids: dict[str, list[str]] = {}
    for key, each in named.items():
        ids[key] = []
        for source in each:
            if source.startswith("id:"):
                ids[key].append(source.removeprefix("id:"))
            elif source in resolved:
                ids[key].extend(resolved[source][0])
    papers = store.reference_papers({arxiv_id for each in ids.values() for arxiv_id in each})
    return {key: [papers[i] for i in dict.fromkeys(each) if i in papers] for key, each in ids.items()}


async def refresh_likes(
    store: Store, gate: PoliteGate, api_url: str, subscribers: Iterable[Subscriber], now: datetime
) -> LikesReport:
    """Resolve, through ``gate``, the likes and dislikes of ``subscribers`` not resolved since ``now`` minus
    :data:`REFRESH_AFTER`, and store them with their papers. Never raises for arXiv's failures (see the module)."""
    wanted = _wanted(subscribers)
    known = store.like_sources(wanted)
    stale = [w for source, w in wanted.items() if source not in known or now - known[source][1] >= REFRESH_AFTER]
    run = _Refresh(store, gate, api_url, now, known)
    ids = [w for w in stale if w.kind == "id" and is_arxiv_id(w.value)]
    for start in range(0, len(ids), ID_BATCH):
        await run.ids(ids[start : start + ID_BATCH])
    for each in stale:
        if each.kind == "au":
            await run.author(each)
    titles = [w for w in stale if w.kind == "ti"]
    for start in range(0, len(titles), TITLE_BATCH):
        await run.titles(titles[start : start + TITLE_BATCH])
    asked = {*ids, *(w for w in stale if w.kind in ("au", "ti"))}
    # nothing to ask arXiv about: not an arXiv id, or a reference it cannot search for
    run.resolved({w: () for w in stale if w not in asked}, [])
    report = LikesReport(len(wanted), run.refreshed, run.failed, run.requests, run.papers)
    if stale:
        log.info(
            "likes: %d of %d sources refreshed in %d API requests (%d papers), %d failed",
            report.refreshed,
            report.sources,
            report.requests,
            report.papers,
            report.failed,
        )
    return report


@dataclass(eq=False, slots=True)
class _Wanted:
    """A source to resolve, and what to log when it resolves to nothing (one line per place that names it)."""

    source: str
    kind: str  # id, au, ti, or none (nothing to ask)
    value: str  # the id, the author, or the title as written
    unmatched: list[str] = field(default_factory=list)


def _wanted(subscribers: Iterable[Subscriber]) -> dict[str, _Wanted]:
    wanted: dict[str, _Wanted] = {}

    def add(source: str, kind: str, value: str, message: str) -> None:
        each = wanted.setdefault(source, _Wanted(source, kind, value))
        if message not in each.unmatched:
            each.unmatched.append(message)

    for subscriber, likes, entry in _likes_of(subscribers):
        named = f"subscriber {subscriber}: {entry}"
        for arxiv_id in likes.arxiv_ids:
            add(id_source(arxiv_id), "id", arxiv_id, f"{named} {arxiv_id}: no such arXiv paper")
        for name in likes.authors:
            add(author_source(name), "au", name, f'{named} au:"{name}": no arXiv paper by them')
        for reference in likes.references:
            source = reference_source(reference)
            kind, _, value = source.partition(":")
            if kind == "ti":
                message = f"{reference.where}: no arXiv paper titled {reference.title!r}"
                value = reference.title or value
            elif kind == "id":
                message = f"{reference.where}: DOI {reference.doi} names no arXiv paper"
            else:
                kind = "none"
                message = f"{reference.where}: {reference.key} has no arXiv id, arXiv DOI or title to look up"
            add(source, kind, value, message)
    return wanted


def _likes_of(subscribers: Iterable[Subscriber]) -> Iterator[tuple[str, Likes, str]]:
    for subscriber in subscribers:
        yield subscriber.name, subscriber.likes, "like"
        yield subscriber.name, subscriber.dislikes, "dislike"


class _Refresh:
    """One refresh's requests, what they resolved and the counts of the report."""

    def __init__(
        self,
        store: Store,
        gate: PoliteGate,
        api_url: str,
        now: datetime,
        known: Mapping[str, tuple[tuple[str, ...], datetime]],
    ) -> None:
        self.store = store
        self.gate = gate
        self.api_url = api_url
        self.now = now
        self.known = known
        self.refreshed = self.failed = self.requests = self.papers = 0

    async def ids(self, batch: Sequence[_Wanted]) -> None:
        self.requests += 1
        try:
            entries = await fetch_metadata(self.gate, self.api_url, [w.value for w in batch])
        except FeedError as exc:
            self._failed(batch, f"id_list of {len(batch)} liked papers", exc)
            return
        found = {w: (w.value,) if w.value in entries else () for w in batch}
        self.resolved(found, list(entries.values()))

    async def author(self, wanted: _Wanted) -> None:
        self.requests += 1
        try:
            entries = await fetch_author(self.gate, self.api_url, wanted.value)
        except FeedError as exc:
            self._failed([wanted], f'the papers of au:"{wanted.value}"', exc)
            return
        self.resolved({wanted: tuple(e.arxiv_id for e in entries)}, entries)

    async def titles(self, batch: Sequence[_Wanted]) -> None:
        """One request for the batch, and one more for each title it left unsure."""
        by_title = {w.value: w for w in batch}
        try:
            self.requests += 1
            search = await find_titles(self.gate, self.api_url, list(by_title))
            found = dict(search.found)
            for title in search.unsure:
                self.requests += 1
                if (entry := await find_title(self.gate, self.api_url, title)) is not None:
                    found[title] = entry
        except FeedError as exc:
            self._failed(batch, f"the papers of {len(batch)} titles", exc)
            return
        resolved = {w: (found[title].arxiv_id,) if title in found else () for title, w in by_title.items()}
        self.resolved(resolved, list({e.arxiv_id: e for e in found.values()}.values()))

    def resolved(self, found: Mapping[_Wanted, tuple[str, ...]], entries: Sequence[ApiEntry]) -> None:
        """Store ``entries`` and what each source resolved to; log the sources that newly resolve to nothing."""
        if not found:
            return
        papers = [entry.to_paper(backfilled=False) for entry in entries]
        if papers:
            self.store.save_reference_papers(papers, self.now)
        self.store.save_like_sources({wanted.source: ids for wanted, ids in found.items()}, self.now)
        for wanted, ids in found.items():
            before = self.known.get(wanted.source)
            if not ids and (before is None or before[0]):
                for message in wanted.unmatched:
                    log.warning("likes: %s", message)
        self.refreshed += len(found)
        self.papers += len(papers)

    def _failed(self, wanted: Sequence[_Wanted], what: str, exc: FeedError) -> None:
        log.warning("likes: arXiv API lookup of %s failed; the cached answer stays in use: %s", what, exc)
        self.failed += len(wanted)
