"""Benchmark: the indexed matcher against a naive rule-by-rule, paper-by-paper regular-expression loop.

Papers are the real items of the arXiv fixture feeds (``../shared/fixtures/arxiv/rss-*.DERIVED.xml``), replicated
with fresh ids up to ``--papers``. The fixtures carry no ``<category>`` elements, so each paper gets one or two of
its feed's categories at random. Rules are synthetic but built from the same papers: words of middling frequency
from real abstracts, phrases cut from real abstracts, real author names, categories, with AND, OR, NOT and prefixes.

The indexed matcher is timed in two parts: which papers each rule selects (``RuleSet.evaluate`` plus reading every
rule's paper indices), and, separately, the hits of every match (``MatchBatch.matches``), which a digest needs only
for the papers it sends.

The naive loop is the reference evaluator of the test suite (one regular expression per term, on text normalised
once per paper). For large sizes it runs on a random sample of rules and its time is extrapolated linearly; the
output says so. Both matchers must select the same papers for every rule checked, or the script exits with 1.

    python bench/matching.py [--sizes 1000,10000,100000] [--papers 3000] [--sample 300] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import sys
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from notifier.matching import RuleSet  # noqa: E402
from notifier.models import Paper  # noqa: E402
from notifier.text import tokenize  # noqa: E402
from tests.reference_matcher import NormalPaper, match_normalised  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "arxiv"
RULES_PER_SUBSCRIBER = 5
_DC = "{http://purl.org/dc/elements/1.1/}"
_ARXIV = "{http://arxiv.org/schemas/atom}"
_ABSTRACT = re.compile(r"^arXiv:\S+ Announce Type: \S+\s*Abstract:\s*", re.DOTALL)
_PLAIN_NAME = re.compile(r"[^\W\d_][\w.'-]*(?: [^\W\d_][\w.'-]*)+")
STOPWORDS = frozenset(
    "the and for with that this from are our which these their such have been also into than over more most both "
    "can using based show each when where while they them will what were used results method methods approach "
    "paper propose proposed model models data learning".split()
)


def load_papers(rng: random.Random) -> list[Paper]:
    papers: list[Paper] = []
    for path in sorted(FIXTURES.glob("rss-*.DERIVED.xml")):
        channel = ET.parse(path).getroot().find("channel")
        if channel is None:
            continue
        feed_categories = (channel.findtext("title") or "").split(" updates")[0].split(", ")
        for item in channel.iter("item"):
            link = item.findtext("link") or ""
            description = item.findtext("description") or ""
            version = re.search(r"v(\d+) Announce", description)
            creators = item.findtext(f"{_DC}creator") or ""
            papers.append(
                Paper(
                    arxiv_id=link.rsplit("/", 1)[-1],
                    version=int(version.group(1)) if version else 1,
                    title=" ".join((item.findtext("title") or "").split()),
                    abstract=" ".join(_ABSTRACT.sub("", description).split()),
                    authors=tuple(name.strip() for name in creators.split(", ") if name.strip()),
                    categories=tuple(rng.sample(feed_categories, k=min(len(feed_categories), rng.choice((1, 2))))),
                    announce_type=item.findtext(f"{_ARXIV}announce_type") or "new",
                )
            )
    return papers


def replicate(base: Sequence[Paper], count: int) -> list[Paper]:
    return [
        Paper(f"27{n // 100000:02d}.{n % 100000:05d}", p.version, p.title, p.abstract, p.authors, p.categories)
        for n, p in ((n, base[n % len(base)]) for n in range(count))
    ]


class RuleMaker:
    """Random rules drawn from the vocabulary, phrases, authors and categories of real papers."""

    def __init__(self, papers: Sequence[Paper], rng: random.Random) -> None:
        self.rng = rng
        frequency: Counter[str] = Counter()
        self.abstracts = [tokenize(p.abstract) for p in papers]
        for tokens in self.abstracts:
            frequency.update(set(tokens))
        low, high = max(2, len(papers) // 1000), len(papers) // 80  # topical words, not common ones
        self.words = sorted(
            w for w, n in frequency.items() if low <= n <= high and w.isalpha() and len(w) > 3 and w not in STOPWORDS
        )
        self.names = sorted({name for p in papers for name in p.authors if _PLAIN_NAME.fullmatch(name)})
        self.categories = sorted({c for p in papers for c in p.categories})

    def word(self) -> str:
        word = self.rng.choice(self.words)
        return word[:6] + "*" if len(word) > 8 and self.rng.random() < 0.1 else word

    def phrase(self) -> str:
        while True:
            tokens = self.rng.choice(self.abstracts)
            length = self.rng.choice((2, 2, 3))
            if len(tokens) <= length:
                continue
            start = self.rng.randrange(len(tokens) - length)
            words = tokens[start : start + length]
            if all(w.isalpha() and len(w) > 2 for w in words) and not set(words) <= STOPWORDS:
                return '"' + " ".join(words) + '"'

    def author(self) -> str:
        parts = self.rng.choice(self.names).split()
        if self.rng.random() < 0.5:
            return f'au:"{parts[0][0]} {parts[-1]}"'
        return f'au:"{parts[0]} {parts[-1]}"'

    def term(self) -> str:
        return self.phrase() if self.rng.random() < 0.4 else self.word()

    def rule(self) -> str:
        roll = self.rng.random()
        if roll < 0.30:
            return self.word()
        if roll < 0.55:
            return self.phrase()
        if roll < 0.70:
            return f"{self.term()} AND {self.term()}"
        if roll < 0.80:
            return f"({self.term()} OR {self.term()}) AND NOT {self.word()}"
        if roll < 0.90:
            return self.author()
        if roll < 0.95:
            return f"cat:{self.rng.choice(self.categories)} AND {self.term()}"
        return f"ti:({self.term()} OR {self.term()})"


def run_size(
    subscribers: int, papers: list[Paper], normal: list[NormalPaper], maker: RuleMaker, sample: int, rng: random.Random
) -> tuple[list[str], bool]:
    rules = [
        (f"sub{s}/{r}", f"rule {r}", maker.rule()) for s in range(subscribers) for r in range(RULES_PER_SUBSCRIBER)
    ]
    gc.collect()
    started = time.perf_counter()
    ruleset = RuleSet.compile(rules)
    compile_s = time.perf_counter() - started
    terms = ruleset.term_count

    gc.collect()
    started = time.perf_counter()
    batch = ruleset.evaluate(papers)
    matched = dict(batch.paper_sets())
    sets_s = time.perf_counter() - started
    matches = sum(len(found) for found in matched.values())

    started = time.perf_counter()
    hits = sum(len(match.hits) for key in matched for match in batch.matches(key))
    hits_s = time.perf_counter() - started
    del batch

    del ruleset
    gc.collect()
    tracemalloc.start()
    ruleset = RuleSet.compile(rules)
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del ruleset

    checked = rules if len(rules) <= sample else rng.sample(rules, sample)
    pairs = [(key, query) for key, _, query in checked]
    started = time.perf_counter()
    naive = match_normalised(pairs, papers, normal)
    naive_s = (time.perf_counter() - started) * len(rules) / len(checked)
    ours = {key: [papers[i].arxiv_id for i in matched[key].tolist()] for key, _ in pairs if key in matched}
    same = ours == naive
    how = "all rules" if len(checked) == len(rules) else f"{len(checked)} sampled, extrapolated"
    row = [
        f"{subscribers:,}",
        f"{len(rules):,}",
        f"{terms:,}",
        f"{compile_s:.2f}",
        f"{sets_s:.2f}",
        f"{hits_s:.2f}",
        f"{matches:,}/{hits:,}",
        f"{naive_s:,.1f} ({how})",
        f"{naive_s / sets_s:,.0f}x",
        f"{retained / 2**20:.1f} / {peak / 2**20:.1f}",
        f"{'identical' if same else 'DIFFERENT'} ({len(checked):,} rules)",
    ]
    return row, same


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="subscriber counts, comma-separated")
    parser.add_argument("--papers", type=int, default=3000)
    parser.add_argument("--sample", type=int, default=300, help="rules the naive loop runs beyond the smallest size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 500 papers, every rule checked")
    args = parser.parse_args(argv)
    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",")]
    paper_count = 500 if args.quick else args.papers

    rng = random.Random(args.seed)
    base = load_papers(rng)
    if not base:
        print(f"no fixture feeds in {FIXTURES}", file=sys.stderr)
        return 2
    papers = replicate(base, paper_count)
    started = time.perf_counter()
    normal = [NormalPaper.of(p) for p in papers]
    print(
        f"{len(papers):,} papers ({len(base):,} distinct from the fixtures); naive loop pre-normalises them once in "
        f"{time.perf_counter() - started:.2f} s (not counted below)"
    )
    maker = RuleMaker(base, rng)

    header = ["subscribers", "rules", "terms", "compile s", "match sets s", "hits s", "matches/hits", "naive loop s",
              "speedup", "rules MB kept/peak", "check"]  # fmt: skip
    rows = [header]
    all_same = True
    for subscribers in sizes:
        sample = subscribers * RULES_PER_SUBSCRIBER if subscribers == min(sizes) else args.sample
        row, same = run_size(subscribers, papers, normal, maker, sample, rng)
        rows.append(row)
        all_same = all_same and same
        print("  done:", " | ".join(row), flush=True)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        "\nmatch sets = RuleSet.evaluate (indexing the papers included) + reading every rule's paper indices;"
        "\nhits = MatchBatch.matches for every rule that matched (hit spans and Match objects, computed on demand);"
        "\nspeedup = naive loop time / match sets time. The check compares the match sets with the naive loop."
    )
    if not all_same:
        print("FAILED: the indexed matcher and the naive loop disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
