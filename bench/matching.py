"""Benchmark: the matcher at 1k-100k subscribers against the code of a baseline checkout, a naive loop and SQLite FTS5.

Papers are the real items of the arXiv fixture feeds (``../shared/fixtures/arxiv/rss-*.DERIVED.xml``), replicated
with fresh ids up to ``--papers``. The fixtures carry no ``<category>`` elements, so each paper gets one or two of
its feed's categories at random. Rules are synthetic but built from the same papers: words of middling frequency
from real abstracts, phrases cut from real abstracts, real author names, categories, with AND, OR, NOT and prefixes.

**Sizes.** For each subscriber count (5 rules each), a fresh process per code base (this tree, and ``--baseline``,
a checkout of older code, if given) measures:

- compile: ``RuleSet.compile`` of every rule (done once per config load);
- match sets: ``RuleSet.evaluate`` (indexing the papers included) plus reading every rule's papers;
- hits: the hit spans of the first ``--shown`` papers of every matched rule, as digests render them (older code
  without ``matches(key, within=...)`` explains every paper of the rule, which is what it had to do);
- peak RSS of that process (``ru_maxrss``), and its RSS before compiling (papers and rule texts alone).

Both code bases' match sets are checked, on a random sample of ``--sample`` rules, against the naive loop: the
reference evaluator of the test suite (one regular expression per term, on text normalised once per paper), whose
time is extrapolated from the sample to all rules; the output says so.

**FTS5.** SQLite's FTS5 (the ``sqlite3`` module, in memory) gets one table of the same papers (columns ``ti``,
``abs``, ``au``, ``cat``, ``co``; tokenizer ``porter unicode61 remove_diacritics 2``) and one ``MATCH`` per rule:
AND/OR/NOT, "phrases", ``prefix*`` tokens, and field prefixes as column filters (no prefix: ``{ti abs}``). Its time
is building the table plus running every query; ours is ``RuleSet.evaluate`` plus reading every rule's papers
(compiling, done once per config load, is shown apart). Two mixes of ``--fts-subscribers`` x 5 rules: the rules
above, and one where 20 % are prefix phrases (``"graph neur*"``) and 20 % phrases of 5-8 words. Agreement is
counted per rule on a sample; the semantics differ on purpose where FTS5 cannot say ours: FTS5's Porter stemmer
folds more than our plurals (``network*`` vs ``networking``), ``au:"Y Zhang"`` is a NEAR of the two tokens over
all author names (ours: in order, within one name, a one-letter word an initial), and ``cat:cs.LG`` is the
phrase ``cs lg``.

    python bench/matching.py [--sizes 1000,10000,100000] [--papers 3000] [--sample 300] [--baseline /tmp/base]
                             [--fts-subscribers 1000] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and "--measure" in sys.argv:  # a measuring child imports the code base it measures
    sys.path.insert(0, sys.argv[sys.argv.index("--measure") + 1])
else:
    sys.path.insert(0, str(ROOT))

from notifier.matching.query import Node, Not, Or, Term, parse_query  # noqa: E402
from notifier.matching.rules import RuleSet  # noqa: E402
from notifier.matching.text import plural_variants, tokenize  # noqa: E402
from notifier.models import Field, Paper  # noqa: E402

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
_PAPER_FIELDS = ("arxiv_id", "version", "title", "abstract", "authors", "categories", "announce_type", "comment")


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

    def run(self, lengths: Sequence[int]) -> list[str]:
        """Consecutive words of a real abstract: letters only, longer than two, not all stopwords."""
        while True:
            tokens = self.rng.choice(self.abstracts)
            length = self.rng.choice(lengths)
            if len(tokens) <= length:
                continue
            start = self.rng.randrange(len(tokens) - length)
            words = tokens[start : start + length]
            if all(w.isalpha() and len(w) > 2 for w in words) and not set(words) <= STOPWORDS:
                return words

    def phrase(self) -> str:
        return '"' + " ".join(self.run((2, 2, 3))) + '"'

    def prefix_phrase(self) -> str:
        """``"graph neur*"``: a real phrase whose last word is cut to a prefix of 3-5 letters."""
        words = self.run((2, 2, 3))
        last = words[-1][: self.rng.choice((3, 4, 5))]
        return '"' + " ".join([*words[:-1], last]) + '*"'

    def long_phrase(self) -> str:
        return '"' + " ".join(self.run((5, 6, 7, 8))) + '"'

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

    def phrase_mix_rule(self) -> str:
        """The second FTS5 mix: 20 % prefix phrases, 20 % phrases of 5-8 words, the rest as :meth:`rule`."""
        roll = self.rng.random()
        if roll < 0.2:
            return self.prefix_phrase()
        if roll < 0.4:
            return self.long_phrase()
        return self.rule()


Rule = tuple[str, str, str]


def make_rules(maker: RuleMaker, subscribers: int, mix: str = "bench") -> list[Rule]:
    make = maker.phrase_mix_rule if mix == "phrases" else maker.rule
    return [(f"sub{s}/{r}", f"rule {r}", make()) for s in range(subscribers) for r in range(RULES_PER_SUBSCRIBER)]


# -- one measurement, in a process of its own -------------------------------------------------------------------


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Compile, match and explain ``job``'s rules on its papers with the code base this process imported."""
    papers = [Paper(**{**fields, "authors": tuple(fields["authors"]), "categories": tuple(fields["categories"])})
              for fields in job["papers"]]  # fmt: skip
    rules = [(key, name, query) for key, name, query in job["rules"]]
    gc.collect()
    before = _rss_mb()
    started = time.perf_counter()
    ruleset = RuleSet.compile(rules)
    compile_s = time.perf_counter() - started
    times: list[float] = []
    fts: dict[str, tuple[dict[str, list[str]], list[float], list[float]]] = {}
    for _ in range(job["repeat"]):  # ours and FTS5 by turns, so that both see the same machine
        gc.collect()
        started = time.perf_counter()
        batch = ruleset.evaluate(papers)
        keys = batch.keys()  # what the planner reads: the rules that matched, then each rule's papers
        matched = {key: batch.paper_indices(key) for key in keys}
        times.append(time.perf_counter() - started)
        for setup, (tokenizer, queries) in job["fts"].items():
            sets, build_s, query_s = fts5_sets(papers, queries, tokenizer)
            _, builds, runs = fts.setdefault(setup, (sets, [], []))
            builds.append(build_s)
            runs.append(query_s)
    sets_s = min(times)
    result: dict[str, Any] = {
        "compile_s": compile_s,
        "sets_s": sets_s,
        "terms": ruleset.term_count,
        "matches": sum(len(found) for found in matched.values()),
        "sample": {key: [papers[i].arxiv_id for i in matched.get(key, [])] for key in job["sample"]},
        "fts": {
            setup: ({key: sets[key] for key in job["sample"] if key in sets}, min(builds), min(runs))
            for setup, (sets, builds, runs) in fts.items()
        },
    }
    if job["shown"]:
        restricted = "within" in batch.matches.__code__.co_varnames
        shown, hits = 0, 0
        started = time.perf_counter()
        for key, found in matched.items():
            first = found[: job["shown"]]
            if restricted:
                explained = batch.matches(key, within=set(first.tolist()))
            else:
                explained = batch.matches(key)[: job["shown"]]
            shown += len(explained)
            hits += sum(len(match.hits) for match in explained)
        result.update(hits_s=time.perf_counter() - started, shown=shown, hits=hits, restricted=restricted)
    result.update(rss_before_mb=before, rss_peak_mb=_rss_mb())
    return result


