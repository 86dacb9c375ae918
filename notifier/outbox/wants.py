"""Which papers the next digests will show as rich entries, and so need a summary: pure bookkeeping, no I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from notifier.models import Paper, SummaryKey


@dataclass
class SummaryWants:
    """The papers the rich sections of the next digests carry, who wants each, and when each digest is due."""

    papers: dict[SummaryKey, Paper] = field(default_factory=dict)
    wanted_by: dict[SummaryKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    due_at: dict[str, datetime] = field(default_factory=dict)  # subscriber -> when its digest is (or was) due

    def add(self, subscriber: str, due_at: datetime, papers: Iterable[Paper]) -> None:
        self.due_at[subscriber] = due_at
        for paper in papers:
            self.papers.setdefault(paper.key, paper)
            self.wanted_by[paper.key].add(subscriber)

    def ordered(self, leaving_out: Iterable[SummaryKey] = ()) -> list[Paper]:
        """The wanted papers, most-wanted first: by how many digests carry them, then the digest due first, then
        in announcement order, so that a budget that runs out leaves out the papers fewest people would read."""
        left_out = set(leaving_out)

        def rank(key: SummaryKey) -> tuple[int, datetime, date, str, int]:
            paper = self.papers[key]
            first_due = min(self.due_at[name] for name in self.wanted_by[key])
            return (-len(self.wanted_by[key]), first_due, paper.announced or date.min, paper.arxiv_id, paper.version)

        return [self.papers[key] for key in sorted(self.papers, key=rank) if key not in left_out]

    def subscribers_waiting_for(self, missing: Iterable[SummaryKey]) -> set[str]:
        """The subscribers whose digests carry one of the ``missing`` papers."""
        return {name for key in missing for name in self.wanted_by.get(key, ())}

    def __len__(self) -> int:
        return len(self.papers)
