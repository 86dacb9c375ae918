"""Benchmark: the real ``notifier once``, end to end, for N subscribers, each stage timed, beside a baseline tree.

What it runs. N subscribers, written to a subscribers.yaml: five rules each, drawn by the matching benchmark's
``RuleMaker`` from the papers served (words, phrases, prefixes, AND/OR/NOT, ``au:``, ``cat:``, ``ti:``); each
follows 1-3 of arXiv's 40 ``cs.*`` categories, drawn with a Zipf-like skew (cs.LG most popular, cs.GL least);
every one has an email address, and one in ten a Slack channel too. Nothing is configured for SMTP or Slack, so
mail and posts go to the outbox folder, as in the embedded default; with ``--smtp``, mail goes over SMTP (no TLS)
into a local aiosmtpd sink in a process of its own (``bench/delivery.py``'s, which only counts what it is given),
and Slack posts still to the outbox. The file is checked with ``notifier check``.

The arXiv stand-in of the tests serves one announcement day: the distinct papers of the captured feeds of
2025-06-03 and 2025-06-04 (2,395 papers), all dated 2025-06-03. The captures carry no categories, so each paper
gets 1-3 of the 40 categories from a CRC of its id, with the same skew, the first its primary. ``/rss/cs.AI``
serves the papers of one category and ``/rss/cs.AI+cs.LG`` the union of its categories, as arXiv does: each item
with its ``<category>`` elements, a ``new`` (``replace``) paper announced as ``cross`` (``replace-cross``) in a feed
without its primary, and at most 2,000 items; the API answers with the same categories. The requests each run
makes are counted.

How it measures. Each (tree, N) runs in a fresh process (``bench/_once_driver.py``) with a fresh data directory:
the driver imports the tree's ``notifier`` (through ``PYTHONPATH``), wraps the functions of each stage in timers,
and calls ``notifier.cli.main(["once"])``. ``NOTIFIER_MIN_REQUEST_INTERVAL`` is 0: arXiv's 3 s spacing would add
3 s per request, so the request counts are printed for that sum. ``NOTIFIER_POLL_TIMEOUT`` is 7,200 s, so that a
slow poll is not cut short by its budget (300 s by default) and leaves every tree the same papers to plan.

What the figures mean:
- wall: the whole process, start to exit; peak RSS: its maximum resident set (``ru_maxrss``); with workers: the
  peak of the resident sets of the process and every process under it (render workers) added up, sampled every
  0.2 s, so a brief peak may be missed; PSS: the same with each page that processes share (the fork server's
  modules, mapped by every worker) counted once, split between them;
- garbage collector: the time its collections took (``gc.callbacks``), wherever they ran, and how many there were
  (of which full ones, of the oldest generation);
- load config: ``load_config`` (parse, validate, compile), of which compile: ``RuleSet.compile``;
- poll: ``Notifier.poll`` (feeds and backfill); enrich: ``Notifier.enrich`` (API look-ups);
- plan: ``Notifier.plan``, of which match: ``RuleSet.evaluate``, hits: ``MatchBatch.matches``, render:
  ``Renderer.email`` and ``Renderer.slack`` in this process (a plan that renders in worker processes shows what is
  left here), store: ``record_digests``;
- send: ``Notifier.send``, of which deliver: ``Sender.deliver_due`` (claims, outbox writes, outcomes); a tree that
  sends while it plans starts it with the plan, so its send spans the plan;
- planning to sent: from the start of the plan to the end of sending (plan + send when one follows the other);
- match and hits outside plan: the same functions called elsewhere (choosing the papers to enrich);
- a stage the tree does not have shows "-"; stages run on several threads at once add up their threads' time;
- arXiv's 3 s spacing: what the requests counted would add to the wall time against arXiv itself;
- cores busy: the CPU time the process and its render workers used, over the wall time, before the plan (load
  config, poll, enrich), during it, and after it until sending ends; sampled with the memory (a process that ended
  counts with its last sample); of which the once process: the same for ``notifier once`` alone, without its render
  workers (its threads together);
- CPU s: the CPU time of the process and its render workers from start to exit, of which the once process
  alone (from the same samples): the work a run did, which a busy machine stretches less than the wall time;
- marginal cost per digest: (planning to sent at the larger N - at the smaller N) / (difference in digests).

Every run gets the settings above and no other ``NOTIFIER_`` variable of the caller, but ``NOTIFIER_RENDER_WORKERS``
(0 profiles the rendering in the one process ``--profile`` sees).

    python bench/once.py [--sizes 1000,10000,100000] [--baseline /path/to/old/tree] [--baseline-max 10000]
                         [--timeout 1800] [--rounds 1] [--profile] [--quick] [--keep FOLDER] [--smtp]

``--baseline TREE`` runs the same sizes with the ``notifier`` of another checkout (up to ``--baseline-max``
subscribers). ``--rounds R`` runs each tree R times per N and prints each round's table; the trees take turns
going first, as a run's place in the order can show in its figures on a busy machine. ``--profile`` also runs
each under cProfile and prints the top functions (cumulative, then own time), without the time threads and the
event loop spend waiting; the threads' times add up, so a function run in worker threads can show more time than
the wall clock. The timed runs are not profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import platform
import pstats
import random
import re
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _turns import turn_order  # noqa: E402

from bench.delivery import Sink  # noqa: E402
from bench.matching import RuleMaker  # noqa: E402
from notifier.models import Paper  # noqa: E402
from tests.arxiv_server import RSS_DAYS, ArxivStandIn, _ApiPaper, canonical_key, submission_cutoff  # noqa: E402

DRIVER = Path(__file__).resolve().parent / "_once_driver.py"
DAY = "2025-06-03"  # the day served
CAPTURES = ("2025-06-03", "2025-06-04")  # the captured days whose distinct papers make it up
FEED_ITEM_CAP = 2000
RULES_PER_SUBSCRIBER = 5
SLACK_SHARE = 0.1
POLL_TIMEOUT = 7200  # seconds; the default 300 s budget would cut a slow poll short and leave less to plan
# arXiv's 40 cs categories, most popular first; category n is drawn with weight 1 / (n + 1) ** SKEW.
CATEGORIES = (
    "cs.LG cs.CV cs.AI cs.CL cs.RO cs.CR cs.SE cs.HC cs.IT cs.NE cs.DC cs.IR cs.SY cs.CY cs.DS cs.NI cs.SD cs.MA "
    "cs.GT cs.LO cs.PL cs.DB cs.SI cs.CE cs.MM cs.NA cs.AR cs.CC cs.DM cs.ET cs.FL cs.CG cs.GR cs.DL cs.MS cs.PF "
    "cs.SC cs.OS cs.OH cs.GL"
).split()
SKEW = 1.1
WEIGHTS = [1 / (n + 1) ** SKEW for n in range(len(CATEGORIES))]
_ITEM = re.compile(rb"<item>.*?</item>", re.DOTALL)
_GUID = re.compile(rb"<guid[^>]*>[^<]*?(\d{4}\.\d{4,5})v(\d+)</guid>")
_PUBDATE = re.compile(rb"<pubDate>[^<]*</pubDate>")
_ANNOUNCED = re.compile(rb"(<arxiv:announce_type>|Announce Type:\s*)([a-z-]+)")
_AS_CROSS = {b"new": b"cross", b"replace": b"replace-cross"}
_DC = "{http://purl.org/dc/elements/1.1/}"
_ARXIV = "{http://arxiv.org/schemas/atom}"
_ABSTRACT = re.compile(r"^arXiv:\S+ Announce Type: \S+\s*Abstract:\s*", re.DOTALL)


def pick_categories(rng: random.Random) -> list[str]:
    """1-3 distinct categories, popular ones more often."""
    count = rng.choices((1, 2, 3), weights=(0.4, 0.4, 0.2))[0]
    chosen: list[str] = []
    while len(chosen) < count:
        category = rng.choices(CATEGORIES, weights=WEIGHTS)[0]
        if category not in chosen:
            chosen.append(category)
    return chosen


@dataclass(frozen=True)
class Item:
    """One paper of the day served, and its RSS item as served."""

    paper: Paper
    xml: bytes  # as announced in its primary category (the first of ``paper.categories``)
    cross: bytes  # as announced in its other categories: ``new`` as ``cross``, ``replace`` as ``replace-cross``


def load_day() -> tuple[bytes, bytes, list[Item]]:
    """The channel head and tail of the day served, and its distinct papers (the first capture of an id wins), each
    item dated the day served and tagged with its categories."""
    head = tail = pubdate = b""
    items: list[Item] = []
    seen: set[str] = set()
    for day in CAPTURES:
        for name in RSS_DAYS[day].values():
            body = (ROOT.parent / "shared" / "fixtures" / "arxiv" / name).read_bytes()
            raw = _ITEM.findall(body)
            if not head:
                head, tail = body[: body.index(raw[0])], body[body.rindex(raw[-1]) + len(raw[-1]) :]
                pubdate = _PUBDATE.findall(head)[-1]
            for xml, element in zip(raw, ET.fromstring(body).iter("item"), strict=True):
                found = _GUID.search(xml)
                if found is None or found[1].decode() in seen:
                    continue
                arxiv_id = found[1].decode()
                seen.add(arxiv_id)
                categories = pick_categories(random.Random(zlib.crc32(arxiv_id.encode())))
                paper = Paper(
                    arxiv_id=arxiv_id,
                    version=int(found[2]),
                    title=" ".join((element.findtext("title") or "").split()),
                    abstract=" ".join(_ABSTRACT.sub("", element.findtext("description") or "").split()),
                    authors=tuple(
                        a.strip() for a in (element.findtext(f"{_DC}creator") or "").split(", ") if a.strip()
                    ),
                    categories=tuple(categories),
                    announce_type=element.findtext(f"{_ARXIV}announce_type") or "new",
                )
                tags = b"".join(b"<category>%s</category>" % c.encode() for c in categories)
                xml = _PUBDATE.sub(pubdate, xml).replace(b"</item>", tags + b"</item>")
                items.append(Item(paper, xml, _ANNOUNCED.sub(lambda m: m[1] + _AS_CROSS.get(m[2], m[2]), xml)))
    return head, tail, items


class DayStandIn(ArxivStandIn):
    """The tests' arXiv stand-in serving :func:`load_day`'s papers: one feed per category and per set of them."""

    def __init__(self, head: bytes, tail: bytes, items: list[Item]) -> None:
        super().__init__(day=DAY)
        self.head, self.tail, self.items = head, tail, items
        self._bodies: dict[frozenset[str], tuple[bytes, int]] = {}
        self._counts: dict[frozenset[str], int] = {}
        self._retagged: object = None

    def feed(self, key: str) -> tuple[bytes, int]:
        """The body for a category set and how many items it holds; one category's body is kept for the next
        request, a set's is built again (thousands of sets would take gigabytes)."""
        wanted = canonical_key(key)
        if wanted in self._bodies:
            return self._bodies[wanted]
        kept = [
            i.xml if i.paper.categories[0] in wanted else i.cross
            for i in self.items
            if wanted.intersection(i.paper.categories)
        ][:FEED_ITEM_CAP]
        head = re.sub(rb"rss/[^<\"]+", b"rss/" + key.encode(), self.head)
        title = b"<title>%s updates on arXiv.org</title>" % key.replace("+", ", ").encode()
        body = re.sub(rb"<title>[^<]*</title>", title, head, count=1) + b"\n    ".join(kept) + self.tail
        if len(wanted) == 1:
            self._bodies[wanted] = (body, len(kept))
        return body, len(kept)

    def items_in(self, key: str) -> int:
        """How many items the feed of a category set holds."""
        wanted = canonical_key(key)
        if wanted not in self._counts:
            self._counts[wanted] = min(
                FEED_ITEM_CAP, sum(1 for i in self.items if wanted.intersection(i.paper.categories))
            )
        return self._counts[wanted]

    def feed_body(self, day: str, key: str) -> bytes | None:
        if day != DAY or not canonical_key(key) <= set(CATEGORIES):
            return super().feed_body(day, key)
        return self.feed(key)[0]

    def api_papers(self) -> dict[str, _ApiPaper]:
        """The fixture papers, those of the day served with its categories and submitted in its window."""
        papers = super().api_papers()
        if papers is not self._retagged:
            cutoff = submission_cutoff(date.fromisoformat(DAY))
            for index, item in enumerate(self.items):
                known = papers.get(item.paper.arxiv_id)
                if known is not None:
                    known.categories = list(item.paper.categories)
                    known.updated = cutoff - timedelta(minutes=index + 1)
                    known.published = known.updated - timedelta(days=0 if known.version == 1 else 60)
            self._retagged = papers
        return papers