def run_child(root: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`measure` in a fresh interpreter that imports the code under ``root``."""
    with tempfile.TemporaryDirectory() as folder:
        job_file, out_file = Path(folder, "job.json"), Path(folder, "out.json")
        job_file.write_text(json.dumps(job))
        subprocess.run(
            [sys.executable, __file__, "--measure", str(root), str(job_file), str(out_file)],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        result: dict[str, Any] = json.loads(out_file.read_text())
        return result


def as_job(
    papers: Sequence[Paper],
    rules: list[Rule],
    sample: list[str],
    shown: int = 0,
    repeat: int = 1,
    fts: dict[str, tuple[str, dict[str, str]]] | None = None,
) -> dict[str, Any]:
    """What a measuring process is asked: ``fts``, FTS5 setup -> (tokenizer, key -> MATCH expression)."""
    fields = [{name: getattr(paper, name) for name in _PAPER_FIELDS} for paper in papers]
    return {"papers": fields, "rules": rules, "sample": sample, "shown": shown, "repeat": repeat, "fts": fts or {}}


# -- the naive loop -----------------------------------------------------------------------------------------------


def naive_sets(rules: list[Rule], papers: Sequence[Paper], sample: int, rng: random.Random) -> tuple[
    dict[str, list[str]], float, str
]:  # fmt: skip
    """The reference evaluator's match sets of a sample of ``rules``, and its time extrapolated to all of them."""
    from tests.reference_matcher import NormalPaper, match_normalised

    normal = [NormalPaper.of(p) for p in papers]
    checked = rules if len(rules) <= sample else rng.sample(rules, sample)
    pairs = [(key, query) for key, _, query in checked]
    started = time.perf_counter()
    found = match_normalised(pairs, papers, normal)
    seconds = (time.perf_counter() - started) * len(rules) / len(checked)
    how = "all rules" if len(checked) == len(rules) else f"{len(checked)} sampled, x{len(rules) / len(checked):,.0f}"
    return {key: found.get(key, []) for key, _ in pairs}, seconds, how


# -- SQLite FTS5 --------------------------------------------------------------------------------------------------

_COLUMNS = {None: "{ti abs}", Field.TITLE: "ti", Field.ABSTRACT: "abs", Field.AUTHORS: "au",
            Field.CATEGORIES: "cat", Field.COMMENT: "co"}  # fmt: skip
_MAX_SPELLINGS = 16  # a phrase with more plural spellings than this is asked as written
# Two ways FTS5 can come near our plurals: its Porter stemmer (cheap, folds more), or every spelling ORed.
FTS5_SETUPS = {
    "porter": "porter unicode61 remove_diacritics 2",
    "plurals ORed": "unicode61 remove_diacritics 2",
}


def fts_query(node: Node, spell: bool) -> str | None:
    """The FTS5 MATCH expression for a parsed rule, or None where FTS5 cannot say it (a NOT with nothing to
    subtract from). ``spell``: each word as the OR of its plural spellings (for a table without a stemmer)."""
    if isinstance(node, Term):
        return _fts_term(node, spell)
    if isinstance(node, Or):
        parts = [fts_query(child, spell) for child in node.children]
        return None if None in parts else "(" + " OR ".join(p for p in parts if p) + ")"
    if isinstance(node, Not):
        return None
    positive = [fts_query(child, spell) for child in node.children if not isinstance(child, Not)]
    negative = [fts_query(child.child, spell) for child in node.children if isinstance(child, Not)]
    if not positive or None in positive or None in negative:
        return None
    expression = "(" + " AND ".join(p for p in positive if p) + ")"
    for part in negative:
        expression = f"({expression} NOT {part})"
    return expression


def _fts_term(term: Term, spell: bool) -> str:
    column = _COLUMNS[term.field]
    last = len(term.words) - 1
    if term.field is Field.AUTHORS:
        words = [f'"{word}"' + (" *" if len(word) == 1 or (term.prefix and i == last) else "")
                 for i, word in enumerate(term.words)]  # fmt: skip
        return f"{column} : " + (words[0] if len(words) == 1 else f"NEAR({' '.join(words)}, 3)")
    if term.field is Field.CATEGORIES:
        return f'{column} : "{" ".join(re.findall(r"[a-z0-9]+", term.words[0]))}"' + (" *" if term.prefix else "")
    star = " *" if term.prefix else ""
    options = [[word] if not spell or (term.prefix and i == last) else sorted(plural_variants(word))
               for i, word in enumerate(term.words)]  # fmt: skip
    spellings = list(itertools.product(*options))
    if len(spellings) > _MAX_SPELLINGS:
        spellings = [term.words]
    phrases = [f'"{" ".join(words)}"{star}' for words in spellings]
    return f"{column} : " + (phrases[0] if len(phrases) == 1 else "(" + " OR ".join(phrases) + ")")


def fts5_sets(
    papers: Sequence[Paper], queries: dict[str, str], tokenizer: str
) -> tuple[dict[str, list[str]], float, float]:
    """Every query's papers (arXiv ids in batch order), the time to build the table and the time of the queries."""
    started = time.perf_counter()
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE papers USING fts5(ti, abs, au, cat, co, tokenize='{tokenizer}')")
    db.executemany(
        "INSERT INTO papers(rowid, ti, abs, au, cat, co) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (n, p.title, p.abstract, ", ".join(p.authors), " ".join(p.categories), p.comment or "")
            for n, p in enumerate(papers)
        ],
    )
    db.commit()
    build_s = time.perf_counter() - started
    found: dict[str, list[str]] = {}
    started = time.perf_counter()
    for key, query in queries.items():
        rows = db.execute("SELECT rowid FROM papers WHERE papers MATCH ? ORDER BY rowid", (query,)).fetchall()
        found[key] = [papers[row[0]].arxiv_id for row in rows]
    query_s = time.perf_counter() - started
    db.close()
    return found, build_s, query_s


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x"


