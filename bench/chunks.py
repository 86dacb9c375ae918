"""Benchmark: what a plan's chunks of digests cost to cross to the render worker processes.

A plan hands its digests to the render workers 16 at a time (``POOL_CHUNK``), and each chunk is pickled here and
unpickled in a worker. Pickled whole (before), a chunk carries every paper its digests list, and most papers are
listed by many digests of a plan, in many chunks. Now each worker is sent each paper once: a chunk carries the
papers its worker has not had yet and names the others by number (``RenderPool._packed``). Both ways are timed here
on the same chunks, taking turns, in this one process: the CPU time to pickle each chunk, and to unpickle it as its
worker does (two workers, chunks dealt to them in turn), and the bytes that cross.

The digests are ``bench/render.py``'s (real papers of 3 Jun 2025, five rules per subscriber), as emails with their
envelopes; every unpickled chunk must equal the chunk it came from.

    python bench/chunks.py [--subscribers 2000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import render as render_bench  # noqa: E402
from _turns import turn_order  # noqa: E402

from notifier.models import Paper  # noqa: E402
from notifier.outbox.planner import POOL_CHUNK  # noqa: E402
from notifier.render import pool  # noqa: E402
from notifier.render.renderer import Renderer, RenderJob  # noqa: E402

WORKERS = 2
Chunks = list[list[RenderJob]]
Way = Callable[[Chunks], tuple[float, float, int]]


def chunks_of(subscribers: int, seed: int) -> Chunks:
    jobs = render_bench.render_jobs(subscribers, 0.03, seed)
    return [jobs[start : start + POOL_CHUNK] for start in range(0, len(jobs), POOL_CHUNK)]


def whole(chunks: Chunks) -> tuple[float, float, int]:
    """Each chunk pickled whole, as a process pool pickles its arguments."""
    began = time.process_time()
    packed = [pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL) for chunk in chunks]
    pickled = time.process_time() - began
    began = time.process_time()
    unpacked = [pickle.loads(blob) for blob in packed]
    unpickled = time.process_time() - began
    assert unpacked == chunks, "every chunk crosses whole"
    return pickled, unpickled, sum(map(len, packed))


def papers_once(chunks: Chunks) -> tuple[float, float, int]:
    """Each chunk packed for its worker by a render pool's own code, and unpacked as the worker does."""
    packer = pool.RenderPool(Renderer(), None, WORKERS)  # its packing only: no worker is started
    workers = [pool._Worker(executor=None) for _ in range(WORKERS)]  # type: ignore[arg-type]
    began = time.process_time()
    packed = []
    for number, chunk in enumerate(chunks):
        worker = workers[number % WORKERS]
        papers, jobs, sent = packer._packed(chunk, worker)
        worker.sent.update(sent)
        packed.append((number % WORKERS, papers, jobs))
    pickled = time.process_time() - began
    tables: list[dict[int, Paper]] = [{} for _ in workers]
    began = time.process_time()
    unpacked = []
    for worker_number, papers, jobs in packed:
        pool._PAPERS = tables[worker_number]  # the worker's own table
        pool._PAPERS.update(pickle.loads(papers))
        unpacked.append(pickle.loads(jobs))
    unpickled = time.process_time() - began
    assert unpacked == chunks, "every chunk crosses whole"
    return pickled, unpickled, sum(len(papers) + len(jobs) for _, papers, jobs in packed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers, args.rounds = 200, 1
    chunks = chunks_of(args.subscribers, args.seed)
    papers = len({match.paper for chunk in chunks for job in chunk for match in job.digest.first_matches})
    print(f"{args.subscribers:,} digests in {len(chunks)} chunks of {POOL_CHUNK}, listing {papers:,} distinct papers")
    ways: dict[str, Way] = {"pickled whole (before)": whole, "each paper once per worker (now)": papers_once}
    gc.disable()  # the collector's passes would land in whichever way happens to trigger them
    try:
        for round_ in range(args.rounds):
            for label, way in turn_order(list(ways.items()), round_):
                pickled, unpickled, size = way(chunks)
                count = len(chunks)
                print(
                    f"  round {round_ + 1}, {label:34s} pickle {1000 * pickled / count:6.2f} ms, unpickle "
                    f"{1000 * unpickled / count:6.2f} ms, {size / count / 1024:7.1f} KiB per chunk"
                )
    finally:
        gc.enable()
    print("each chunk crossed whole both ways")
    return 0


if __name__ == "__main__":
    sys.exit(main())
