"""Benchmark: the cost of turning one digest into what the planner stores, against the code of a baseline checkout.

For every digest, the planner renders the email (subject, text and HTML parts, sized for Gmail) and builds its
RFC 5322 bytes with ``build_email``, and renders the Slack messages and encodes their payload. This times exactly
that, one digest after the other with one ``Renderer`` (as a plan does), in a fresh process per code base: this
tree, and ``--baseline`` (a checkout of older code).

Digests are made of real papers: the 3 Jun 2025 fixture feeds (``../shared/fixtures/arxiv``), with one or two of
their feed's categories and, for a third of them, a comment. Each subscriber has five rules of one or two terms
(words of middling frequency, phrases from the abstracts, author names) and gets every paper a rule matches; the
hits are found as ``tests/digest_factory.py`` finds them. ``--oversize`` of the subscribers (3 % by default) have
broad rules instead, and get digests of hundreds of papers, too large for one Gmail message, so they go through
the size fitting. The text parts and the Slack payloads of both code bases are compared digest by digest.

    python bench/render.py [--subscribers 2000] [--oversize 0.03] [--baseline /tmp/base] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and "--measure" in sys.argv:  # a measuring child imports the code base it measures
    sys.path.insert(0, sys.argv[sys.argv.index("--measure") + 1])
else:
    sys.path.insert(0, str(ROOT))

from notifier.models import Digest, DigestSection, Field, Hit, Match, Paper, SlackMessage  # noqa: E402
from notifier.render.renderer import Envelope, Renderer, RenderJob  # noqa: E402

try:
    from notifier.render.mime import build_email, make_message_id
    from notifier.render.slack import encode_payload
except ImportError:  # a baseline from before rendering built the messages: the channels and the planner did
    from notifier.channels.email import build_email, make_message_id  # type: ignore[no-redef]

    def encode_payload(messages: Sequence[SlackMessage]) -> bytes:
        return json.dumps([{"text": m.text, "blocks": list(m.blocks)} for m in messages]).encode()


FIXTURES = ROOT.parent / "shared" / "fixtures" / "arxiv"
FEEDS = {
    "rss-cs.CL+cs.CV+cs.MM+cs.LG+cs.SI-2025-06-03.DERIVED.xml": ("cs.CL", "cs.CV", "cs.MM", "cs.LG", "cs.SI"),
    "rss-cs.SD+eess.AS-2025-06-03.DERIVED.xml": ("cs.SD", "eess.AS"),
}
RULES_PER_SUBSCRIBER = 5
PERIOD_END = datetime(2025, 6, 4, 0, 0, tzinfo=UTC)
SENDER = "arXiv digest <digest@bench.example.org>"
_WORD = re.compile(r"[A-Za-z][a-z]{3,}")
_NAME = re.compile(r"[^\W\d_][\w.'-]*(?: [^\W\d_][\w.'-]*)+")
_PAPER_FIELDS = ("arxiv_id", "version", "title", "abstract", "authors", "categories", "announce_type", "comment")


# -- digests, made once in the parent ------------------------------------------------------------------------------


def load_papers(rng: random.Random) -> list[Paper]:
    from tests.digest_factory import load_papers as load_feed

    papers = []
    for name, categories in FEEDS.items():
        for paper in load_feed(FIXTURES / name):
            chosen = tuple(rng.sample(categories, k=min(len(categories), rng.choice((1, 2)))))
            comment = f"{rng.randrange(6, 40)} pages, {rng.randrange(1, 12)} figures" if rng.random() < 0.33 else None
            papers.append(replace(paper, categories=chosen, comment=comment))
    return papers


class Terms:
    """Rule terms drawn from the papers, each with its hits in every paper, found once."""

    def __init__(self, papers: Sequence[Paper], rng: random.Random) -> None:
        self.papers, self.rng = papers, rng
        self.texts = [f"{p.title}\n{p.abstract}".lower() for p in papers]
        documents: Counter[str] = Counter()
        for text in self.texts:
            documents.update({word.lower() for word in _WORD.findall(text)})
        count = len(papers)
        self.narrow = sorted(w for w, n in documents.items() if count // 800 <= n <= count // 200)
        self.broad = sorted(w for w, n in documents.items() if count // 12 <= n <= count // 4)
        self.names = sorted({name for p in papers for name in p.authors if _NAME.fullmatch(name)})
        self._hits: dict[str, dict[int, tuple[Hit, ...]]] = {}

    def phrase(self) -> str:
        while True:
            words = _WORD.findall(self.rng.choice(self.papers).abstract)
            if len(words) > 3:
                start = self.rng.randrange(len(words) - 2)
                return '"' + " ".join(words[start : start + 2]).lower() + '"'

    def term(self, broad: bool) -> str:
        """A broad word, or a word, phrase or author that at most 1 % of the papers have."""
        if broad:
            return self.rng.choice(self.broad)
        while True:
            roll = self.rng.random()
            if roll < 0.45:
                term = self.rng.choice(self.narrow)
            elif roll < 0.85:
                term = self.phrase()
            else:
                term = f'au:"{self.rng.choice(self.names)}"'
            if len(self.hits(term)) <= len(self.papers) // 100:
                return term

    def hits(self, term: str) -> dict[int, tuple[Hit, ...]]:
        from tests.digest_factory import find_hits

        if term not in self._hits:
            needle = term.removeprefix("au:").strip('"').lower()
            self._hits[term] = {
                index: found
                for index, paper in enumerate(self.papers)
                if (needle in self.texts[index] or term.startswith("au:")) and (found := find_hits(paper, [term]))
            }
        return self._hits[term]


def make_job(subscribers: int, oversize: float, seed: int) -> dict[str, Any]:
    """Papers and digests as plain data, for the measuring processes to rebuild with the code they import."""
    rng = random.Random(seed)
    papers = load_papers(rng)
    terms = Terms(papers, rng)
    digests = []
    for number in range(subscribers):
        broad = rng.random() < oversize
        sections = []
        for rule in range(RULES_PER_SUBSCRIBER):
            chosen = [terms.term(broad) for _ in range(rng.choice((1, 1, 2)))]
            found: dict[int, list[Hit]] = {}
            for term in chosen:
                for index, hits in terms.hits(term).items():
                    found.setdefault(index, []).extend(hits)
            matches = [
                [i, [[h.term, str(h.field), h.start, h.end, h.index] for h in hits]]
                for i, hits in sorted(found.items())
            ]
            sections.append([f"rule {rule}: {' / '.join(chosen)}", " OR ".join(chosen), matches])
        digests.append({"subscriber": f"subscriber {number}", "broad": broad, "sections": sections})
    return {"papers": [{name: getattr(p, name) for name in _PAPER_FIELDS} for p in papers], "digests": digests}


# -- one measurement, in a process of its own ----------------------------------------------------------------------


def rebuild(job: dict[str, Any]) -> list[Digest]:
    papers = [
        Paper(**{**fields, "authors": tuple(fields["authors"]), "categories": tuple(fields["categories"])})
        for fields in job["papers"]
    ]
    digests = []
    for data in job["digests"]:
        sections = tuple(
            DigestSection(
                rule,
                query,
                tuple(
                    Match(papers[index], rule, tuple(Hit(t, Field(f), s, e, i) for t, f, s, e, i in hits))
                    for index, hits in matches
                ),
            )
            for rule, query, matches in data["sections"]
        )
        start = PERIOD_END.replace(day=3)
        digests.append(Digest(data["subscriber"], start, PERIOD_END, sections))
    return digests


def render_jobs(subscribers: int, oversize: float, seed: int) -> list[RenderJob]:
    """The digests of :func:`make_job`, each as the planner hands it to a renderer: an email with its envelope
    (for the benchmarks of the render workers, ``bench/chunks.py`` and ``bench/collector.py``)."""
    when = datetime(2025, 6, 3, 20, 0, tzinfo=UTC)
    return [
        RenderJob(digest, Envelope("Digests <d@lab.example>", f"r{n}@lab.example", f"<{n}@lab.example>", when, "d"))
        for n, digest in enumerate(rebuild(make_job(subscribers, oversize, seed)))
    ]


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Render and encode every digest of ``job`` as the planner does, with the code base this process imported."""
    digests = rebuild(job)
    renderer = Renderer()
    email_ms, slack_ms, sizes, texts, slacks = [], [], [], [], []
    for number, digest in enumerate(digests):
        recipient = f"subscriber{number}@bench.example.org"
        unsubscribe = f"https://bench.example.org/unsubscribe?t={number:032x}"
        started = time.perf_counter()
        rendered = renderer.email(digest, unsubscribe_url=unsubscribe)
        payload = build_email(
            rendered,
            sender=SENDER,
            recipient=recipient,
            message_id=make_message_id(f"{digest.subscriber}|email|{recipient}", "bench.example.org"),
            date=PERIOD_END,
            list_id=f"subscriber{number}.bench.example.org",
            unsubscribe_url=unsubscribe,
        )
        middle = time.perf_counter()
        slack = encode_payload(renderer.slack(digest))
        email_ms.append((middle - started) * 1000)
        slack_ms.append((time.perf_counter() - middle) * 1000)
        sizes.append(len(payload))
        texts.append(hashlib.sha256(rendered.text.encode("utf-8", "replace")).hexdigest()[:16])
        slacks.append(hashlib.sha256(slack).hexdigest()[:16])
    return {"email_ms": email_ms, "slack_ms": slack_ms, "sizes": sizes, "texts": texts, "slacks": slacks}