def _kinds(query: str) -> str:
    tree = parse_query(query)
    pending: list[Node] = [tree]
    kinds: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, Term):
            if node.field is Field.AUTHORS:
                kinds.add("au:")
            elif node.field is Field.CATEGORIES:
                kinds.add("cat:")
            elif node.prefix:
                kinds.add("prefix" if len(node.words) == 1 else "prefix phrase")
            else:
                kinds.add("word" if len(node.words) == 1 else "phrase")
        elif isinstance(node, Not):
            pending.append(node.child)
        else:
            pending.extend(node.children)
    return "+".join(sorted(kinds))


def compare_fts5(
    label: str,
    papers: Sequence[Paper],
    rules: list[Rule],
    roots: dict[str, Path],
    sample: int,
    repeat: int,
    rng: random.Random,
) -> Iterator[list[str]]:
    """Rows comparing each code base with FTS5 on ``rules`` (each measured by turns with FTS5 in one process),
    and a line per FTS5 setup on how far they agree."""
    trees = {key: parse_query(query) for key, _, query in rules}
    fts: dict[str, tuple[str, dict[str, str]]] = {}
    for setup, tokenizer in FTS5_SETUPS.items():
        spell = setup != "porter"
        fts[setup] = tokenizer, {key: text for key, tree in trees.items() if (text := fts_query(tree, spell))}
    expressible = sorted(set.intersection(*(set(queries) for _, queries in fts.values())))
    checked = rng.sample(expressible, min(sample, len(expressible)))
    ours: dict[str, list[str]] = {}
    answers: dict[str, dict[str, list[str]]] = {}
    for name, root in roots.items():
        result = run_child(root, as_job(papers, rules, checked, repeat=repeat, fts=fts))
        ours = ours or result["sample"]  # this tree's, measured first
        answers = answers or {setup: sets for setup, (sets, _, _) in result["fts"].items()}
        timings = [(build_s, query_s) for _, build_s, query_s in result["fts"].values()]
        fastest = min(build_s + query_s for build_s, query_s in timings)
        yield [
            label, name, f"{len(rules):,}", f"{result['compile_s']:.2f}", f"{result['sets_s']:.2f}",
            *(f"{build_s:.2f} + {query_s:.2f}" for build_s, query_s in timings),
            _times(fastest / result["sets_s"]), _times(fastest / (result["sets_s"] + result["compile_s"])),
        ]  # fmt: skip
    written = {key: query for key, _, query in rules}
    for setup, sets in answers.items():
        same = sum(ours[key] == sets[key] for key in checked)
        differing = Counter(_kinds(written[key]) for key in checked if ours[key] != sets[key])
        print(
            f"  {label}, FTS5 {setup}: {len(fts[setup][1]):,} of {len(rules):,} rules have an FTS5 form; match sets "
            f"identical for {same} of {len(checked)} sampled rules; the others hold: "
            + (", ".join(f"{kind} {n}" for kind, n in differing.most_common()) or "none"),
            flush=True,
        )


