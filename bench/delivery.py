"""Email delivery throughput: raw aiosmtplib on one connection vs the path ``once`` and ``run`` send through.

    python bench/delivery.py [--messages 10000] [--papers 20] [--pool 4] [--baseline /path/to/old/tree] [--quick]

Digest-sized messages (``--papers`` papers each, 30-60 KB for 20, multipart text + HTML, built with ``build_email``)
go to a local aiosmtpd sink in other processes that only count them. The paths:

- raw aiosmtplib on one connection: the ceiling;
- SmtpChannel alone, with one connection and with a pool;
- the sender as the daemon runs it: a SQLite store holding one pending delivery for each of ``--messages`` active
  subscribers (written through the store's own calls), ``Notifier.send``'s store calls, then
  ``Sender.deliver_due`` claiming batches and recording each outcome, through ``Channels`` and ``SmtpChannel``;
- with ``--baseline``, the same sender path of another source tree (an older checkout), run in a subprocess with
  that tree first on ``sys.path``, and driven as that tree's daemon drives it.

The raw and channel paths take turns in rounds; each sender path runs once over a store of the full size, as a
claim's cost may grow with the outbox and the number of subscribers. Only sending is timed, not filling the store.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.sharedctypes
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib

# The tree whose sender is measured: this one, or (in the subprocess of --baseline) the one named here.
sys.path.insert(0, os.environ.get("BENCH_NOTIFIER_TREE") or str(Path(__file__).resolve().parents[1]))

from notifier.channels.email import SmtpChannel
from notifier.models import Outgoing, RenderedEmail

try:
    from notifier.render.mime import build_email, make_message_id
except ImportError:  # a baseline from before the messages were built in notifier.render
    from notifier.channels.email import build_email, make_message_id  # type: ignore[no-redef,attr-defined]

SENDER = "digest@bench.example.org"
DISTINCT = 400  # distinct pre-built messages, reused in turn (10,000 x 45 KB would be 450 MB)
WORDS = (
    "quantum learning graph neural transformer sparse bound theorem lattice gauge spectral manifold entropy "
    "stochastic convex kernel operator Über Schrödinger λ-calculus Hilbert Banach"
).split()


# ------------------------------------------------------------------------------------------------------ the sink


class _CountingHandler:
    def __init__(self, counter: Any, delay: float) -> None:
        self.counter = counter
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)  # a server that queues to disk before it answers
        with self.counter.get_lock():
            self.counter.value += 1
        return "250 OK"


def _sink(sock: socket.socket, counter: Any, delay: float) -> None:
    from aiosmtpd.smtp import SMTP

    async def serve() -> None:
        handler = _CountingHandler(counter, delay)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(handler, hostname="sink"), sock=sock)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


@dataclass
class Sink:
    port: int
    counter: Any
    processes: Sequence[multiprocessing.process.BaseProcess]

    @classmethod
    def start(cls, workers: int, delay: float = 0.0) -> Sink:
        context = multiprocessing.get_context("fork")
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        counter = context.Value("q", 0)
        processes = [
            context.Process(target=_sink, args=(listener, counter, delay), daemon=True) for _ in range(workers)
        ]
        for process in processes:
            process.start()
        port = listener.getsockname()[1]
        listener.close()  # the workers hold their own copies
        return cls(port, counter, processes)

    def count(self) -> int:
        return int(self.counter.value)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join()


# -------------------------------------------------------------------------------------------------- the messages


def _paragraph(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def digest(rng: random.Random, papers: int = 20) -> RenderedEmail:
    text_parts, html_parts = [], []
    for i in range(papers):
        title, authors, abstract = _paragraph(rng, 12), _paragraph(rng, 8), _paragraph(rng, rng.randint(60, 130))
        url = f"https://arxiv.org/abs/2506.{rng.randint(0, 99999):05d}"
        text_parts.append(f"{i + 1}. {title}\n   {authors}\n   {url}\n\n{abstract}\n")
        html_parts.append(
            f'<tr><td style="padding:12px 0;border-bottom:1px solid #e5e5e5"><a href="{url}" style="color:#1a0dab;'
            f'font-size:16px;text-decoration:none">{title}</a><div style="color:#555;font-size:13px">{authors}</div>'
            f'<p style="margin:6px 0 0;font-size:14px;line-height:1.45">{abstract}</p></td></tr>'
        )
    html = '<html><body><table role="presentation" width="100%">' + "".join(html_parts) + "</table></body></html>"
    return RenderedEmail(subject=f"{papers} new papers: {_paragraph(rng, 6)}", text="\n".join(text_parts), html=html)


def build_messages(count: int, papers: int = 20) -> list[Outgoing]:
    rng = random.Random(1)
    now = datetime.now(UTC)
    messages = []
    for i in range(count):
        recipient = f"reader{i}@bench.example.org"
        message_id = make_message_id(f"bench-{i}", "bench.example.org")
        payload = build_email(
            digest(rng, papers),
            sender=f"arXiv digest <{SENDER}>",
            recipient=recipient,
            message_id=message_id,
            date=now,
            list_id="digest.bench.example.org",
            unsubscribe_url=f"https://bench.example.org/unsubscribe/{i}",
        )
        messages.append(Outgoing(f"d{i}", f"s{i}", "email", recipient, message_id, payload))
    return messages


def cycle(messages: list[Outgoing], total: int) -> Iterator[Outgoing]:
    return (messages[i % len(messages)] for i in range(total))


# ---------------------------------------------------------------------------------------------------- the paths


async def raw_baseline(port: int, messages: list[Outgoing], total: int) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench")
    await smtp.connect()
    for message in cycle(messages, total):
        await smtp.sendmail(SENDER, [message.recipient], message.payload)
    await smtp.quit()


async def with_channel(port: int, messages: list[Outgoing], total: int, pool: int) -> None:
    channel = SmtpChannel(
        host="127.0.0.1", port=port, security="none", username=None, password=None, sender=SENDER, pool_size=pool
    )
    queue = cycle(messages, total)

    async def worker() -> None:
        for message in queue:  # the workers share one iterator, as the outbox shares its due list
            await channel.send(message)

    try:
        await asyncio.gather(*(worker() for _ in range(pool)))
    finally:
        await channel.aclose()


def open_sqlite(path: Path) -> Any:
    """The SQLite store of the tree measured, at ``path`` (``SqliteStore``; ``Store`` in older trees)."""
    from notifier.store import sqlite

    store_class = getattr(sqlite, "SqliteStore", None) or sqlite.Store
    return store_class(path)


def fill_store(path: Path, messages: list[Outgoing], total: int) -> list[str]:
    """A SQLite store at ``path`` with ``total`` active subscribers and one pending delivery each, written through
    the store's calls as the daemon and the planner make them; the subscribers' names."""
    try:
        from notifier.store.rows import NewDelivery, NewDigest
    except ImportError:  # an older tree
        from notifier.store.sql import NewDelivery, NewDigest  # type: ignore[no-redef]

    now = datetime.now(UTC)
    names = [f"subscriber{i:06d}" for i in range(total)]
    store = open_sqlite(path)
    try:
        store.register_subscribers(names, now)
        for start in range(0, total, 1000):
            for i in range(start, min(start + 1000, total)):
                message = messages[i % len(messages)]
                store.record_digests(
                    [
                        NewDigest(
                            digest_id=f"g{i}",
                            subscriber=names[i],
                            kind="daily",
                            period_start=now,
                            period_end=now,
                            now=now,
                            deliveries=(
                                NewDelivery(
                                    f"d{i}", "email", message.recipient, message.message_id, message.payload, ()
                                ),
                            ),
                            cursor=now,
                        )
                    ]
                )
    finally:
        store.close()
    return names


async def through_sender(path: Path, names: list[str], port: int, pool: int) -> int:
    """Send what the store at ``path`` holds as ``Notifier.send`` does (this tree's calls, or the older tree's, which
    passed every subscriber's name); how many were sent."""
    import inspect

    import aiohttp

    from notifier.channels.router import Channels
    from notifier.config.settings import load_settings
    from notifier.outbox.sender import Sender

    settings = load_settings(
        {},
        {
            "data_dir": str(path.parent),
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_pool_size": pool,
            "mail_from": SENDER,
        },
    )
    store = open_sqlite(path)
    try:
        async with aiohttp.ClientSession() as session:
            channels = Channels(settings, session)
            try:
                sender = Sender(store, channels, lambda: datetime.now(UTC))
                if "subscribers" in inspect.signature(sender.deliver_due).parameters:  # the older tree
                    store.cancel_deliveries_of(names, datetime.now(UTC))  # type: ignore[attr-defined]
                    report = await sender.deliver_due(subscribers=names)  # type: ignore[call-arg]
                else:
                    store.cancel_removed(datetime.now(UTC))
                    report = await sender.deliver_due()
            finally:
                await channels.aclose()
    finally:
        store.close()
    return report.sent


def sender_child(path: Path, count: int, papers: int, port: int, pool: int) -> None:
    """The --baseline subprocess: fill a store at ``path`` and send it through this interpreter's tree; print the
    seconds sending took, and how many were sent."""
    names = fill_store(path, build_messages(min(count, DISTINCT), papers), count)
    started = time.perf_counter()
    sent = asyncio.run(through_sender(path, names, port, pool))
    print(f"{time.perf_counter() - started} {sent}")


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    arrived: int = 0


def timed(sink: Sink, total: int, run: Callable[[], Coroutine[Any, Any, None]]) -> tuple[float, int]:
    before = sink.count()
    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    deadline = time.monotonic() + 5
    while sink.count() - before < total and time.monotonic() < deadline:
        time.sleep(0.01)
    return elapsed, sink.count() - before


def sender_path(sink: Sink, path: Path, messages: list[Outgoing], total: int, pool: int) -> Result:
    names = fill_store(path, messages, total)
    result = Result(f"Sender+SQLite pool_size={pool}")
    result.seconds, result.arrived = timed(sink, total, lambda: _sent(through_sender(path, names, sink.port, pool)))
    return result


async def _sent(sending: Coroutine[Any, Any, int]) -> None:
    await sending


def baseline_path(sink: Sink, path: Path, papers: int, total: int, tree: Path) -> Result:
    """The sender path of ``tree``, in a subprocess with that tree first on ``sys.path``, over a store that tree
    writes itself (an older schema cannot open a newer one)."""
    result = Result("Sender+SQLite pool_size=1, baseline")
    before = sink.count()
    command = [sys.executable, __file__, "--messages", str(total), "--papers", str(papers)]
    command += ["--child", str(path), str(sink.port), "1"]
    environment = {**os.environ, "BENCH_NOTIFIER_TREE": str(tree.resolve())}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"baseline failed: {done.stderr.strip().splitlines()[-1:]}")
        result.seconds = float("inf")
        return result
    result.seconds = float(done.stdout.split()[0])
    deadline = time.monotonic() + 5
    while sink.count() - before < total and time.monotonic() < deadline:
        time.sleep(0.01)
    result.arrived = sink.count() - before
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument(
        "--sink-workers",
        type=int,
        default=max(1, min(4, (os.cpu_count() or 2) - 1)),
        help="sink processes sharing the listening socket (default: one core is left for the client)",
    )
    parser.add_argument("--sink-delay", type=float, default=0.0, help="seconds the sink takes to accept a message")
    parser.add_argument("--rounds", type=int, default=5, help="the paths take turns, this many times")
    parser.add_argument("--papers", type=int, default=20, help="papers in each digest (its size)")
    parser.add_argument("--baseline", type=Path, help="a source tree (older checkout) whose sender path to time too")
    parser.add_argument("--quick", action="store_true", help="300 messages, for CI")
    parser.add_argument("--child", nargs=3, metavar=("STORE", "PORT", "POOL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    total = 300 if args.quick else args.messages
    if args.child:
        sender_child(Path(args.child[0]), total, args.papers, int(args.child[1]), int(args.child[2]))
        return 0

    messages = build_messages(min(total, DISTINCT), args.papers)
    sizes = [len(m.payload) for m in messages]
    print(
        f"delivery benchmark: {total} messages, {sum(sizes) / len(sizes) / 1024:.1f} KB average "
        f"({min(sizes) / 1024:.0f}-{max(sizes) / 1024:.0f} KB), sink with {args.sink_workers} processes, "
        f"{args.sink_delay * 1000:g} ms per message"
    )
    sink = Sink.start(args.sink_workers, args.sink_delay)
    try:
        warm_up = min(total, 50)  # the sink has started and imported everything before anything is timed
        timed(sink, warm_up, lambda: raw_baseline(sink.port, messages, warm_up))
        # The paths take turns in rounds, so a noisy moment on the machine hits all of them alike.
        rounds = [total // args.rounds + (1 if r < total % args.rounds else 0) for r in range(args.rounds)]
        paths: list[tuple[str, Callable[[int], Coroutine[Any, Any, None]]]] = [
            ("raw aiosmtplib, 1 connection", lambda n: raw_baseline(sink.port, messages, n)),
            ("SmtpChannel pool_size=1", lambda n: with_channel(sink.port, messages, n, 1)),
            (f"SmtpChannel pool_size={args.pool}", lambda n: with_channel(sink.port, messages, n, args.pool)),
        ]
        results = [Result(name) for name, _ in paths]
        for size in rounds:
            for result, (_, path) in zip(results, paths, strict=True):
                elapsed, arrived = timed(sink, size, lambda path=path, size=size: path(size))  # type: ignore[misc]
                result.seconds += elapsed
                result.arrived += arrived
        with tempfile.TemporaryDirectory(prefix="bench-delivery-") as folder:
            for pool in (1, args.pool):
                results.append(sender_path(sink, Path(folder) / f"pool{pool}.sqlite3", messages, total, pool))
            if args.baseline is not None:
                results.append(
                    baseline_path(sink, Path(folder) / "baseline.sqlite3", args.papers, total, args.baseline)
                )
    finally:
        sink.stop()

    baseline = results[0].seconds
    print(f"{'path':<40}{'messages/s':>12}{'seconds':>10}{'vs raw':>9}")
    for r in results:
        print(f"{r.name:<40}{total / r.seconds:>12.0f}{r.seconds:>10.2f}{baseline / r.seconds:>8.2f}x")
    arrived = sum(r.arrived for r in results)
    print(f"arrived: {arrived}/{total * len(results)}")
    return 0 if arrived == total * len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
