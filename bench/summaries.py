"""What LLM summaries cost: tokens per paper, and dollars per paper, per day and per month.

Every paper of the fixture feeds (``../shared/fixtures/arxiv``, as ``tests/arxiv_server.py``'s catalogue lists
them: two days of two real combined feeds and a legacy day; each version once) is summarised the way the daemon does
it: the real prompt (``notifier/summaries/prompt.py``), the real ``LlmClient`` over the ``openai`` package and the
real ``Summariser``, against the OpenAI-compatible stand-in (``tests/llm_server.py``) in ``valid`` mode. Tokens are
the stand-in's accounting of each request, as a server reports them in ``usage``: 4 characters a token, plus 4 per
message and 3 to prime the answer.

The stand-in's answers are shorter than a real model's (one sentence of the abstract), so the completion cost is
also given at ``max_tokens``, the most a real answer can cost.

    python bench/summaries.py [--limit N | --quick] [--concurrency 4] [--daily-limit 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from notifier.arxiv.rss import parse_feed  # noqa: E402
from notifier.models import Paper, Summary  # noqa: E402
from notifier.summaries.client import MAX_TOKENS, LlmClient, Usage  # noqa: E402
from notifier.summaries.prompt import SYSTEM  # noqa: E402
from notifier.summaries.summariser import Summariser  # noqa: E402
from tests.arxiv_server import fixture_catalogue  # noqa: E402
from tests.llm_server import LlmStandIn, count_tokens  # noqa: E402

# gpt-4o-mini list prices, US dollars per million tokens.
INPUT_PRICE = 0.15
OUTPUT_PRICE = 0.60
DAYS_A_MONTH = 30


def load_papers() -> list[Paper]:
    """Every paper of the fixture feeds, each (id, version) once, in feed order."""
    catalogue = fixture_catalogue()
    papers: dict[tuple[str, int], Paper] = {}
    for day in sorted(catalogue.days):
        for key, name in catalogue.days[day].items():
            for paper in parse_feed((catalogue.folder / name).read_bytes(), key).papers:
                papers.setdefault((paper.arxiv_id, paper.version), paper)
    return list(papers.values())


def percentile(values: Sequence[int], fraction: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))])


def describe(name: str, values: Sequence[int]) -> str:
    return (
        f"{name:<26} mean {statistics.fmean(values):7.1f}  median {statistics.median(values):7.1f}  "
        f"p95 {percentile(values, 0.95):7.1f}  max {max(values):6d}"
    )


def dollars(prompt: float, completion: float) -> float:
    return (prompt * INPUT_PRICE + completion * OUTPUT_PRICE) / 1_000_000


async def measure(papers: list[Paper], concurrency: int) -> tuple[list[Usage], int, float]:
    """Each made summary's usage, the number of failures, and the seconds the run took."""
    usages: list[Usage] = []

    def made(summary: Summary, usage: Usage) -> None:
        usages.append(usage)

    async with LlmStandIn() as llm, LlmClient(url=llm.url, model="stand-in") as client:
        started = time.perf_counter()
        run = await Summariser(client, concurrency=concurrency).run(
            papers, {}, allowance=len(papers), deadline=None, on_summary=made
        )
        return usages, len(run.failed) + run.unreached, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="summarise only the first N papers")
    parser.add_argument("--quick", action="store_true", help="the first 100 papers (--limit 100)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests at once (NOTIFIER_LLM_CONCURRENCY)")
    parser.add_argument(
        "--daily-limit",
        type=int,
        default=int(os.environ.get("NOTIFIER_LLM_DAILY_LIMIT", "500")),
        help="papers summarised a day (NOTIFIER_LLM_DAILY_LIMIT, 500 by default)",
    )
    args = parser.parse_args(argv)
    papers = load_papers()
    total = len(papers)
    if args.quick and args.limit is None:
        args.limit = 100
    if args.limit is not None:
        papers = papers[: args.limit]
    print(f"papers: {len(papers):,} of the {total:,} distinct paper versions in the fixture feeds")
    usages, failed, seconds = asyncio.run(measure(papers, args.concurrency))
    if not usages:
        print("no summary was made")
        return 1
    prompt = [u.prompt_tokens for u in usages]
    completion = [u.completion_tokens for u in usages]
    system = count_tokens(SYSTEM) + 4
    print(f"summaries made: {len(usages):,}, failed: {failed}, in {seconds:.1f} s at concurrency {args.concurrency}")
    print("tokens per paper (the stand-in's accounting: 4 characters a token, +4 a message, +3 priming):")
    print("  " + describe("prompt", prompt))
    print(f"  {'  of which system message':<26} {system:7d}  (the same for every paper)")
    print("  " + describe("completion (stand-in)", completion))
    print(f"  {'completion (at most)':<26} {MAX_TOKENS:7d}  (max_tokens of a request)")
    mean_prompt, mean_completion = statistics.fmean(prompt), statistics.fmean(completion)
    print(f"\nprices used: gpt-4o-mini list prices, ${INPUT_PRICE:.2f} per million input tokens, "
          f"${OUTPUT_PRICE:.2f} per million output tokens")  # fmt: skip
    rows = [["", "per paper", f"per day of {args.daily_limit:,}", f"per {DAYS_A_MONTH}-day month"]]
    for label, completion_tokens in (("stand-in answers", mean_completion), ("answers at max_tokens", MAX_TOKENS)):
        each = dollars(mean_prompt, completion_tokens)
        day = each * args.daily_limit
        rows.append([label, f"${each:.6f}", f"${day:.4f}", f"${day * DAYS_A_MONTH:.2f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print("\nA day that summarises fewer papers than the daily limit costs proportionally less; failed requests")
    print("with an answer (invalid JSON) are paid for too, and are retried at most twice.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