# -- the report ---------------------------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="subscriber counts, comma-separated")
    parser.add_argument("--papers", type=int, default=3000)
    parser.add_argument("--sample", type=int, default=300, help="rules checked against the naive loop and FTS5")
    parser.add_argument("--shown", type=int, default=20, help="papers per matched rule whose hits are timed")
    parser.add_argument("--baseline", type=Path, help="a checkout of older code to measure in the same run")
    parser.add_argument("--fts-subscribers", type=int, default=1000, help="subscribers in each FTS5 mix (0: none)")
    parser.add_argument("--repeat", type=int, default=3, help="FTS5 comparison: best of this many runs of each side")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 500 papers, 100 in each FTS5 mix")
    args = parser.parse_args(argv)
    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    paper_count = 500 if args.quick else args.papers
    fts_subscribers = 100 if args.quick else args.fts_subscribers

    rng = random.Random(args.seed)
    base = load_papers(rng)
    if not base:
        print(f"no fixture feeds in {FIXTURES}", file=sys.stderr)
        return 2
    papers = replicate(base, paper_count)
    maker = RuleMaker(base, rng)
    roots = {"this tree": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    print(f"{len(papers):,} papers ({len(base):,} distinct from the fixtures); code: " +
          ", ".join(f"{name} {root}" for name, root in roots.items()), flush=True)  # fmt: skip

    rows = [["subscribers", "code", "rules", "terms", "compile s", "match sets s", "hits s", "shown/hits",
             "RSS MB before/peak", "naive loop s", "vs naive"]]  # fmt: skip
    agree = True
    for subscribers in sizes:
        rules = make_rules(maker, subscribers)
        expected, naive_s, how = naive_sets(rules, papers, len(rules) if args.quick else args.sample, rng)
        for name, root in roots.items():
            result = run_child(root, as_job(papers, rules, list(expected), shown=args.shown))
            same = result["sample"] == expected
            agree = agree and same
            shown = f"first {args.shown}" if result["restricted"] else "all"
            rows.append([
                f"{subscribers:,}", name, f"{len(rules):,}", f"{result['terms']:,}", f"{result['compile_s']:.2f}",
                f"{result['sets_s']:.2f}", f"{result['hits_s']:.2f} ({shown})",
                f"{result['shown']:,}/{result['hits']:,}",
                f"{result['rss_before_mb']:,.0f} / {result['rss_peak_mb']:,.0f}",
                f"{naive_s:,.1f} ({how})",
                f"{naive_s / result['sets_s']:,.0f}x, {'identical' if same else 'DIFFERENT'} ({len(expected):,} rules)",
            ])  # fmt: skip
            print("  done:", " | ".join(rows[-1]), flush=True)
    print()
    table(rows)

    if fts_subscribers > 0:  # 0: the sizes alone
        fts_rows = [["mix", "code", "rules", "compile s", "match sets s",
                     *(f"FTS5 {setup}: build + queries s" for setup in FTS5_SETUPS),
                     "faster FTS5 / match sets", "faster FTS5 / (compile + sets)"]]  # fmt: skip
        for label, mix in (("bench rules", "bench"), ("20% prefix phrases, 20% 5-8 words", "phrases")):
            rules = make_rules(maker, fts_subscribers, mix)
            fts_rows.extend(compare_fts5(label, papers, rules, roots, args.sample, args.repeat, rng))
        print()
        table(fts_rows)
    print(
        "match sets = RuleSet.evaluate (indexing the papers included) + reading every rule's papers; hits = hit spans\n"
        f"of the first {args.shown} papers of every matched rule (code without matches(key, within=...): of all of\n"
        "them); RSS = that measuring process's, papers and rule texts included. The naive loop and FTS5 checks\n"
        "compare match sets on sampled rules."
    )
    if not agree:
        print("FAILED: the indexed matcher and the naive loop disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        Path(sys.argv[4]).write_text(json.dumps(measure(json.loads(Path(sys.argv[3]).read_text()))))
        sys.exit(0)
    sys.exit(main())