def write_subscribers(path: Path, count: int, maker: RuleMaker, rng: random.Random) -> tuple[int, int]:
    """A subscribers.yaml of ``count`` subscribers; returns (distinct category sets, subscribers with Slack)."""
    lines = ["defaults:", '  schedule: "daily 08:00 UTC"', "subscribers:"]
    sets: set[frozenset[str]] = set()
    slack = 0
    for s in range(count):
        categories = pick_categories(rng)
        sets.add(frozenset(categories))
        lines += [f"  - name: sub{s:06d}", f"    email: sub{s:06d}@example.org"]
        if rng.random() < SLACK_SHARE:
            lines.append(f'    slack: "#papers-{s % 50}"')
            slack += 1
        lines += [f"    categories: [{', '.join(categories)}]", "    rules:"]
        for r in range(RULES_PER_SUBSCRIBER):
            query = maker.rule().replace("'", "''")
            lines += [f"      - name: rule {r}", f"        query: '{query}'"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(sets), slack


@dataclass
class Run:
    tree: str
    subscribers: int
    wall: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    rss_requests: int = 0
    rss_items: int = 0
    api_requests: int = 0
    not_ok: int = 0
    sqlite_bytes: int = 0
    outbox_files: int = 0
    outbox_bytes: int = 0
    mailed: int | None = None  # mails the SMTP sink received during the run (with --smtp)
    errors: list[str] = field(default_factory=list)  # the ERROR lines the run logged
    feeds_failed: int = 0  # feeds `notifier once` reported as errors
    digests: int | None = None
    deliveries: int | None = None
    profile: str = ""

    def stage(self, name: str) -> float | None:
        seconds = self.result.get("seconds", {})
        wrapped = self.result.get("wrapped", {})
        if not wrapped.get(name.split(" outside ", maxsplit=1)[0]):
            return None
        return float(seconds.get(name, 0.0))

    def plan_to_sent(self) -> float | None:
        """Seconds from the start of planning to the end of sending: plan + send when one follows the other, less
        when sending overlaps the plan (a tree whose driver records no spans: plan + send)."""
        spans = self.result.get("spans", {})
        if "plan" in spans and "send" in spans:
            return float(max(spans["plan"][1], spans["send"][1]) - min(spans["plan"][0], spans["send"][0]))
        plan, send = self.stage("plan"), self.stage("send")
        return None if plan is None or send is None else plan + send

    def cpu(self) -> str:
        """The CPU seconds of the run's processes from the first sample to the last, and of the once process alone."""
        samples = [sample for sample in self.result.get("memory_samples", []) if len(sample) > 4]
        if len(samples) < 2:
            return "-"
        first, last = samples[0], samples[-1]
        return f"{last[3] - first[3]:.1f} / {last[4] - first[4]:.1f}"

    def cores(self, column: int = 3) -> str:
        """The cores the run's processes kept busy on average before the plan, during it, and after it (while
        sending is left), from the driver's samples of their CPU time; "-" where it sampled none. ``column`` 4: the
        cores the ``notifier once`` process alone kept busy (without its render workers)."""
        samples = [
            (sample[0], sample[column]) for sample in self.result.get("memory_samples", []) if len(sample) > column
        ]
        spans = self.result.get("spans", {})
        if len(samples) < 2 or "plan" not in spans:
            return "-"
        start, end = spans["plan"]
        last = max(end, spans.get("send", [end, end])[1])

        def busy(since: float, until: float) -> str:
            inside = [(at, cpu) for at, cpu in samples if since <= at <= until]
            if len(inside) < 2:
                return "-"
            (first, before), (final, after) = inside[0], inside[-1]
            return f"{(after - before) / (final - first):.2f}"

        return " / ".join((busy(samples[0][0], start), busy(start, end), busy(end, last)))


def environment(
    tree: Path, subscribers: Path, data: Path, server: ArxivStandIn, sink: Sink | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_") and k != "PYTHONPATH"}
    if "NOTIFIER_RENDER_WORKERS" in os.environ:  # the one setting passed on: to compare worker counts
        env["NOTIFIER_RENDER_WORKERS"] = os.environ["NOTIFIER_RENDER_WORKERS"]
    if sink is not None:
        env |= {
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(sink.port),
            "NOTIFIER_SMTP_SECURITY": "none",
        }
    return env | {
        "PYTHONPATH": str(tree),
        "NOTIFIER_SUBSCRIBERS": str(subscribers),
        "NOTIFIER_DATA_DIR": str(data),
        "NOTIFIER_ARXIV_RSS_URL": server.rss_base_url,
        "NOTIFIER_ARXIV_API_URL": server.api_url,
        "NOTIFIER_MIN_REQUEST_INTERVAL": "0",
        "NOTIFIER_POLL_TIMEOUT": str(POLL_TIMEOUT),
    }


async def check_config(subscribers: Path, server: ArxivStandIn, work: Path) -> str:
    """``notifier check`` of this tree on the file; its first line, feeds counted rather than listed."""
    env = environment(ROOT, subscribers, work / "check-data", server)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "check", env=env, cwd=work,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"notifier check rejected {subscribers}:\n{err.decode()[-3000:]}")
    line = out.decode().strip().splitlines()[0]
    found = re.search(r": ok: (.*? rules)(?:, (\w+) (.*))?$", line)
    if found is None:
        return line
    return found[1] + (f", {len(found[3].split(', '))} {found[2]}" if found[2] else "")


async def run_once(
    tree: str,
    root: Path,
    subscribers: Path,
    count: int,
    server: DayStandIn,
    work: Path,
    limit: float,
    profile: bool = False,
    sink: Sink | None = None,
) -> Run:
    """One ``notifier once`` of ``root`` in a fresh process and data directory (mailing into ``sink``, if any)."""
    run = Run(tree, count)
    mailed = sink.count() if sink is not None else 0
    folder = Path(tempfile.mkdtemp(prefix=f"{tree}-{count}-", dir=work))
    data, result, stats = folder / "data", folder / "result.json", folder / "profile.stats"
    server.requests.clear()
    command = [sys.executable, str(DRIVER), "--result", str(result)] + (["--profile", str(stats)] if profile else [])
    started = time.perf_counter()
    with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *command, env=environment(root, subscribers, data, server, sink), cwd=folder, stdout=out, stderr=err
        )
        try:
            await asyncio.wait_for(process.wait(), limit)
        except TimeoutError:
            process.kill()
            await process.wait()
            run.error = f"timed out after {limit:g} s"
    run.wall = time.perf_counter() - started
    if sink is not None:
        run.mailed = sink.count() - mailed
    if run.error is None and not result.exists():
        tail = (folder / "stderr").read_text(encoding="utf-8", errors="replace")[-3000:]
        run.error = f"exit {process.returncode}, no result; stderr ends:\n{tail}"
    if run.error is None:
        run.result = json.loads(result.read_text(encoding="utf-8"))
        if run.result["exit"] != 0:
            tail = (folder / "stderr").read_text(encoding="utf-8", errors="replace")[-3000:]
            run.error = f"notifier once exited {run.result['exit']}; stderr ends:\n{tail}"
        found = re.search(
            r"digests: (\d+) .*deliveries: (\d+) sent, (\d+) to retry, (\d+) failed", run.result["stdout"]
        )
        run.feeds_failed = len(re.findall(r"^feed \S+: error", run.result["stdout"], re.MULTILINE))
        if found:
            run.digests = int(found[1])
            run.deliveries = int(found[2]) + int(found[3]) + int(found[4])
        if not run.digests and run.error is None:
            run.error = f"no digest planned; notifier once printed:\n{run.result['stdout'][-3000:]}"
    logged = (folder / "stderr").read_text(encoding="utf-8", errors="replace").splitlines()
    run.errors = [line for line in logged if " ERROR " in line or " CRITICAL " in line]
    rss = server.requests_to("/rss/")
    run.rss_requests = len(rss)
    keys = [r.path.rsplit("/", 1)[-1] for r in rss if r.status == 200]
    run.rss_items = sum(server.items_in(key) for key in keys if canonical_key(key) <= set(CATEGORIES))
    run.api_requests = len(server.requests_to("/api/"))
    run.not_ok = sum(1 for r in server.requests if r.status != 200)
    run.sqlite_bytes = sum(p.stat().st_size for p in data.glob("notifier.sqlite3*"))
    outbox = [p for p in (data / "outbox").rglob("*") if p.is_file()]
    run.outbox_files, run.outbox_bytes = len(outbox), sum(p.stat().st_size for p in outbox)
    if profile and stats.exists():
        run.profile = top_of_profile(stats)
    return run


