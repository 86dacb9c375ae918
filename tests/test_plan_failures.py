"""One subscriber's digest that cannot be planned or rendered fails alone: it is logged with the subscriber's name,
recorded with its reason, shown by ``notifier status`` and in the metrics, tried again when its definition changes
(or after an hour, or at the next start), and every other subscriber's digest is still planned and sent.

The failure is real: a template override folder whose text template trips over an undefined value for one
subscriber only, or a paper row in the database that cannot be read.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta
from pathlib import Path

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.models import Paper
from tests.arxiv_server import ArxivStandIn
from tests.cli import ROOT, cli_environment, start_cli
from tests.clock import Clock
from tests.smtp_server import SmtpServer

CONFIG = """\
subscribers:
  - name: lab
    email: a@lab.example
    slack: "#papers"
    categories: [cs.DC]
    rules:
      - {name: compilers, query: compiler}
  - name: broken
    email: b@lab.example
    categories: [cs.DC]
    rules:
      - {name: compilers, query: compiler}
  - name: updates
    email: u@lab.example
    categories: [cs.DC]
    rules:
      - {name: compilers, query: compiler}
"""
# Prepended to our own text template: an undefined value, which the renderer refuses, for one subscriber only.
TRAP = '{% if subscriber == "broken" %}{{ no_such_value }}{% endif %}\n'


def templates(folder: Path, *, trap: bool = True) -> Path:
    """A template override folder: our text template, tripping over an undefined value for ``broken``."""
    folder.mkdir(exist_ok=True)
    ours = (ROOT / "templates" / "email.txt").read_text(encoding="utf-8")
    (folder / "email.txt").write_text((TRAP if trap else "") + ours, encoding="utf-8")
    return folder


def paper(arxiv_id: str, title: str, category: str = "cs.DC") -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        version=1,
        title=title,
        abstract=f"We study {title.lower()}.",
        authors=("Ada Lovelace",),
        categories=(category,),
        announce_type="new",
        announced=date(2025, 6, 3),
    )


def make_app(tmp_path: Path, clock: Clock, text: str = CONFIG) -> Notifier:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text)
    overrides = {
        "subscribers": str(path),
        "data_dir": str(tmp_path / "data"),
        "templates": str(tmp_path / "templates"),
    }
    return Notifier(load_settings({}, overrides), load_config(path, {}), clock=clock, recover_interrupted=True)


def mails_to(tmp_path: Path) -> list[tuple[str, str]]:
    """(recipient, text) of every mail in the outbox folder, oldest first."""
    files = sorted((tmp_path / "data" / "outbox" / "email").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    found = []
    for file in files:
        text = file.read_text()
        recipient = next(line[4:] for line in text.splitlines() if line.startswith("To: "))
        found.append((recipient, text))
    return found


def errors_about(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and name in r.getMessage()]


async def test_a_digest_that_cannot_be_rendered_fails_alone_and_every_other_digest_is_sent(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="notifier")
    templates(tmp_path / "templates")
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        report = await app.cycle(force_send=True, poll=False)

        assert report.plan.failed == ["broken"]
        assert report.plan.subscribers == ["lab", "updates"]
        assert report.sent.sent == 3, "lab's mail and Slack post, and updates' mail"
        assert sorted(to for to, _text in mails_to(tmp_path)) == ["a@lab.example", "u@lab.example"]

        failure = app.store.plan_failures()["broken"]
        assert "'no_such_value' is undefined" in failure.reason
        assert "email.txt:1" in failure.reason, "the reason points into the template"
        assert failure.attempts == 1 and failure.first_failed == clock()
        state = app.store.subscriber_state("broken")
        assert state is not None and state.cursor is None, "its cursor stays, so its papers wait"
        assert app.store.delivery_counts() == {"sent": 3}

        metrics = app.metrics.render().decode()
        assert "notifier_plan_failures_total 1.0" in metrics
        assert "notifier_subscribers_failing 1.0" in metrics

    (error,) = errors_about(caplog, "broken")
    assert error.exc_info is None, "one line at ERROR; the traceback is logged at DEBUG"
    assert "no_such_value" in error.getMessage()
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


async def test_a_failing_digest_is_not_tried_every_tick_and_gets_its_papers_once_it_renders(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="notifier")
    folder = templates(tmp_path / "templates")
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.cycle(force_send=True, poll=False)
        clock.now += timedelta(minutes=5)
        app.store.ingest("cs.DC", [paper("2506.2", "Another compiler")], clock())
        clock.now += timedelta(seconds=10)
        again = await app.cycle(force_send=True, poll=False)
        assert again.plan.failed == [] and again.plan.subscribers == ["lab", "updates"]
        assert len(errors_about(caplog, "broken")) == 1, "the same definition is not tried again every tick"
        assert app.store.plan_failures()["broken"].attempts == 1

        templates(folder, trap=False)  # the operator fixes the template
        clock.now += timedelta(hours=1)
        fixed = await app.cycle(force_send=True, poll=False)
        assert fixed.plan.subscribers == ["broken"] and fixed.plan.failed == []
        assert app.store.plan_failures() == {}
        assert "notifier_subscribers_failing 0.0" in app.metrics.render().decode()

    to_broken = [text for to, text in mails_to(tmp_path) if to == "b@lab.example"]
    assert len(to_broken) == 1
    assert "2506.1" in to_broken[0] and "2506.2" in to_broken[0], "no paper was lost while it failed"


async def test_a_changed_definition_or_a_restart_tries_again_at_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="notifier")
    templates(tmp_path / "templates")
    clock = Clock()
    async with make_app(tmp_path, clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        await app.cycle(force_send=True, poll=False)
        edited = CONFIG.replace("email: b@lab.example", "email: [b@lab.example, c@lab.example]")
        (tmp_path / "subscribers.yaml").write_text(edited)
        assert await app.reload_config(force=True)
        clock.now += timedelta(minutes=1)
        await app.cycle(force_send=True, poll=False)
        assert len(errors_about(caplog, "broken")) == 2
        assert app.store.plan_failures()["broken"].attempts == 2
    clock.now += timedelta(minutes=1)
    async with make_app(tmp_path, clock, edited) as restarted:
        report = await restarted.cycle(force_send=True, poll=False)
        assert report.plan.failed == ["broken"]
        assert restarted.store.plan_failures()["broken"].attempts == 3
    assert len(errors_about(caplog, "broken")) == 3

    without_broken = CONFIG.replace(CONFIG[CONFIG.index("  - name: broken") : CONFIG.index("  - name: updates")], "")
    async with make_app(tmp_path, clock, without_broken) as app:
        await app.send()
        assert app.store.plan_failures() == {}, "a subscriber removed from the config has no failure to show"


async def test_a_feed_whose_papers_cannot_be_read_fails_only_its_own_subscribers(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="notifier")
    templates(tmp_path / "templates", trap=False)
    text = CONFIG.replace("name: broken\n    email: b@lab.example\n    categories: [cs.DC]", "name: sound\n"
                          "    email: s@lab.example\n    categories: [cs.SD]")  # fmt: skip
    clock = Clock()
    async with make_app(tmp_path, clock, text) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler")], clock())
        app.store.ingest("cs.SD", [paper("2506.9", "A compiler for sound", "cs.SD")], clock())
        app.store.db.execute("UPDATE papers SET authors = 'not a list' WHERE arxiv_id = '2506.9'")
        report = await app.cycle(force_send=True, poll=False)
        assert report.plan.failed == ["sound"]
        assert report.plan.subscribers == ["lab", "updates"]
        assert "JSONDecodeError" in app.store.plan_failures()["sound"].reason
    assert sorted(to for to, _text in mails_to(tmp_path)) == ["a@lab.example", "u@lab.example"]
    assert len(errors_about(caplog, "sound")) == 1


@pytest.mark.slow
async def test_once_delivers_everyone_else_and_status_lists_the_failure(tmp_path):
    folder = templates(tmp_path / "templates")
    (tmp_path / "subscribers.yaml").write_text(
        CONFIG.replace("[cs.DC]", "[cs.SD, eess.AS]").replace("query: compiler", "query: music")
    )
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_TEMPLATES=str(folder))
            once = await start_cli("once", env=env)
            _out, err = await asyncio.wait_for(once.communicate(), 60)
            assert once.returncode == 0, err.decode()
            recipients = sorted(to for message in smtp.messages for to in message.rcpt_tos)
            status = await start_cli("status", env=env)
            shown, status_err = await asyncio.wait_for(status.communicate(), 60)
            preview = await start_cli("preview", "broken", env=env)
            _previewed, preview_err = await asyncio.wait_for(preview.communicate(), 60)
    assert recipients == ["a@lab.example", "u@lab.example"]
    assert preview.returncode == 2, "preview plans as the plan does, and fails as it failed"
    assert preview_err.decode().startswith(
        "error: the digest for broken could not be planned: rendering its email digest: UndefinedError:"
    )
    log = err.decode()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "broken" in errors[0] and "no_such_value" in errors[0], log
    assert "Traceback" not in log
    assert status.returncode == 0, status_err.decode()
    lines = shown.decode().splitlines()
    start = lines.index("plan failures: 1")
    assert lines[start + 1].startswith("  broken: failed 1 time since ")
    assert "'no_such_value' is undefined" in lines[start + 1]
