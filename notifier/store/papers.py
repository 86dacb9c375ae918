"""Papers, the feeds they were announced in, each feed's polling state, and the days to recover from the API.

A paper is one row whatever feeds announced it (its newest version's metadata, and what the API added to it: see
:meth:`PaperQueries.enrich`); each announcement is a feed item (feed, paper, version, type, day). The planner reads
a window of a feed's items as papers (:meth:`PaperQueries.candidates`): a category set's are composed from its
categories' items, each paper version once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from notifier.models import Paper
from notifier.store.dialect import ConnT, Dialect, ResultRow, present
from notifier.store.rows import BackfillRow, FeedState


class PaperQueries(Dialect[ConnT]):
    """The papers, feeds and backfills of the store."""

    # -- papers and feeds -------------------------------------------------------------------------------------

    def ingest(self, feed_key: str, papers: Iterable[Paper], seen_at: datetime) -> int:
        """Remember ``papers`` as announced in ``feed_key``; returns how many feed items were new to us."""
        added = 0
        with self.transaction() as db:
            for paper in papers:
                self._exec(
                    db,
                    """INSERT INTO papers (arxiv_id, version, title, abstract, authors, categories, comment,
                         journal_ref, first_seen, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (arxiv_id) DO UPDATE SET
                         version = excluded.version, title = excluded.title, abstract = excluded.abstract,
                         authors = excluded.authors,
                         categories = CASE WHEN excluded.categories = '[]' THEN papers.categories
                                           ELSE excluded.categories END,
                         comment = COALESCE(excluded.comment, papers.comment),
                         journal_ref = COALESCE(excluded.journal_ref, papers.journal_ref), updated = excluded.updated
                       WHERE excluded.version >= papers.version""",
                    (
                        paper.arxiv_id,
                        paper.version,
                        paper.title,
                        paper.abstract,
                        json.dumps(paper.authors),
                        json.dumps(paper.categories),
                        paper.comment,
                        paper.journal_ref,
                        seen_at,
                        seen_at,
                    ),
                )
                added += self._exec(
                    db,
                    self._insert_ignore("feed_items VALUES (?, ?, ?, ?, ?, ?, ?)"),
                    (
                        feed_key,
                        paper.arxiv_id,
                        paper.version,
                        paper.announce_type,
                        paper.announced,
                        seen_at,
                        paper.backfilled,
                    ),
                )
        return added

    def enrich(
        self,
        arxiv_id: str,
        now: datetime,
        *,
        comment: str | None,
        journal_ref: str | None,
        categories: Sequence[str],
        affiliations: Sequence[str] = (),
    ) -> None:
        """Add what the API knows and the feed does not: comment, journal reference, all categories, and the
        authors' affiliations (kept as a JSON list; none leaves those known before)."""
        cats = json.dumps(list(categories))
        affs = json.dumps(list(affiliations)) if affiliations else None
        with self.transaction() as db:
            self._exec(
                db,
                """UPDATE papers SET comment = COALESCE(:comment, comment),
                     journal_ref = COALESCE(:journal_ref, journal_ref),
                     categories = CASE WHEN :cats = '[]' THEN categories ELSE :cats END,
                     affiliations = COALESCE(:affs, affiliations),
                     enriched_at = :now
                   WHERE arxiv_id = :id""",
                {
                    "comment": comment,
                    "journal_ref": journal_ref,
                    "cats": cats,
                    "affs": affs,
                    "now": now,
                    "id": arxiv_id,
                },
            )

    def affiliations(self, arxiv_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """arxiv_id -> its authors' affiliations as the API gave them, for those of ``arxiv_ids`` that have some."""
        found: dict[str, tuple[str, ...]] = {}
        for chunk in self._chunks(sorted(set(arxiv_ids))):
            among, params = self._in("arxiv_id", "id", chunk)
            rows = self._query(
                f"SELECT arxiv_id, affiliations FROM papers WHERE affiliations IS NOT NULL AND {among}", params
            )
            found.update((row["arxiv_id"], tuple(json.loads(row["affiliations"]))) for row in rows)
        return found

    def not_enriched(self, arxiv_ids: Iterable[str]) -> list[str]:
        found: list[str] = []
        for chunk in self._chunks(sorted(set(arxiv_ids))):
            among, params = self._in("arxiv_id", "id", chunk)
            rows = self._query(
                f"SELECT arxiv_id FROM papers WHERE enriched_at IS NULL AND {among} ORDER BY arxiv_id", params
            )
            found.extend(row["arxiv_id"] for row in rows)
        return found

    def candidates(self, feed_key: str, after: datetime, until: datetime) -> list[Paper]:
        """Feed items of ``feed_key`` first seen in (after, until], as papers with the item's version and type.

        A category (``cs.LG``) is one indexed range of its items. A category set (``cs.AI+cs.LG``) is the union of
        its categories' items, and of any stored under the set's own key (as feeds were before they were polled
        per category), each paper version once, where it was first seen, with the type a combined feed gives it:
        ``new`` (``replace``) when any of its categories announced it so, as the paper's primary category is one of
        them, else ``cross`` (``replace-cross``). Versions stay apart: a window holding a paper's first version
        and its replacement holds both, as one feed's items do.
        """
        keys = list(dict.fromkeys([feed_key, *feed_key.split("+")]))
        among, params = self._in("f.feed_key", "key", keys)
        rows = self._query(
            f"""SELECT f.arxiv_id, f.version, f.announce_type, f.announced, f.backfilled,
                       p.title, p.abstract, p.authors, p.categories, p.comment, p.journal_ref
                FROM feed_items f JOIN papers p USING (arxiv_id)
                WHERE {among} AND f.seen_at > :after AND f.seen_at <= :until
                ORDER BY f.announced NULLS FIRST, f.seen_at, f.arxiv_id{self._BY_CODE_POINT}, f.version""",
            {**params, "after": after, "until": until},
        )
        if len(keys) > 1:
            rows = _one_per_version(rows)
        return [
            Paper(
                arxiv_id=row["arxiv_id"],
                version=row["version"],
                title=row["title"],
                abstract=row["abstract"],
                authors=tuple(json.loads(row["authors"])),
                categories=tuple(json.loads(row["categories"])),
                announce_type=row["announce_type"],
                announced=self._day(row["announced"]),
                comment=row["comment"],
                journal_ref=row["journal_ref"],
                backfilled=bool(row["backfilled"]),
            )
            for row in rows
        ]

    def paper_count(self) -> int:
        return int(self._query("SELECT count(*) AS n FROM papers")[0]["n"])

    def feed_state(self, feed_key: str) -> FeedState | None:
        rows = self._query("SELECT * FROM feeds WHERE feed_key = ?", (feed_key,))
        return self._feed_state(rows[0]) if rows else None

    def feed_states(self) -> list[FeedState]:
        rows = self._query(f"SELECT * FROM feeds ORDER BY feed_key{self._BY_CODE_POINT}")
        return [self._feed_state(row) for row in rows]

    def _feed_state(self, row: ResultRow) -> FeedState:
        return FeedState(
            feed_key=row["feed_key"],
            etag=row["etag"],
            last_polled=self._time(row["last_polled"]),
            last_ok=self._time(row["last_ok"]),
            last_status=row["last_status"],
            last_error=row["last_error"],
            last_announced=self._day(row["last_announced"]),
            last_items_hash=row["last_items_hash"],
            item_count=row["item_count"],
        )

    def record_poll(
        self,
        feed_key: str,
        *,
        at: datetime,
        status: str,
        error: str | None = None,
        etag: str | None = None,
        announced: date | None = None,
        items_hash: str | None = None,
        item_count: int | None = None,
    ) -> None:
        """Record one poll: ``status`` is ok, not_modified, repeat, empty or error; errors keep the last good state."""
        with self.transaction() as db:
            self._exec(db, self._insert_ignore("feeds (feed_key) VALUES (?)"), (feed_key,))
            self._exec(
                db,
                """UPDATE feeds SET last_polled = :at, last_status = :status, last_error = :error,
                     last_ok = CASE WHEN :ok THEN :at ELSE last_ok END,
                     etag = COALESCE(:etag, etag),
                     last_announced = COALESCE(:announced, last_announced),
                     last_items_hash = COALESCE(:items_hash, last_items_hash),
                     item_count = COALESCE(:item_count, item_count)
                   WHERE feed_key = :feed_key""",
                {
                    "at": at,
                    "status": status,
                    "error": error,
                    "ok": status != "error",
                    "etag": etag,
                    "announced": announced,
                    "items_hash": items_hash,
                    "item_count": item_count,
                    "feed_key": feed_key,
                },
            )

    def last_new_items(self) -> dict[str, datetime]:
        """feed_key -> when a poll last brought new items from arXiv (backfilled items not counted)."""
        rows = self._query("SELECT feed_key, max(seen_at) AS at FROM feed_items WHERE NOT backfilled GROUP BY feed_key")
        return {row["feed_key"]: present(self._time(row["at"])) for row in rows}

    # -- backfills ---------------------------------------------------------------------------------------------

    def request_backfill(
        self, feed_key: str, day: date, window: tuple[datetime, datetime], reason: str, now: datetime
    ) -> bool:
        """Remember that ``day`` of ``feed_key`` must be recovered; False when it was requested before."""
        with self.transaction() as db:
            return (
                self._exec(
                    db,
                    self._insert_ignore(
                        """backfills (feed_key, day, window_start, window_end, reason, requested_at)
                           VALUES (?, ?, ?, ?, ?, ?)"""
                    ),
                    (feed_key, day, window[0], window[1], reason, now),
                )
                > 0
            )

    def backfills(self, feed_key: str | None = None, states: Sequence[str] = ("pending", "done")) -> list[BackfillRow]:
        """Backfill windows (of one feed, or all), oldest day first."""
        among, params = self._in("state", "state", states)
        rows = self._query(
            f"""SELECT * FROM backfills WHERE (CAST(:feed AS TEXT) IS NULL OR feed_key = :feed) AND {among}
                ORDER BY day, feed_key{self._BY_CODE_POINT}""",
            {"feed": feed_key, **params},
        )
        return [
            BackfillRow(
                feed_key=row["feed_key"],
                day=present(self._day(row["day"])),
                window_start=present(self._time(row["window_start"])),
                window_end=present(self._time(row["window_end"])),
                reason=row["reason"],
                state=row["state"],
                attempts=row["attempts"],
                last_error=row["last_error"],
                attempted_at=self._time(row["attempted_at"]),
                added=row["added"],
            )
            for row in rows
        ]

    def record_backfill(
        self,
        feed_key: str,
        day: date,
        now: datetime,
        *,
        added: int = 0,
        error: str | None = None,
        give_up: bool = False,
    ) -> None:
        """Record one attempt: ``done`` when ``error`` is None, ``expired`` on ``give_up``, else still pending."""
        state = "expired" if give_up else "done" if error is None else "pending"
        with self.transaction() as db:
            self._exec(
                db,
                """UPDATE backfills SET attempts = attempts + ?, attempted_at = ?, last_error = ?, state = ?,
                     added = added + ? WHERE feed_key = ? AND day = ?""",
                (0 if give_up else 1, now, error, state, added, feed_key, day),
            )


_OWN_TYPE = {"cross": "new", "replace-cross": "replace"}  # what a cross-list is in its primary category's feed


def _one_per_version(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """One row per (paper, version), in the order first seen; a row announcing it as its own type wins."""
    kept: dict[tuple[str, int], ResultRow] = {}
    for row in rows:
        key = (row["arxiv_id"], row["version"])
        first = kept.get(key)
        if first is None:
            kept[key] = row
        elif _OWN_TYPE.get(first["announce_type"]) == row["announce_type"]:
            kept[key] = row  # keeps the place of the first
    return list(kept.values())
