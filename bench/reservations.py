"""Benchmark: what a plan reads to know which papers each recipient has had, once recipients have a history.

A plan asks the store, for each recipient, which papers it has had (``Store.reserved_versions``), so that nobody
gets a paper twice. It used to read the recipient's whole history, which grows by a digest a day for as long as it
is subscribed; it now asks about the papers the subscriber's rules matched in this plan only. Both questions are
asked here of the same SQLite store, in the embedded default's settings, taking turns.

The store holds ``--days`` daily digests for each of ``--recipients`` subscribers (one email address each), each
digest of 10-25 papers drawn from that day's 2,400 new ids, and a day of 2,400 new papers is being planned: each
subscriber matched 10-25 of them, and 0-3 papers it had before (as updated versions would be). Printed: the mean
time per recipient and the rows read for each question, in rounds; the answers for the matched papers must agree.

    python bench/reservations.py [--recipients 1000] [--days 30] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _turns import turn_order  # noqa: E402

from notifier.store.rows import NewDelivery, NewDigest  # noqa: E402
from notifier.store.sqlite import SqliteStore  # noqa: E402

PAPERS_A_DAY = 2400
BATCH = 200  # digests to a transaction, as the planner writes them


def day_ids(day: int) -> list[str]:
    return [f"25{day // 28 + 1:02d}.{day % 28:02d}{number:03d}" for number in range(PAPERS_A_DAY)]


def fill(store: SqliteStore, recipients: int, days: int, rng: random.Random) -> list[str]:
    """``days`` daily digests for each of ``recipients`` subscribers; their names."""
    names = [f"sub{number:06d}" for number in range(recipients)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    store.register_subscribers(names, start)
    for day in range(days):
        now = start + timedelta(days=day)
        ids = day_ids(day)
        batch = []
        for name in names:
            papers = tuple((arxiv_id, 1) for arxiv_id in rng.sample(ids, rng.randrange(10, 26)))
            delivery_id = f"{name}-{day}"
            deliveries = (NewDelivery(delivery_id, "email", f"{name}@lab.example", f"<{delivery_id}@x>", b"m", papers),)
            batch.append(NewDigest(f"d-{delivery_id}", name, "daily", now, now, now, deliveries, now))
            if len(batch) == BATCH:
                store.record_digests(batch)
                batch = []
        if batch:
            store.record_digests(batch)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 recipients, 10 days")
    args = parser.parse_args(argv)
    if args.quick:
        args.recipients, args.days = 200, 10
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-reservations-") as folder:
        store = SqliteStore(Path(folder) / "notifier.sqlite3")
        try:
            began = time.perf_counter()
            names = fill(store, args.recipients, args.days, rng)
            print(
                f"{args.recipients:,} recipients with {args.days} daily digests each, recorded in "
                f"{time.perf_counter() - began:.1f} s; planning day {args.days + 1}"
            )
            new = day_ids(args.days)
            had = {name: sorted(store.reserved_versions(name, "email", f"{name}@lab.example")) for name in names}
            matched = {
                name: set(rng.sample(new, rng.randrange(10, 26))) | set(rng.sample(had[name], rng.randrange(0, 4)))
                for name in names
            }

            def whole(name: str) -> dict[str, int]:
                return store.reserved_versions(name, "email", f"{name}@lab.example")

            def among(name: str) -> dict[str, int]:
                return store.reserved_versions(name, "email", f"{name}@lab.example", matched[name])

            questions = {"whole history (before)": whole, "matched papers (now)": among}
            answers: dict[str, dict[str, dict[str, int]]] = {}
            for round_ in range(args.rounds):
                for label, ask in turn_order(list(questions.items()), round_):
                    began = time.perf_counter()
                    answers[label] = {name: ask(name) for name in names}
                    seconds = time.perf_counter() - began
                    rows = sum(map(len, answers[label].values()))
                    print(
                        f"  round {round_ + 1}: {label:24} {seconds * 1000 / len(names):7.3f} ms per recipient, "
                        f"{rows / len(names):7.1f} rows read per recipient"
                    )
        finally:
            store.close()
    before, now = answers["whole history (before)"], answers["matched papers (now)"]
    same = all({i: v for i, v in before[name].items() if i in matched[name]} == now[name] for name in names)
    print("same answers for the matched papers" if same else "DIFFERENT answers for the matched papers")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
