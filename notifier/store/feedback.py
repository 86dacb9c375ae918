"""What readers said of ranked papers through the links under them: more like this, or fewer like this.

A row of ``feedback`` is one subscriber's word on one paper (``more`` or ``fewer``, and when); a later click on the
same paper replaces an earlier one. The paper's metadata is copied into ``reference_papers`` with it, so that the
paper stays known, for ranking and for ``notifier likes``, after the feeds' papers are pruned. Feedback is kept
when its subscriber leaves the config: a subscriber renamed back finds it again (``notifier rename`` moves it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from notifier.models import FeedbackKind, Paper
from notifier.store.dialect import ConnT, present
from notifier.store.likes import LikeQueries, paper_of_row

Feedback = dict[str, tuple[FeedbackKind, datetime]]  # arxiv_id -> (kind, when), one subscriber's


class FeedbackQueries(LikeQueries[ConnT]):
    """Readers' feedback on ranked papers, and the papers it names."""

    def save_feedback(self, subscriber: str, paper: Paper, kind: FeedbackKind, now: datetime) -> None:
        """Remember that ``subscriber`` wants ``kind`` papers like ``paper`` (the later of two clicks wins), and
        keep ``paper``'s metadata among the reference papers; one transaction."""
        with self.transaction() as db:
            self._save_reference_papers(db, [paper], now)
            self._exec(
                db,
                """INSERT INTO feedback VALUES (?, ?, ?, ?)
                   ON CONFLICT (subscriber, arxiv_id) DO UPDATE SET kind = excluded.kind, at = excluded.at
                   WHERE excluded.at >= feedback.at""",
                (subscriber, paper.arxiv_id, kind, now),
            )

    def feedback_of(self, names: Iterable[str]) -> dict[str, Feedback]:
        """name -> its feedback, for those of ``names`` that gave some, in as few statements as the dialect allows."""
        found: dict[str, Feedback] = {}
        for chunk in self._chunks(sorted(set(names))):
            among, params = self._in("subscriber", "name", chunk)
            rows = self._query(f"SELECT * FROM feedback WHERE {among} ORDER BY at, arxiv_id", params)
            for row in rows:
                kind: FeedbackKind = "more" if row["kind"] == "more" else "fewer"
                found.setdefault(row["subscriber"], {})[row["arxiv_id"]] = (kind, present(self._time(row["at"])))
        return found

    def known_paper(self, arxiv_id: str) -> Paper | None:
        """The paper stored under ``arxiv_id``: as a feed brought it, else as a reference paper; None if neither."""
        rows = self._query("SELECT * FROM papers WHERE arxiv_id = ?", (arxiv_id,))
        if rows:
            return paper_of_row(rows[0])
        return self.reference_papers([arxiv_id]).get(arxiv_id)
