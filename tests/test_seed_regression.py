"""Real digests from the system we replace listed the same 20 papers under every keyword.

Each seed README has one table per keyword (Title | Date | Abstract | Comment). We rebuild the papers from the
tables, run every keyword as a rule, and check each result against an independent word-boundary search.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from notifier.arxiv.display import clean_display
from notifier.matching.rules import RuleSet
from notifier.models import Paper

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
SEED_FILES = sorted(SEEDS.glob("00[134]_*.txt")) if SEEDS.is_dir() else []
pytestmark = pytest.mark.skipif(not SEED_FILES, reason=f"seed digests not found in {SEEDS}")

ROW = re.compile(
    r"^\| \*\*\[(?P<title>.*?)\]\(https?://arxiv\.org/abs/(?P<id>[^)v]+)v(?P<version>\d+)\)\*\* \| (?P<date>\S+) \| "
    r"<details><summary>Show</summary><p>(?P<abstract>.*?)</p></details> \|(?P<comment>.*)\|$"
)


def read_seed(path: Path) -> dict[str, list[Paper]]:
    """Keyword -> the papers the old system listed under it."""
    sections: dict[str, list[Paper]] = {}
    keyword = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            keyword = line[3:].strip()
            sections[keyword] = []
        elif keyword and (row := ROW.match(line)):
            sections[keyword].append(
                Paper(
                    arxiv_id=row["id"],
                    version=int(row["version"]),
                    title=clean_display(row["title"]),
                    abstract=clean_display(row["abstract"]),
                    authors=(),
                    comment=clean_display(row["comment"]) or None,
                )
            )
    return sections


def contains(keyword: str, paper: Paper) -> bool:
    """Case-insensitive whole-word search; hyphens and punctuation may separate words; each word may be plural."""
    pattern = r"[\W_]+".join(re.escape(word) + "(?:s|es)?" for word in keyword.lower().split())
    regex = re.compile(rf"(?<![^\W_]){pattern}(?![^\W_])")
    return any(regex.search(text.lower()) for text in (paper.title, paper.abstract))


def as_query(keyword: str) -> str:
    return f'"{keyword}"' if " " in keyword else keyword


@pytest.fixture(params=SEED_FILES, ids=lambda path: path.name)
def seed(request: pytest.FixtureRequest) -> dict[str, list[Paper]]:
    return read_seed(request.param)


def test_the_old_system_listed_the_same_twenty_papers_under_every_keyword(seed):
    assert list(seed) == ["reinforcement learning", "compiler", "performance"]
    listings = [[paper.arxiv_id for paper in papers] for papers in seed.values()]
    assert all(len(listing) == 20 for listing in listings)
    assert listings[0] == listings[1] == listings[2]
    assert any(not contains(keyword, paper) for keyword, papers in seed.items() for paper in papers)


def test_our_matches_differ_per_keyword_and_every_listed_paper_holds_its_keyword(seed):
    papers = next(iter(seed.values()))
    rules = RuleSet.compile([(keyword, keyword, as_query(keyword)) for keyword in seed])
    result = rules.match(papers)
    ours = {keyword: [match.paper.arxiv_id for match in result.get(keyword, [])] for keyword in seed}

    non_empty = [tuple(ids) for ids in ours.values() if ids]
    assert len({tuple(ids) for ids in ours.values()}) > 1, ours
    assert len(set(non_empty)) == len(non_empty), ours
    for keyword, old_listing in seed.items():
        holding = [paper.arxiv_id for paper in old_listing if contains(keyword, paper)]
        lacking = {paper.arxiv_id for paper in old_listing if not contains(keyword, paper)}
        assert ours[keyword] == holding, keyword
        assert not lacking & set(ours[keyword]), keyword


def test_every_hit_in_the_seed_papers_points_at_its_keyword(seed):
    papers = next(iter(seed.values()))
    result = RuleSet.compile([(keyword, keyword, as_query(keyword)) for keyword in seed]).match(papers)
    assert result, "no seed paper matched any keyword"
    for keyword, matches in result.items():
        for match in matches:
            assert match.hits
            for hit in match.hits:
                text = match.paper.title if hit.field.value == "title" else match.paper.abstract
                span = re.sub(r"[\W_]+", " ", text[hit.start : hit.end].lower())
                assert span.startswith(keyword), (keyword, span)