def run_child(root: Path, job_file: Path) -> dict[str, Any]:
    """Run :func:`measure` in a fresh interpreter that imports the code under ``root``."""
    out_file = job_file.with_name(f"out-{abs(hash(str(root)))}.json")
    subprocess.run(
        [sys.executable, __file__, "--measure", str(root), str(job_file), str(out_file)],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    result: dict[str, Any] = json.loads(out_file.read_text())
    return result


# -- report -------------------------------------------------------------------------------------------------------


def summary(times: Sequence[float], picked: Sequence[bool]) -> tuple[float, float, float]:
    """Mean, median and 99th percentile in ms of the digests where ``picked``."""
    chosen = sorted(t for t, keep in zip(times, picked, strict=True) if keep)
    if not chosen:
        return 0.0, 0.0, 0.0
    return statistics.fmean(chosen), statistics.median(chosen), chosen[min(len(chosen) - 1, len(chosen) * 99 // 100)]


def report(job: dict[str, Any], results: dict[str, dict[str, Any]]) -> bool:
    """Print the table; False when the text parts or Slack payloads of the two code bases differ."""
    broad = [d["broad"] for d in job["digests"]]
    everyone = [True] * len(broad)
    typical = [not b for b in broad]
    papers = [len({i for _, _, ms in d["sections"] for i, _ in ms}) for d in job["digests"]]
    typical_papers = sorted(n for n, b in zip(papers, broad, strict=True) if not b)
    broad_papers = sorted(n for n, b in zip(papers, broad, strict=True) if b)
    print(
        f"{len(broad):,} digests: {len(typical_papers):,} typical (median {statistics.median(typical_papers):.0f} "
        f"papers, 90th percentile {typical_papers[len(typical_papers) * 9 // 10]}), {len(broad_papers):,} oversize "
        f"({min(broad_papers, default=0)}-{max(broad_papers, default=0)} papers)"
    )
    header = f"{'':<10} {'digests':<9} {'part':<14} {'mean ms':>8} {'median':>8} {'p99':>8}"
    print(header)
    print("-" * len(header))
    rows: dict[str, dict[str, float]] = {}
    for name, result in results.items():
        total = [e + s for e, s in zip(result["email_ms"], result["slack_ms"], strict=True)]
        for label, picked in (("all", everyone), ("typical", typical), ("oversize", broad)):
            for part, times in (("email + MIME", result["email_ms"]), ("Slack + JSON", result["slack_ms"]),
                                ("both", total)):  # fmt: skip
                mean, median, p99 = summary(times, picked)
                rows.setdefault(f"{label}/{part}", {})[name] = mean
                print(f"{name:<10} {label:<9} {part:<14} {mean:8.3f} {median:8.3f} {p99:8.2f}")
    if len(results) == 2:
        print("\nspeed-up (baseline mean / this tree's mean):")
        for key, means in rows.items():
            if means.get("this tree"):
                print(f"  {key:<24} {means['baseline'] / means['this tree']:6.1f}x")
        ours, theirs = results["this tree"], results["baseline"]
        same_text = sum(a == b for a, b in zip(ours["texts"], theirs["texts"], strict=True))
        same_slack = sum(a == b for a, b in zip(ours["slacks"], theirs["slacks"], strict=True))
        print(
            f"\nidentical to the baseline: text part {same_text:,}/{len(broad):,} digests, "
            f"Slack payload {same_slack:,}/{len(broad):,}"
        )
        return same_text == same_slack == len(broad)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--oversize", type=float, default=0.03, help="share of subscribers with broad rules")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with (e.g. /tmp/base)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--quick", action="store_true", help="200 subscribers")
    args = parser.parse_args(argv)
    subscribers = 200 if args.quick else args.subscribers
    started = time.perf_counter()
    job = make_job(subscribers, args.oversize, args.seed)
    print(f"made {subscribers:,} digests of {len(job['papers']):,} papers in {time.perf_counter() - started:.1f} s")
    roots = {"this tree": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as folder:
        job_file = Path(folder, "job.json")
        job_file.write_text(json.dumps(job))
        results = {name: run_child(root, job_file) for name, root in roots.items()}
    return 0 if report(job, results) else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        Path(sys.argv[4]).write_text(json.dumps(measure(json.loads(Path(sys.argv[3]).read_text()))))
        sys.exit(0)
    sys.exit(main())
