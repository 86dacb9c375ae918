"""A plan of many digests renders them in worker processes: each payload is the one the daemon's own process
renders, a digest that cannot be rendered fails alone with the same reason, and workers that die leave their
digests to the daemon's process, so that none is lost or written twice."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import PLAN_SLICE, Notifier
from notifier.errors import ConfigError
from notifier.models import Paper
from notifier.outbox.planner import POOL_CHUNK, POOL_FROM, PlanReport
from notifier.render.pool import RenderPool, render_all, until_rendered
from notifier.render.renderer import Envelope, Renderer, RenderJob
from notifier.store.payloads import unpack
from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli
from tests.clock import Clock
from tests.digest_factory import build_digest, load_papers
from tests.test_plan_failures import templates

SUBSCRIBERS = POOL_FROM + 20
PAPERS = 30


def config_text(count: int, *, broken: bool = False) -> str:
    lines = ["subscribers:"]
    names = [f"reader{n}" for n in range(count)] + (["broken"] if broken else [])
    for n, name in enumerate(names):
        lines += [
            f"  - name: {name}",
            f"    email: {name}@lab.example",
            *([f'    slack: "#{name}"'] if n % 10 == 0 else []),
            "    categories: [cs.DC]",
            "    rules:",
            f"      - {{name: compilers, query: 'compiler AND part{n % 7}'}}",
            f"      - {{name: clusters, query: 'clusters OR part{n % 5}'}}",
        ]
    return "\n".join(lines) + "\n"


def day(count: int = PAPERS) -> list[Paper]:
    return [
        Paper(
            arxiv_id=f"2506.{n:05d}",
            version=1,
            title=f"A compiler for clusters, part{n % 7} & <more>",
            abstract=f"We study compilers for clusters (part{n % 5}). " * 12,
            authors=("Ada Lovelace", f"Author {n}"),
            categories=("cs.DC",),
            announce_type="new",
            announced=date(2025, 6, 3),
        )
        for n in range(count)
    ]


def make_app(folder: Path, clock: Clock, workers: int, *, broken: bool = False) -> Notifier:
    folder.mkdir()
    path = folder / "subscribers.yaml"
    path.write_text(config_text(SUBSCRIBERS, broken=broken))
    overrides: dict[str, object] = {
        "subscribers": str(path),
        "data_dir": str(folder / "data"),
        "render_workers": workers,
    }
    if broken:
        overrides["templates"] = str(templates(folder / "templates"))
    return Notifier(load_settings({}, overrides), load_config(path, {}), clock=clock, recover_interrupted=True)


def payloads(app: Notifier) -> dict[str, bytes]:
    found = {
        row[0]: unpack(bytes(row[1]))
        for row in app.store.db.execute("SELECT delivery_id, payload FROM delivery_payloads")
    }
    assert len(found) == SUBSCRIBERS + SUBSCRIBERS // 10, "a mail each, and a Slack post for one in ten"
    return found


async def planned(folder: Path, workers: int, *, broken: bool = False) -> tuple[PlanReport, dict[str, bytes]]:
    clock = Clock()
    async with make_app(folder, clock, workers, broken=broken) as app:
        app.store.ingest("cs.DC", day(), clock())
        report = await app.plan(force=True)
        return report, payloads(app)


async def test_a_large_plan_rendered_in_workers_writes_what_this_process_renders(tmp_path):
    here, rendered_here = await planned(tmp_path / "here", workers=0)
    there, rendered_there = await planned(tmp_path / "there", workers=2)
    assert here.digests == there.digests == SUBSCRIBERS
    assert here.subscribers == there.subscribers, "the same digests, in the same order"
    assert rendered_here == rendered_there, "byte for byte"


async def test_a_digest_a_worker_cannot_render_fails_alone_with_the_reason_in_the_template(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="notifier")
    report, _ = await planned(tmp_path / "there", workers=2, broken=True)
    assert report.failed == ["broken"]
    assert report.digests == SUBSCRIBERS, "every other digest is planned"
    (error,) = [r for r in caplog.records if "broken" in r.getMessage()]
    message = error.getMessage()
    assert "rendering its email digest: UndefinedError: 'no_such_value' is undefined" in message
    assert "(at email.txt:1)" in message, "the reason points into the template, as in this process"


def test_each_worker_is_sent_each_paper_once_and_renders_what_this_process_renders():
    papers = load_papers()
    sent = datetime(2025, 6, 3, 20, 0, tzinfo=UTC)
    jobs = []
    for n, word in enumerate(["speech", "audio", "model", "speech"]):
        digest = build_digest(papers, {word: [word]}, subscriber=f"reader{n}")
        envelope = Envelope("Digest <d@lab.example>", f"reader{n}@lab.example", f"<{n}@lab.example>", sent, "d.lab")
        jobs += [RenderJob(digest, envelope), RenderJob(digest)]
    listed = {match.paper for job in jobs for match in job.digest.first_matches}
    with RenderPool(Renderer(), None, workers=1) as pool:
        first, second = pool.submit(jobs[:4]), pool.submit(jobs[4:])
        outcomes = first.outcomes() + second.outcomes()
        (worker,) = pool._started
        assert len(worker.sent) == len(listed), "every paper listed was sent to the one worker, once"
        papers_again, _, numbers = pool._packed(jobs, worker)
        assert numbers == [] and len(papers_again) < 100, "a chunk of papers it has had carries none of them"
    assert outcomes == render_all(Renderer(), jobs), "byte for byte"


async def test_a_plan_hands_over_each_chunk_it_waits_for_and_goes_on_once_it_is_rendered(tmp_path):
    clock = Clock()
    async with make_app(tmp_path / "app", clock, workers=1) as app:
        app.store.ingest("cs.DC", day(), clock())
        report = PlanReport()
        waits = 0
        for waiting in app.planner.steps(app.config, clock(), report, force=True):
            if waiting is not None:
                waits += 1
                await until_rendered(waiting)
                assert waiting.done()
        assert waits, "one worker renders slower than this process plans: the plan waited for it"
        assert report.digests == SUBSCRIBERS and report.failed == []


async def test_while_a_plan_waits_for_its_render_workers_the_event_loop_is_free(tmp_path):
    clock = Clock()
    turns = 0

    async def turning() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0.001)
            turns += 1

    async with make_app(tmp_path / "app", clock, workers=1) as app:
        app.store.ingest("cs.DC", day(), clock())
        counter = asyncio.create_task(turning())
        started = time.monotonic()
        report = await app.plan(force=True)
        took = time.monotonic() - started
        counter.cancel()
    assert report.digests == SUBSCRIBERS
    handbacks = took / PLAN_SLICE  # what the loop would get if the plan only handed it back between slices
    assert turns > 3 * handbacks + 10, f"{turns} turns of the event loop in {took:.2f} s of planning"


def render_workers() -> list[int]:
    """Pids of the render workers: the processes started by this process's fork server."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    servers = {
        pid
        for pid, parent in parents.items()
        if parent == os.getpid() and b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }
    return sorted(pid for pid, parent in parents.items() if parent in servers)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in /proc")
