"""Summaries of papers written by an LLM, and what the LLM was asked for each day.

A summary is written once per paper version (``summaries``, keyed by arxiv id and version) and read by whoever
needs it: the first one stored stays (:meth:`SummaryQueries.save_summaries`), so two daemons summarising the same
paper at once keep one. Its keywords are kept as a JSON list.

What the LLM was asked for, made, gave up on, and the tokens it took, are counted per UTC day (``llm_usage``): the
daily limit reads the day's row, and ``notifier status`` shows it. :meth:`SummaryQueries.record_llm_usage` adds to
the day's counts in one statement, so counts from daemons sharing a database add up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from notifier.models import Summary, SummaryKey
from notifier.store.dialect import ConnT, Dialect, ResultRow
from notifier.store.rows import LlmUsage


class SummaryQueries(Dialect[ConnT]):
    """The summaries of the store, and the LLM's usage per day."""

    def summaries(self, keys: Iterable[SummaryKey]) -> dict[SummaryKey, Summary]:
        """(arxiv_id, version) -> its stored summary, for those of ``keys`` that have one.

        Papers are looked up by id, as many at a time as the dialect binds in one statement; versions not asked
        for are left out.
        """
        wanted = set(keys)
        found: dict[SummaryKey, Summary] = {}
        for chunk in self._chunks(sorted({arxiv_id for arxiv_id, _ in wanted})):
            among, params = self._in("arxiv_id", "id", chunk)
            for row in self._query(f"SELECT * FROM summaries WHERE {among}", params):
                summary = _summary(row)
                if summary.key in wanted:
                    found[summary.key] = summary
        return found

    def save_summaries(self, summaries: Sequence[Summary], now: datetime) -> int:
        """Store ``summaries`` made at ``now``, in one transaction; a paper version that has a summary keeps it.
        Returns how many were new."""
        added = 0
        with self.transaction() as db:
            for summary in summaries:
                added += self._exec(
                    db,
                    self._insert_ignore("summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    (
                        summary.arxiv_id,
                        summary.version,
                        summary.summary,
                        summary.topic,
                        summary.subtopic,
                        json.dumps(list(summary.keywords)),
                        summary.institution,
                        summary.model,
                        now,
                    ),
                )
        return added

    def llm_usage(self, day: date) -> LlmUsage:
        """What the LLM was asked for on ``day`` (UTC), and what it cost; zeros when it was asked for nothing."""
        rows = self._query("SELECT * FROM llm_usage WHERE day = ?", (day,))
        if not rows:
            return LlmUsage(day)
        row = rows[0]
        return LlmUsage(
            day=day,
            asked=int(row["asked"]),
            made=int(row["made"]),
            failed=int(row["failed"]),
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
        )

    def record_llm_usage(
        self,
        day: date,
        *,
        asked: int = 0,
        made: int = 0,
        failed: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Add these counts to those of ``day`` (UTC), in one statement."""
        with self.transaction() as db:
            self._exec(
                db,
                """INSERT INTO llm_usage VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (day) DO UPDATE SET asked = llm_usage.asked + excluded.asked,
                     made = llm_usage.made + excluded.made, failed = llm_usage.failed + excluded.failed,
                     prompt_tokens = llm_usage.prompt_tokens + excluded.prompt_tokens,
                     completion_tokens = llm_usage.completion_tokens + excluded.completion_tokens""",
                (day, asked, made, failed, prompt_tokens, completion_tokens),
            )


def _summary(row: ResultRow) -> Summary:
    return Summary(
        arxiv_id=row["arxiv_id"],
        version=int(row["version"]),
        summary=row["summary"],
        topic=row["topic"],
        subtopic=row["subtopic"],
        keywords=tuple(json.loads(row["keywords"])),
        institution=row["institution"],
        model=row["model"],
    )
