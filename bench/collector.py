"""Benchmark: the cyclic garbage collector's time in a render worker, with the heap left to it and with each chunk
inside ``notifier.heap.frozen``.

A render worker keeps what it builds (compiled templates, the papers it was sent, the cards it rendered) and renders
chunk after chunk of 16 digests. Left to the collector (before), each full collection walks all of that again;
inside :func:`notifier.heap.frozen` (now, ``notifier/render/pool.py``), what is alive when a chunk starts is left out
of the chunk's collections. Both ways render the same digests (``bench/render.py``'s, as emails with envelopes) with
a renderer of their own, in this one process, taking turns; printed: the CPU time, and the collector's time and
collections (``gc.callbacks``), for each; the payloads must be the same.

    python bench/collector.py [--subscribers 1500] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import render as render_bench  # noqa: E402
from _once_driver import CollectorClock  # noqa: E402  (after render: it takes the bench folder off sys.path)
from _turns import turn_order  # noqa: E402

from notifier.heap import frozen  # noqa: E402
from notifier.outbox.planner import POOL_CHUNK  # noqa: E402
from notifier.render.pool import Outcome, render_all  # noqa: E402
from notifier.render.renderer import Renderer, RenderJob  # noqa: E402

Around = Callable[[], AbstractContextManager[object]]


def as_a_worker(jobs: list[RenderJob], around: Around) -> tuple[list[Outcome], CollectorClock, float]:
    """Render ``jobs`` in chunks with a renderer of their own, each chunk inside ``around()``."""
    gc.collect()  # what the other way left behind is not this one's to walk
    renderer = Renderer()
    render_all(renderer, jobs[:1])  # the templates load, as in a worker's first chunk
    collector = CollectorClock()
    outcomes: list[Outcome] = []
    began = time.process_time()
    gc.callbacks.append(collector)
    try:
        for start in range(0, len(jobs), POOL_CHUNK):
            with around():
                outcomes += render_all(renderer, jobs[start : start + POOL_CHUNK])
    finally:
        gc.callbacks.remove(collector)
    return outcomes, collector, time.process_time() - began


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="150 subscribers, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.rounds = 150, 1
    jobs = render_bench.render_jobs(args.subscribers, 0.0, args.seed)
    print(f"{len(jobs):,} digests rendered as emails in chunks of {POOL_CHUNK}")
    ways: dict[str, Around] = {
        "heap left to the collector (before)": contextlib.nullcontext,
        "each chunk inside frozen (now)": frozen,
    }
    payloads: dict[str, list[Outcome]] = {}
    for round_ in range(args.rounds):
        for label, around in turn_order(list(ways.items()), round_):
            payloads[label], collector, cpu = as_a_worker(jobs, around)
            print(
                f"  round {round_ + 1}, {label:36s} CPU {cpu:6.2f} s, collector {collector.seconds:5.2f} s "
                f"in {sum(collector.collections):,} collections"
            )
    first, *others = payloads.values()
    if any(other != first for other in others):
        print("the payloads differ")
        return 1
    print("the same payloads both ways")
    return 0


if __name__ == "__main__":
    sys.exit(main())