async def test_workers_killed_mid_plan_leave_their_digests_to_this_process_and_none_is_lost(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="notifier")
    _, rendered_here = await planned(tmp_path / "here", workers=0)
    clock = Clock()
    async with make_app(tmp_path / "there", clock, workers=2) as app:
        app.store.ingest("cs.DC", day(), clock())
        report = PlanReport()
        steps = app.planner.steps(app.config, clock(), report, force=True)
        for _ in range(POOL_CHUNK * 3):  # the first chunks are with the workers
            next(steps)
        workers = render_workers()
        assert workers, "the plan started its render workers"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        for _ in steps:
            pass
        assert report.digests == SUBSCRIBERS and report.failed == []
        assert payloads(app) == rendered_here
    (warning,) = [r for r in caplog.records if "render workers" in r.getMessage()]
    assert "rendering in this process from now on" in warning.getMessage()


def test_the_number_of_render_workers_is_checked():
    settings = load_settings({"NOTIFIER_RENDER_WORKERS": "3"}, {})
    assert settings.render_workers == 3
    assert load_settings({}, {}).render_workers is None, "unset: one per core"
    with pytest.raises(ConfigError, match="NOTIFIER_RENDER_WORKERS: must be from 0"):
        load_settings({"NOTIFIER_RENDER_WORKERS": "-1"}, {})
    with pytest.raises(ConfigError, match="NOTIFIER_RENDER_WORKERS: invalid value 'many'"):
        load_settings({"NOTIFIER_RENDER_WORKERS": "many"}, {})


@pytest.mark.slow
async def test_once_renders_a_large_plan_in_workers_and_sends_every_digest(tmp_path):
    lines = ["subscribers:"]
    for n in range(SUBSCRIBERS):
        lines += [
            f"  - name: listener{n}",
            f"    email: listener{n}@lab.example",
            "    categories: [cs.SD, eess.AS]",
            "    rules:",
            f"      - {{name: sound, query: '{('audio', 'speech', 'music')[n % 3]}'}}",
        ]
    (tmp_path / "subscribers.yaml").write_text("\n".join(lines) + "\n")
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        once = await start_cli("once", env=cli_environment(tmp_path, arxiv, NOTIFIER_RENDER_WORKERS="2"))
        out, err = await asyncio.wait_for(once.communicate(), 120)
    log = err.decode()
    assert once.returncode == 0, log
    assert "rendering in 2 worker processes" in log
    assert "Traceback" not in log and " ERROR " not in log
    mails = list((tmp_path / "data" / "outbox" / "email").glob("*.eml"))
    assert len(mails) == SUBSCRIBERS, "each listener's digest, written once"
    assert f"digests: {SUBSCRIBERS}" in out.decode()