# Waiting and the event loop's plumbing, left out of the profile's top: a thread waiting for work, or the loop for
# a thread, would fill it with time in which nothing was done.
_PLUMBING = (
    r"^(?!.*(SimpleQueue|epoll|threading\.py|thread\.py|base_events\.py|runners\.py|events\.py|selectors\.py"
    r"|_contextvars|{built-in method time\.sleep}))"
)


def top_of_profile(stats_file: Path) -> str:
    text = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=text).strip_dirs()
    text.write("  by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(_PLUMBING, 25)
    text.write("  by own time:\n")
    stats.sort_stats("tottime").print_stats(_PLUMBING, 15)
    noise = ("function calls", "Ordered by", "List reduced", str(stats_file))
    lines = text.getvalue().splitlines()
    return "\n".join(line for line in lines if line.strip() and not any(n in line for n in noise))


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def block(runs: list[Run], sets: int, slack: int, checked: str) -> str:
    """One table for one N: a row per figure, a column per tree."""
    count = runs[0].subscribers
    rows: list[list[str]] = [["", *(r.tree for r in runs)]]
    if len(runs) == 2:
        rows[0].append("baseline / new")

    def add(label: str, values: list[str], ratio: tuple[float | None, float | None] | None = None) -> None:
        row = [label, *values]
        if len(runs) == 2:
            new, old = ratio or (None, None)
            row.append(f"{old / new:.1f}x" if new and old is not None else "")
        rows.append(row)

    def seconds(label: str, stage: str) -> None:
        values = [r.stage(stage) if r.error is None else None for r in runs]
        add(label, [fmt_seconds(v) for v in values], (values[0], values[-1]) if len(runs) == 2 else None)

    ok = [r.error is None for r in runs]
    add(
        "wall s",
        [f"{r.wall:.1f}" if good else "FAILED" for r, good in zip(runs, ok, strict=True)],
        (runs[0].wall, runs[-1].wall) if all(ok) else None,
    )
    add(
        "peak RSS MB",
        [f"{r.result['maxrss_kb'] / 1024:.0f}" if good else "-" for r, good in zip(runs, ok, strict=True)],
    )
    add(
        "  with workers MB",
        [
            f"{r.result.get('tree_peak_kb', 0) / 1024:.0f}" if good and r.result.get("tree_peak_kb") else "-"
            for r, good in zip(runs, ok, strict=True)
        ],
    )
    add(
        "  with workers, PSS MB",
        [
            f"{r.result.get('tree_peak_pss_kb', 0) / 1024:.0f}" if good and r.result.get("tree_peak_pss_kb") else "-"
            for r, good in zip(runs, ok, strict=True)
        ],
    )
    add(
        "garbage collector s",
        [
            f"{r.result['gc_seconds']:.2f}" if good and "gc_seconds" in r.result else "-"
            for r, good in zip(runs, ok, strict=True)
        ],
        (runs[0].result.get("gc_seconds"), runs[-1].result.get("gc_seconds")) if all(ok) else None,
    )
    add(
        "  collections (full)",
        [
            f"{sum(r.result['gc_collections']):,} ({r.result['gc_collections'][2]})"
            if "gc_collections" in r.result
            else "-"
            for r in runs
        ],
    )
    for label, stage in (
        ("load config s", "load config"), ("  compile s", "compile"), ("poll s", "poll"), ("enrich s", "enrich"),
        ("plan s", "plan"), ("  match s", "match"), ("  hits s", "hits"), ("  render s", "render"),
        ("  store s", "store"), ("send s", "send"), ("  deliver s", "deliver"),
        ("match outside plan s", "match outside plan"), ("hits outside plan s", "hits outside plan"),
    ):  # fmt: skip
        seconds(label, stage)
    spent = [r.plan_to_sent() if r.error is None else None for r in runs]
    add("planning to sent s", [f"{v:.2f}" if v is not None else "-" for v in spent])
    add("cores busy: before plan / plan / after", [r.cores() if r.error is None else "-" for r in runs])
    add("  of which the once process", [r.cores(4) if r.error is None else "-" for r in runs])
    add("CPU s: all / the once process", [r.cpu() if r.error is None else "-" for r in runs])
    add("digests", [str(r.digests) if r.digests is not None else "-" for r in runs])
    add("deliveries", [str(r.deliveries) if r.deliveries is not None else "-" for r in runs])
    add("feeds failed", [str(r.feeds_failed) for r in runs])
    add("errors logged", [str(len(r.errors)) for r in runs])
    add("RSS requests", [str(r.rss_requests) for r in runs])
    add("RSS items served", [f"{r.rss_items:,}" for r in runs])
    add("API requests", [str(r.api_requests) for r in runs])
    add("arXiv's 3 s spacing s", [f"+{3 * (r.rss_requests + r.api_requests):,}" for r in runs])
    add("answers not 200", [str(r.not_ok) for r in runs])
    add("SQLite MB", [f"{r.sqlite_bytes / 2**20:.1f}" for r in runs])
    add("outbox files / MB", [f"{r.outbox_files:,} / {r.outbox_bytes / 2**20:.1f}" for r in runs])
    if any(r.mailed is not None for r in runs):
        add("mails the SMTP sink received", [f"{r.mailed:,}" if r.mailed is not None else "-" for r in runs])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"N = {count:,} subscribers ({count * RULES_PER_SUBSCRIBER:,} rules, {sets:,} distinct category sets, "
        f"{slack:,} with Slack; notifier check: {checked})"
    ]
    lines += [
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    for run in runs:
        if run.error:
            lines.append(f"  {run.tree} FAILED: {run.error}")
        if run.errors:
            lines.append(f"  {run.tree}: first error logged: {run.errors[0]}")
        missing = [s for s, names in run.result.get("wrapped", {}).items() if not names]
        if missing:
            lines.append(f"  {run.tree}: no function for {', '.join(missing)} in this tree (shown as -)")
    return "\n".join(lines)


def marginal(runs: list[Run]) -> list[str]:
    """Per tree, the time from planning to sent (see :meth:`Run.plan_to_sent`) per extra digest between
    consecutive sizes."""
    lines = []
    by_tree: dict[str, list[Run]] = {}
    for run in runs:
        if run.error is None and run.digests is not None:
            by_tree.setdefault(run.tree, []).append(run)
    for tree, done in by_tree.items():
        done.sort(key=lambda r: r.subscribers)
        for small, large in itertools.pairwise(done):
            extra = large.digests - small.digests if large.digests is not None and small.digests is not None else 0
            small_spent, large_spent = small.plan_to_sent(), large.plan_to_sent()
            if extra <= 0 or small_spent is None or large_spent is None:
                continue
            cost = (large_spent - small_spent) / extra
            lines.append(
                f"  {tree}: {small.subscribers:,} -> {large.subscribers:,} subscribers: {extra:,} more digests, "
                f"{cost * 1000:.2f} ms from planning to sent per extra digest"
            )
    return lines


async def bench(args: argparse.Namespace) -> int:
    sizes = [50] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(
        f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"Python {platform.python_version()}"
    )
    head, tail, items = load_day()
    popular = Counter(c for i in items for c in i.paper.categories).most_common()
    print(
        f"arXiv day served: {len(items):,} distinct papers of the {' and '.join(CAPTURES)} captures, dated {DAY}; "
        f"categories per paper {sum(len(i.paper.categories) for i in items) / len(items):.2f} on average; "
        f"most popular {', '.join(f'{c} {n}' for c, n in popular[:4])}; "
        f"least {', '.join(f'{c} {n}' for c, n in popular[-2:])}"
    )
    print(
        "NOTIFIER_MIN_REQUEST_INTERVAL=0: arXiv's 3 s between requests would add 3 s per request counted below; "
        f"NOTIFIER_POLL_TIMEOUT={POLL_TIMEOUT}; "
        + (
            "email over SMTP into a local sink (one process), Slack to the outbox"
            if args.sink is not None
            else "outbox delivery (no SMTP, no Slack token)"
        )
    )
    trees = [("new", ROOT)]
    if args.baseline:
        trees.append(("baseline", args.baseline))
    for name, root in trees:
        print(f"{name}: {root}")
    rng = random.Random(args.seed)
    maker = RuleMaker([i.paper for i in items], rng)
    runs: list[Run] = []
    profiles: list[Run] = []
    server = DayStandIn(head, tail, items)
    async with server:
        with contextlib.ExitStack() as stack:
            work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-once-")))
            work.mkdir(parents=True, exist_ok=True)
            for count in sizes:
                path = work / f"subscribers-{count}.yaml"
                rng.seed(args.seed)  # the same draws at every N: each N's subscribers begin with the smaller N's
                sets, slack = write_subscribers(path, count, maker, rng)
                checked = await check_config(path, server, work)
                for round_ in range(args.rounds):
                    order = turn_order(trees, round_)
                    done = []
                    for name, root in order:
                        if name == "baseline" and count > args.baseline_max:
                            continue
                        run = await run_once(name, root, path, count, server, work, args.timeout, sink=args.sink)
                        print(
                            f"  done: {name} N={count:,}: {run.wall:.1f} s" + (" FAILED" if run.error else ""),
                            flush=True,
                        )
                        if run.error is None:
                            print(f"    ran {run.result['notifier']} with templates {run.result['templates']}")
                        done.append(run)
                        if args.profile and round_ == 0:
                            profiled = await run_once(
                                name, root, path, count, server, work, args.timeout, profile=True, sink=args.sink
                            )
                            print(f"  done: {name} N={count:,} under cProfile: {profiled.wall:.1f} s", flush=True)
                            profiles.append(profiled)
                    done.sort(key=lambda run: run.tree != "new")
                    runs.extend(done)
                    print()
                    if args.rounds > 1:
                        print(f"round {round_ + 1} of {args.rounds}, {order[0][0]} first")
                    print(block(done, sets, slack, checked), flush=True)
                    print()
    cost = marginal(runs)
    if cost:
        print("marginal cost per digest (plan + send):")
        print("\n".join(cost))
    for run in profiles:
        print(
            f"\nprofile: {run.tree}, N = {run.subscribers:,}, {run.wall:.1f} s under cProfile "
            f"(main thread and {run.result.get('threads_profiled', 0)} other threads)"
        )
        print(run.profile if run.error is None else f"  FAILED: {run.error}")
    return 1 if any(r.error for r in runs + profiles) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="subscriber counts, comma-separated")
    parser.add_argument(
        "--baseline",
        type=lambda text: Path(text).resolve(),
        help="a checkout of the code to compare with (its notifier is imported)",
    )
    parser.add_argument("--baseline-max", type=int, default=10000, help="largest N the baseline runs")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs of each tree per N, taking turns to go first (noisy machines)"
    )
    parser.add_argument("--profile", action="store_true", help="also run each under cProfile, print the top")
    parser.add_argument("--quick", action="store_true", help="50 subscribers")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (files, data, logs of each run)")
    parser.add_argument("--smtp", action="store_true", help="mail over SMTP into a local sink, not to the outbox")
    args = parser.parse_args(argv)
    args.sink = Sink.start(1) if args.smtp else None  # forked before the event loop starts
    try:
        return asyncio.run(bench(args))
    finally:
        if args.sink is not None:
            args.sink.stop()


if __name__ == "__main__":
    sys.exit(main())
