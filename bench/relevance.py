"""Benchmark: how well ranking by likes finds a researcher's own papers, and what it costs at 10,000 subscribers.

**Quality.** Every paper of the fixture feeds (``../shared/fixtures/arxiv``, as ``tests/arxiv_server.py``'s catalogue
lists them, each id once) is the corpus the TF-IDF weights are fitted on. A synthetic researcher is a real author
with at least ``--min-papers`` papers in it (name collisions included, as a subscriber's ``au:`` like would have
them). A third of their papers (at least one) are held out; they like the rest. The day to rank is the captured day
2025-06-04 with the held-out papers mixed in and the liked ones taken out. For each researcher, recall@10 (the share
of held-out papers in the first 10) and nDCG@10 (binary relevance), averaged over researchers, for:

- random order (seeded);
- keyword rules written from the liked titles: the OR of the 1, 2, 3, 5 or 8 most distinctive title words or word
  pairs (count in the liked titles times their inverse document frequency among all titles, stop words left out),
  papers ranked by how many of its terms their title and abstract hold (ties in random order); the trained model
  must beat the best of these sizes, picked after the fact (a baseline as strong as a rule from the titles gets);
- TF-IDF cosine (the profile of fewer than ``MIN_TRAINED`` liked papers, used here whatever their number);
- arxiv-sanity-lite's own model, for comparison: a LinearSVC trained on the liked papers against every other paper
  of the corpus;
- the trained linear model (used here whatever the number of liked papers);
- as shipped: whichever of the two ``MIN_TRAINED`` picks.

**Speed.** One day of ``--papers`` papers (the fixture papers, repeated with fresh ids), the corpus fitted on it and
on the fixture papers, ``--subscribers`` subscribers liking ``--liked`` papers each, drawn from the corpus: the day is
transformed once, then each subscriber's profile is made (trained, with 50 liked papers) and scores the whole day,
and the 10 best papers get their :class:`~notifier.models.Similarity`, as a ``similar: {top: 10}`` rule needs. Wall
seconds and peak RSS (``ru_maxrss``) of this process, and the cost of papers outside the corpus (each transformed
once, then cached) and of a full ``rank()`` (a Similarity for every paper) for comparison. Then the same in an
embedding space of 1,536 numbers a vector (random vectors: speed, not quality) for a fiftieth of the subscribers.

    python bench/relevance.py [--subscribers 10000] [--liked 50] [--papers 3000] [--min-papers 5] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from notifier.arxiv.rss import parse_feed  # noqa: E402
from notifier.matching.text import tokenize  # noqa: E402
from notifier.models import Paper  # noqa: E402
from notifier.relevance import MIN_TRAINED, Corpus  # noqa: E402
from notifier.relevance.embedded import EmbeddedSpace  # noqa: E402
from tests.arxiv_server import fixture_catalogue  # noqa: E402

DAY = "2025-06-04"
TOP = 10
KEYWORDS = (1, 2, 3, 5, 8)  # the sizes of keyword rule tried
TRAINED = "trained model (least squares)"
Ranker = Callable[[Sequence[Paper], Sequence[Paper]], list[float]]  # (liked, day) -> a score per paper of the day


def load_days() -> dict[str, list[Paper]]:
    """The papers of each captured day, each id once per day, in feed order."""
    catalogue = fixture_catalogue()
    days: dict[str, list[Paper]] = {}
    for day in sorted(catalogue.days):
        papers: dict[str, Paper] = {}
        for key, name in catalogue.days[day].items():
            for paper in parse_feed((catalogue.folder / name).read_bytes(), key).papers:
                papers.setdefault(paper.arxiv_id, paper)
        days[day] = list(papers.values())
    return days


def title_terms(title: str) -> set[str]:
    words = [w for w in tokenize(title) if w.isalpha() and len(w) > 2 and w not in ENGLISH_STOP_WORDS]
    return set(words) | {f"{a} {b}" for a, b in itertools.pairwise(words)}


def text_terms(paper: Paper) -> set[str]:
    words = tokenize(f"{paper.title} {paper.abstract}")
    return set(words) | {f"{a} {b}" for a, b in itertools.pairwise(words)}


def keyword_ranker(corpus: Sequence[Paper], size: int, rng: random.Random) -> Ranker:
    frequency: Counter[str] = Counter()
    for paper in corpus:
        frequency.update(title_terms(paper.title))

    def rank(liked: Sequence[Paper], day: Sequence[Paper]) -> list[float]:
        counts: Counter[str] = Counter()
        for paper in liked:
            counts.update(title_terms(paper.title))
        weight = {t: n * math.log(len(corpus) / (1 + frequency[t])) for t, n in counts.items()}
        rule = set(sorted(weight, key=lambda t: (-weight[t], t))[:size])
        return [len(text_terms(p) & rule) + rng.random() * 0.5 for p in day]

    return rank


def sanity_ranker(corpus: Corpus, papers: Sequence[Paper]) -> Ranker:
    """arxiv-sanity-lite's model: a LinearSVC (C=0.1, balanced, tol 1e-6) trained on the liked papers against every
    other paper of the corpus."""
    rows = corpus.matrix(papers).rows

    def rank(liked: Sequence[Paper], day: Sequence[Paper]) -> list[float]:
        liked_ids = {paper.arxiv_id for paper in liked}
        labels = [paper.arxiv_id in liked_ids for paper in papers]
        model = LinearSVC(C=0.1, class_weight="balanced", tol=1e-6, max_iter=10_000).fit(rows, labels)
        return [float(score) for score in model.decision_function(corpus.matrix(day).rows)]

    return rank


def model_ranker(corpus: Corpus, *, trained: bool | None) -> Ranker:
    def rank(liked: Sequence[Paper], day: Sequence[Paper]) -> list[float]:
        return [s.score for s in corpus.profile(liked, trained=trained).rank(day)]

    return rank


def measures(scores: Sequence[float], relevant: Sequence[bool]) -> tuple[float, float]:
    order = sorted(range(len(scores)), key=lambda n: -scores[n])[:TOP]
    found = sum(relevant[n] for n in order)
    dcg = sum(1 / math.log2(rank + 2) for rank, n in enumerate(order) if relevant[n])
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(TOP, sum(relevant))))
    return found / sum(relevant), dcg / ideal


def quality(min_papers: int, limit: int | None) -> bool:
    days = load_days()
    everything = list({p.arxiv_id: p for papers in days.values() for p in papers}.values())
    started = time.perf_counter()
    corpus = Corpus.fit(everything)
    print(
        f"corpus: {len(everything):,} papers, {corpus.features:,} terms, "
        f"fitted in {time.perf_counter() - started:.1f} s"
    )
    by_author: dict[str, list[Paper]] = {}
    for paper in everything:
        for name in paper.authors:
            by_author.setdefault(name, []).append(paper)
    authors = sorted((a for a, ps in by_author.items() if len(ps) >= min_papers), key=lambda a: (-len(by_author[a]), a))
    authors = authors[:limit] if limit else authors
    rng = random.Random(17)
    rankers: dict[str, Ranker] = {
        "random order": lambda liked, day: [rng.random() for _ in day],
        **{f"keyword rule ({size} title terms, OR)": keyword_ranker(everything, size, rng) for size in KEYWORDS},
        "TF-IDF cosine": model_ranker(corpus, trained=False),
        "arxiv-sanity-lite's LinearSVC": sanity_ranker(corpus, everything),
        TRAINED: model_ranker(corpus, trained=True),
        f"as shipped (model from {MIN_TRAINED} likes)": model_ranker(corpus, trained=None),
    }
    totals = {name: [0.0, 0.0] for name in rankers}
    liked_counts = []
    for author in authors:
        papers = sorted(by_author[author], key=lambda p: p.arxiv_id)
        held = rng.sample(papers, max(1, len(papers) // 3))
        held_ids = {p.arxiv_id for p in held}
        liked = [p for p in papers if p.arxiv_id not in held_ids]
        liked_ids = {p.arxiv_id for p in liked}
        day = [p for p in days[DAY] if p.arxiv_id not in liked_ids and p.arxiv_id not in held_ids] + held
        rng.shuffle(day)
        relevant = [p.arxiv_id in held_ids for p in day]
        liked_counts.append(len(liked))
        for name, ranker in rankers.items():
            recall, ndcg = measures(ranker(liked, day), relevant)
            totals[name][0] += recall
            totals[name][1] += ndcg
    print(
        f"{len(authors)} researchers (authors with >= {min_papers} papers), liking {min(liked_counts)}-"
        f"{max(liked_counts)} papers (mean {sum(liked_counts) / len(liked_counts):.1f}), a day of about "
        f"{len(days[DAY]):,} papers"
    )
    print(f"{'':44} recall@{TOP}  nDCG@{TOP}")
    for name, (recall, ndcg) in totals.items():
        print(f"{name:44} {recall / len(authors):9.3f} {ndcg / len(authors):7.3f}")
    keyword = max((totals[f"keyword rule ({size} title terms, OR)"] for size in KEYWORDS), key=lambda pair: pair[0])
    model = totals[TRAINED]
    beats = model[0] > keyword[0] and model[1] > keyword[1]
    print(f"the trained model beats the best keyword rule: {'yes' if beats else 'NO'} (recall@{TOP} and nDCG@{TOP})")
    return beats


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed(subscribers: int, liked_each: int, size: int) -> None:
    base = list({p.arxiv_id: p for papers in load_days().values() for p in papers}.values())
    day = [
        Paper(f"27{n // 100000:02d}.{n % 100000:05d}", 1, p.title, p.abstract, p.authors, p.categories)
        for n, p in ((n, base[n % len(base)]) for n in range(size))
    ]
    rng = random.Random(7)
    likes = [rng.sample(base, liked_each) for _ in range(subscribers)]
    print(f"before: peak RSS {peak_mb():,.0f} MB ({subscribers:,} subscribers' liked lists made)")
    started = time.perf_counter()
    corpus = Corpus.fit([*base, *day])
    fitted = time.perf_counter()
    matrix = corpus.matrix(day)
    transformed = time.perf_counter()
    shown = 0
    for liked in likes:
        scores = corpus.profile(liked).scores(matrix)
        shown += len(scores.similarities(scores.best(TOP)))
    done = time.perf_counter()
    ranked = done - transformed
    print(
        f"{subscribers:,} subscribers x {liked_each} liked papers, a day of {size:,} papers "
        f"(corpus {len(base) + size:,} papers, {corpus.features:,} terms):"
    )
    print(f"  fit {fitted - started:.1f} s, day transformed once {transformed - fitted:.2f} s")
    print(
        f"  profiles trained and the day scored: {ranked:.1f} s ({ranked / subscribers * 1000:.2f} ms a subscriber), "
        f"{shown:,} similarities made"
    )
    print(f"  total {done - started:.1f} s wall, peak RSS {peak_mb():,.0f} MB")
    outside = [Paper(f"28{n:03d}.{n:05d}", 1, p.title, p.abstract, p.authors) for n, p in enumerate(base[:1000])]
    started = time.perf_counter()
    corpus.matrix(outside)
    first = time.perf_counter() - started
    started = time.perf_counter()
    corpus.matrix(outside)
    again = time.perf_counter() - started
    print(
        f"  liked papers outside the corpus: {1000 / first:,.0f} a second transformed, "
        f"then {1000 / again:,.0f} a second cached"
    )
    few = likes[:20]
    started = time.perf_counter()
    for liked in few:
        corpus.profile(liked).rank(matrix)
    each = (time.perf_counter() - started) / len(few)
    print(f"  rank() with a Similarity for each of the {size:,} papers: {each * 1000:.1f} ms a subscriber")
    embedded_speed(max(20, subscribers // 50), liked_each, size, base)


def embedded_speed(subscribers: int, liked_each: int, size: int, base: Sequence[Paper], dims: int = 1536) -> None:
    """The same day ranked in an embedding space of ``dims`` numbers a vector (random, seeded: speed, not quality),
    the window of recent papers being the fixture papers and the day."""
    day = [Paper(f"27{n // 100000:02d}.{n % 100000:05d}", 1, "", "", ()) for n in range(size)]
    generator = np.random.default_rng(11)
    recent = [*base, *day]
    vectors = {paper.key: generator.standard_normal(dims).astype(np.float32) for paper in recent}
    started = time.perf_counter()
    space = EmbeddedSpace(vectors, [paper.key for paper in recent])
    matrix = space.matrix(day)
    space.profile(base[:liked_each]).scores(matrix)  # the first profile factors the negatives, once for all
    made = time.perf_counter()
    rng = random.Random(13)
    for _ in range(subscribers):
        scores = space.profile(rng.sample(list(base), liked_each)).scores(matrix)
        scores.similarities(scores.best(TOP))
    each = (time.perf_counter() - made) / subscribers
    print(
        f"embeddings of {dims:,} numbers ({len(recent):,} papers' vectors): space made in {made - started:.1f} s, "
        f"{subscribers:,} subscribers' profiles trained and the day scored at {each * 1000:.1f} ms a subscriber"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--liked", type=int, default=50)
    parser.add_argument("--papers", type=int, default=3_000)
    parser.add_argument("--min-papers", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 30 researchers")
    args = parser.parse_args()
    threadpool_limits(1)  # one BLAS thread: many small products, where more threads only wait for each other
    subscribers = 200 if args.quick else args.subscribers
    beats = quality(args.min_papers, 30 if args.quick else None)
    speed(subscribers, args.liked, args.papers)
    sys.exit(0 if beats else 1)


if __name__ == "__main__":
    main()
