"""Storing a plan's digests: what recording one costs as the database grows, this tree beside a baseline.

    python bench/store.py [--digests 100000] [--window 10000] [--rounds 1] [--baseline /path/to/old/tree] [--quick]

Each tree runs in a fresh process (with that tree first on ``sys.path``) over a fresh SQLite store in the embedded
default's settings, and records ``--digests`` digests through ``Store.record_digests``, 200 to a transaction as
the planner writes them. Each digest has an email delivery (one of 50 real digest emails of 20 papers built by
``bench/delivery.py``, 30-60 KB) and one in ten a Slack delivery too; each delivery carries 5-40 papers of a pool
of 2,400 ids, and the ids of digests and deliveries are hashes, as the planner makes them. Subscribers are
registered first, with names in no particular order.

Printed, for each window of ``--window`` digests: the wall and CPU time per digest recorded, for each tree side by
side; then the seconds of all the windows, and the database's size. Each run counts what it wrote (digests,
deliveries, papers) against what it asked for, and fails if they differ. With ``--rounds``, the trees take turns
going first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _turns import turn_order

ROOT = Path(__file__).resolve().parents[1]
BATCH = 200  # digests to a transaction, as the planner's WRITE_BATCH
PAPER_POOL = 2400


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def record(folder: Path, digests: int, window: int, seed: int) -> dict[str, Any]:
    """In this process (its tree imported): record ``digests`` digests and time each window of them."""
    sys.path.insert(1, str(Path(__file__).resolve().parent))
    import delivery  # bench/delivery.py: its digest emails, built by the tree this process imports

    try:
        from notifier.store.rows import NewDelivery, NewDigest
    except ImportError:  # an older tree
        from notifier.store.sql import NewDelivery, NewDigest  # type: ignore[no-redef]

    rng = random.Random(seed)
    pool = [f"2506.{number:05d}" for number in rng.sample(range(10000, 40000), PAPER_POOL)]  # distinct ids
    payloads = [message.payload for message in delivery.build_messages(50, 20)]
    names = [f"{rng.choice(('ada', 'grace', 'alan', 'edsger'))}-{_hash(str(i))[:10]}" for i in range(digests)]
    now = datetime.now(UTC)
    store = delivery.open_sqlite(folder / "notifier.db")
    windows: list[dict[str, float]] = []
    asked = {"digests": 0, "deliveries": 0, "papers": 0}
    try:
        store.register_subscribers(names, now)
        batch = []
        wall, cpu = time.perf_counter(), time.process_time()
        for number, name in enumerate(names, 1):
            digest_id = _hash(name, now.isoformat())[:20]
            papers = tuple((arxiv_id, 1) for arxiv_id in rng.sample(pool, rng.randrange(5, 41)))
            email, payload = f"{name}@bench.example.org", payloads[number % len(payloads)]
            message_id = f"<{digest_id}@bench.example.org>"
            deliveries = [NewDelivery(_hash(digest_id, "email", email), "email", email, message_id, payload, papers)]
            if number % 10 == 0:
                slack_id = _hash(digest_id, "slack", "#papers")
                deliveries.append(NewDelivery(slack_id, "slack", "#papers", message_id, payload[:4000], papers))
            asked["digests"] += 1
            asked["deliveries"] += len(deliveries)
            asked["papers"] += len(papers) * len(deliveries)
            batch.append(NewDigest(digest_id, name, "daily", now, now, now, tuple(deliveries), now))
            if len(batch) == BATCH or number == digests:
                store.record_digests(batch)
                batch = []
            if number % window == 0 or number == digests:
                size = number - (windows[-1]["end"] if windows else 0)
                windows.append(
                    {
                        "end": number,
                        "wall_ms": (time.perf_counter() - wall) * 1000 / size,
                        "cpu_ms": (time.process_time() - cpu) * 1000 / size,
                    }
                )
                wall, cpu = time.perf_counter(), time.process_time()
        with store.transaction() as db:
            wrote = {
                "digests": db.execute("SELECT count(*) FROM digests").fetchone()[0],
                "deliveries": db.execute("SELECT count(*) FROM deliveries").fetchone()[0],
                "papers": db.execute("SELECT count(*) FROM delivery_papers").fetchone()[0],
            }
    finally:
        store.close()
    megabytes = sum(path.stat().st_size for path in folder.iterdir()) / 1e6
    return {"windows": windows, "asked": asked, "wrote": wrote, "megabytes": megabytes}


def total(result: dict[str, Any], figure: str) -> float:
    """Seconds over all the windows of ``result``: each window's time per digest times its digests."""
    seconds, start = 0.0, 0
    for window in result["windows"]:
        seconds += window[figure] * (window["end"] - start) / 1000
        start = window["end"]
    return seconds


def run_child(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        command = [sys.executable, __file__, "--child", folder, "--digests", str(args.digests)]
        command += ["--window", str(args.window), "--seed", str(args.seed)]
        environment = {**os.environ, "BENCH_NOTIFIER_TREE": str(tree)}
        done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{tree}: the run failed:\n{done.stdout}\n{done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digests", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tree, taking turns to go first")
    parser.add_argument("--baseline", type=lambda text: Path(text).resolve(), help="a checkout to compare with")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 digests in windows of 500")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.digests, args.window = 2000, 500
    if args.child is not None:
        sys.path.insert(0, os.environ.get("BENCH_NOTIFIER_TREE") or str(ROOT))
        print(json.dumps(record(args.child, args.digests, args.window, args.seed)))
        return 0
    trees = [("new", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.digests:,} digests, {BATCH} to a transaction; " + "; ".join(f"{n}: {t}" for n, t in trees))
    failed = False
    for round_ in range(args.rounds):
        order = turn_order(trees, round_)
        results = {name: run_child(tree, args) for name, tree in order}
        print(f"\nround {round_ + 1} of {args.rounds}, {order[0][0]} first")
        header = f"{'digests':>9}" + "".join(f"  {name + ' wall/CPU ms per digest':>34}" for name, _ in trees)
        print(header)
        for rows in zip(*(results[name]["windows"] for name, _ in trees), strict=True):
            cells = "".join(f"  {row['wall_ms']:>16.3f} / {row['cpu_ms']:<15.3f}" for row in rows)
            print(f"{rows[0]['end']:>9,}{cells}")
        totals = ""
        for name, _ in trees:
            figures = f"{total(results[name], 'wall_ms'):.1f} s / {total(results[name], 'cpu_ms'):.1f} s"
            totals += f"  {figures:^34}"
        print(f"{'all':>9}{totals}")
        for name, _ in trees:
            result = results[name]
            same = result["asked"] == result["wrote"]
            failed |= not same
            print(
                f"{name}: database {result['megabytes']:,.0f} MB; wrote {result['wrote']} "
                + ("as asked" if same else f"but was asked {result['asked']}")
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
