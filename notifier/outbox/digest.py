"""Pure digest assembly: which matched papers one recipient gets, grouped in one section per rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from notifier.config.subscribers import Subscriber
from notifier.models import Digest, DigestSection, Match, Summary, SummaryKey


def sections_for(
    subscriber: Subscriber,
    matches: Mapping[str, Sequence[Match]],
    reserved: Mapping[str, int],
    *,
    rich: bool = False,
) -> tuple[DigestSection, ...]:
    """One section per rule, in the order of the rules, holding what this recipient has not had yet.

    ``matches`` maps rule keys to matches over the candidate papers; ``reserved`` maps arxiv ids to the highest
    version already sent (or on its way) to the recipient. A paper is listed once per section, at its highest
    version; its announce type must be one the subscriber asked for; a paper already delivered comes again only
    as a newer version announced as a replacement (which the subscriber asked for by listing replace types).
    With ``rich`` (an LLM is configured), the sections of rules that ask for summaries are rich. A ranked rule's
    matches come best first, and its section keeps the ``top`` of them.
    """
    sections = []
    types = subscriber.announce_types
    for rule in subscriber.rules:
        best: dict[str, Match] = {}
        for match in matches.get(rule.key, ()):
            paper = match.paper
            if paper.announce_type not in types:
                continue
            arxiv_id = paper.arxiv_id
            if reserved:
                had = reserved.get(arxiv_id)
                if had is not None and (not paper.is_update or paper.version <= had):
                    continue
            current = best.get(arxiv_id)
            if current is None or paper.version > current.paper.version:
                best[arxiv_id] = match
        chosen = tuple(best.values())
        if rule.similar is not None and rule.similar.top is not None:
            chosen = chosen[: rule.similar.top]  # ranked best first: the top ones this recipient has not had
        sections.append(DigestSection(rule=rule.name, query=rule.query, matches=chosen, rich=rich and rule.summaries))
    return tuple(sections)


def build_digest(
    subscriber: Subscriber,
    sections: tuple[DigestSection, ...],
    *,
    period_start: datetime,
    period_end: datetime,
    config_path: str,
    empty_reason: str | None = None,
    summaries: Mapping[SummaryKey, Summary] | None = None,
) -> Digest:
    return Digest(
        subscriber=subscriber.name,
        period_start=period_start,
        period_end=period_end,
        sections=sections,
        kind=subscriber.schedule.kind,
        empty_reason=empty_reason,
        config_path=config_path,
        summaries=dict(summaries or {}),
    )


def rich_papers(sections: Sequence[DigestSection]) -> list[SummaryKey]:
    """(arxiv_id, version) of every paper the rich sections of ``sections`` show, each once, in order."""
    keys = (match.paper.key for section in sections if section.rich for match in section.matches)
    return list(dict.fromkeys(keys))


def papers_of(sections: Sequence[DigestSection]) -> tuple[tuple[str, int], ...]:
    """(arxiv_id, version) of every distinct paper in ``sections``, highest version per id."""
    versions: dict[str, int] = {}
    for section in sections:
        for match in section.matches:
            paper = match.paper
            versions[paper.arxiv_id] = max(versions.get(paper.arxiv_id, 0), paper.version)
    return tuple(versions.items())
