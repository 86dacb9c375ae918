"""The papers subscribers like, as the arXiv API described them, and what each of their ``like:`` entries named.

A liked paper is one row of ``reference_papers`` (its newest version's title, abstract, authors and categories, and
when it was fetched), apart from ``papers``: those are the feeds' papers, pruned with their feed items, while a
liked paper may be years old and stays as long as someone likes it. A ``like:`` entry is a *source*
(``id:2401.01234``, ``au:Tianyin Xu``, ``ti:<normalised title>``) and ``like_sources`` remembers the ids it
resolved to and when, so that it is asked again only once that is old (:mod:`notifier.arxiv.likes`). Both lists
are kept as JSON.

The vectoriser that ranks papers is fitted on the papers the feeds brought lately
(:meth:`LikeQueries.recent_papers`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from notifier.models import Paper
from notifier.store.dialect import ConnT, Dialect, ResultRow, present


class LikeQueries(Dialect[ConnT]):
    """The liked papers' metadata, what each ``like:`` source resolved to, and the recent papers."""

    def save_reference_papers(self, papers: Sequence[Paper], now: datetime) -> None:
        """Store ``papers`` as fetched at ``now``, in one transaction; a stored paper takes the newer metadata
        unless it already has a later version."""
        with self.transaction() as db:
            self._save_reference_papers(db, papers, now)

    def _save_reference_papers(self, db: ConnT, papers: Sequence[Paper], now: datetime) -> None:
        """:meth:`save_reference_papers` in the transaction ``db``."""
        self._exec_many(
            db,
            """INSERT INTO reference_papers VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (arxiv_id) DO UPDATE SET version = excluded.version, title = excluded.title,
                 abstract = excluded.abstract, authors = excluded.authors, categories = excluded.categories,
                 fetched_at = excluded.fetched_at
               WHERE excluded.version >= reference_papers.version""",
            [
                (
                    paper.arxiv_id,
                    paper.version,
                    paper.title,
                    paper.abstract,
                    json.dumps(paper.authors),
                    json.dumps(paper.categories),
                    now,
                )
                for paper in papers
            ],
        )

    def reference_papers(self, ids: Iterable[str]) -> dict[str, Paper]:
        """arxiv_id -> the liked paper stored under it, for those of ``ids`` that have one."""
        found: dict[str, Paper] = {}
        for chunk in self._chunks(sorted(set(ids))):
            among, params = self._in("arxiv_id", "id", chunk)
            for row in self._query(f"SELECT * FROM reference_papers WHERE {among}", params):
                found[row["arxiv_id"]] = paper_of_row(row)
        return found

    def like_source(self, source: str) -> tuple[tuple[str, ...], datetime] | None:
        """The ids ``source`` resolved to (maybe none) and when; None when it was never resolved."""
        return self.like_sources([source]).get(source)

    def like_sources(self, sources: Iterable[str]) -> dict[str, tuple[tuple[str, ...], datetime]]:
        """:meth:`like_source` of each of ``sources`` that was resolved, in as few statements as the dialect
        allows."""
        found: dict[str, tuple[tuple[str, ...], datetime]] = {}
        for chunk in self._chunks(sorted(set(sources))):
            among, params = self._in("source", "source", chunk)
            for row in self._query(f"SELECT * FROM like_sources WHERE {among}", params):
                found[row["source"]] = (tuple(json.loads(row["arxiv_ids"])), present(self._time(row["fetched_at"])))
        return found

    def save_like_source(self, source: str, ids: Sequence[str], now: datetime) -> None:
        """Remember that ``source`` resolved to ``ids`` (in their order) at ``now``."""
        self.save_like_sources({source: ids}, now)

    def save_like_sources(self, resolved: Mapping[str, Sequence[str]], now: datetime) -> None:
        """:meth:`save_like_source` for each source of ``resolved``, in one transaction."""
        with self.transaction() as db:
            self._exec_many(
                db,
                """INSERT INTO like_sources VALUES (?, ?, ?)
                   ON CONFLICT (source) DO UPDATE SET arxiv_ids = excluded.arxiv_ids,
                     fetched_at = excluded.fetched_at""",
                [(source, json.dumps(list(ids)), now) for source, ids in resolved.items()],
            )

    def forget_likes(self, sources: Collection[str]) -> tuple[int, int]:
        """Drop what no ``like:`` or ``dislike:`` entry needs any more: the sources not among ``sources`` (those of
        the config in use), then the liked papers that neither a source kept nor a reader's feedback names. Returns
        how many sources and papers were dropped."""
        kept: set[str] = set()
        gone: list[str] = []
        for row in self._query("SELECT source, arxiv_ids FROM like_sources"):
            if row["source"] in sources:
                kept.update(json.loads(row["arxiv_ids"]))
            else:
                gone.append(row["source"])
        kept.update(row["arxiv_id"] for row in self._query("SELECT DISTINCT arxiv_id FROM feedback"))
        unneeded = [row["arxiv_id"] for row in self._query("SELECT arxiv_id FROM reference_papers")]
        unneeded = sorted(set(unneeded) - kept)
        with self.transaction() as db:
            for table, column, values in (("like_sources", "source", gone), ("reference_papers", "arxiv_id", unneeded)):
                for chunk in self._chunks(sorted(values)):
                    among, params = self._in(column, "value", chunk)
                    self._exec(db, f"DELETE FROM {table} WHERE {among}", params)
        return len(gone), len(unneeded)

    def recent_papers(self, since: datetime, limit: int) -> list[Paper]:
        """At most ``limit`` papers the feeds brought since ``since`` (first seen then or later), newest first."""
        rows = self._query(
            f"""SELECT * FROM papers WHERE first_seen >= ?
                ORDER BY first_seen DESC, arxiv_id{self._BY_CODE_POINT} LIMIT ?""",
            (since, limit),
        )
        return [replace(paper_of_row(row), comment=row["comment"], journal_ref=row["journal_ref"]) for row in rows]


def paper_of_row(row: ResultRow) -> Paper:
    return Paper(
        arxiv_id=row["arxiv_id"],
        version=int(row["version"]),
        title=row["title"],
        abstract=row["abstract"],
        authors=tuple(json.loads(row["authors"])),
        categories=tuple(json.loads(row["categories"])),
    )
