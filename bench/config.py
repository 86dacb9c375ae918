"""Benchmark: loading a large subscribers.yaml (parse, validate, compile every rule), as `notifier check` does.

Writes a file of N subscribers (two categories, five rules each, drawn by the matching benchmark's rule maker from
the fixture papers) and loads it twice in one run: as shipped (libyaml's parser, the cycle collector paused), and
with the pure-Python YAML parser and the collector running, which is what loading cost before.

    python bench/config.py [--sizes 1000,10000] [--keep]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.matching import RuleMaker, load_papers  # noqa: E402
from notifier.config import subscribers as config  # noqa: E402

CATEGORIES = ["cs.DC", "cs.LG", "cs.AI", "cs.SD", "eess.AS", "cs.CL"]


def write_file(path: Path, subscribers: int, maker: RuleMaker, rng: random.Random) -> None:
    lines = ["subscribers:"]
    for s in range(subscribers):
        lines += [
            f"  - name: sub{s}",
            f"    email: sub{s}@example.org",
            f"    categories: [{', '.join(rng.sample(CATEGORIES, 2))}]",
            "    rules:",
        ]
        for r in range(5):
            query = maker.rule().replace("'", "''")
            lines += [f"      - name: rule {r}", f"        query: '{query}'"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def measure(load: Callable[[], object]) -> tuple[float, float]:
    """Seconds of one load, then the peak of the Python allocations of another (tracing slows it down)."""
    gc.collect()
    started = time.perf_counter()
    load()
    seconds = time.perf_counter() - started
    gc.collect()
    tracemalloc.start()
    load()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20


def shipped(path: Path) -> Callable[[], object]:
    return lambda: config.load_config(path, {})


def before(path: Path) -> Callable[[], object]:
    def load() -> object:
        original = config._YAML_LOADER
        config._YAML_LOADER = yaml.SafeLoader
        try:
            return config._parse_config(path.read_text(encoding="utf-8"), path, {})
        finally:
            config._YAML_LOADER = original

    return load


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="subscriber counts, comma-separated")
    parser.add_argument("--quick", action="store_true", help="200 subscribers")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",")]
    rng = random.Random(args.seed)
    maker = RuleMaker(load_papers(rng), rng)
    print(f"libyaml available: {getattr(yaml, '__with_libyaml__', False)}")
    rows = [["subscribers", "lines", "before s", "before peak MB", "now s", "now peak MB", "speedup"]]
    with tempfile.TemporaryDirectory() as folder:
        for subscribers in sizes:
            path = Path(folder) / f"subscribers-{subscribers}.yaml"
            write_file(path, subscribers, maker, rng)
            old_s, old_mb = measure(before(path))
            new_s, new_mb = measure(shipped(path))
            lines = path.read_text(encoding="utf-8").count("\n")
            rows.append([f"{subscribers:,}", f"{lines:,}", f"{old_s:.2f}", f"{old_mb:,.0f}", f"{new_s:.2f}",
                         f"{new_mb:,.0f}", f"{old_s / new_s:.1f}x"])  # fmt: skip
            print("  done:", " | ".join(rows[-1]), flush=True)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print("\nbefore = pure-Python YAML parser, cycle collector running; now = load_config as shipped;")
    print("peak MB = Python allocations traced during the load (tracemalloc; the process's RSS is higher).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
