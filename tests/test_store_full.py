"""A full database or disk: a clear StoreError, nothing half-written, the daemon alive, and once there is room again
everything is delivered exactly once.

SQLite's own limit stands in for a full disk: ``PRAGMA max_page_count`` set to the file's size, with the free pages
used up, makes every write that needs a page fail with SQLITE_FULL, the error a full disk gives. The process test
runs the real daemon on a small tmpfs (it needs the right to mount one, and is skipped otherwise).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.errors import StoreError
from notifier.models import Paper
from notifier.store.rows import NewDelivery, NewDigest
from notifier.store.sqlite import SqliteStore
from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli
from tests.smtp_server import SmtpServer
from tests.test_outbox import CONFIG, Clock, outbox_files, paper

FULL = "the database is full or the disk is out of space"
T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)


def fill(db: sqlite3.Connection) -> None:
    """Let the database grow no more, and use up its free pages: every write that needs a page now fails."""
    db.execute("CREATE TABLE IF NOT EXISTS ballast (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    rows = 1024
    while rows:
        try:
            db.execute(
                """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                   INSERT INTO ballast SELECT randomblob(32) FROM n""",
                (rows,),
            )
        except sqlite3.OperationalError:
            rows //= 2


def fill_for_outcomes(db: sqlite3.Connection) -> None:
    """:func:`fill`, and every change of a delivery needs a page too. A delivery's row is small (its payload is
    apart) and changes in place, in a page the file has: on a full disk such a write fails only when the log it is
    appended to must grow. A trigger of this connection alone stands in for that, adding a page of ballast."""
    fill(db)
    db.execute(
        """CREATE TEMP TRIGGER IF NOT EXISTS outcomes_need_room AFTER UPDATE ON main.deliveries
           BEGIN INSERT INTO ballast VALUES (randomblob(8192)); END"""
    )


def lift(db: sqlite3.Connection) -> None:
    """Room again, as when space has been freed on the disk."""
    db.execute("PRAGMA max_page_count = 1000000000")


def papers(count: int) -> list[Paper]:
    return [
        Paper(
            arxiv_id=f"2506.{i:05d}",
            version=1,
            title=f"Compilers, part {i}",
            abstract="A long abstract. " * 100,
            authors=("Ada Lovelace",),
            categories=("cs.DC",),
            announce_type="new",
            announced=date(2025, 6, 3),
        )
        for i in range(count)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "notifier.sqlite3")
    try:
        yield opened
    finally:
        opened.close()


def test_a_full_database_is_a_clear_store_error_and_the_transaction_writes_nothing(store):
    fill(store.db)
    with pytest.raises(StoreError, match=FULL) as info:
        store.ingest("cs.DC", papers(50), T0)
    assert "cannot rollback" not in str(info.value)
    assert str(store.path) in str(info.value)
    assert store.paper_count() == 0, "nothing of the batch was kept"
    store.ping()
    lift(store.db)
    assert store.ingest("cs.DC", papers(50), T0) == 50


def test_driver_errors_from_reads_and_writes_become_store_errors(store):
    store.db.execute("DROP TABLE delivery_papers")  # every statement that names it now fails in SQLite
    delivery = NewDelivery("x1", "email", "a@lab.example", "<x1@lab.example>", b"mail", (("2506.1", 1),))
    with pytest.raises(StoreError, match="no such table: delivery_papers"):
        store.reserved_versions("lab", "email", "a@lab.example")
    with pytest.raises(StoreError, match="no such table: delivery_papers"):
        store.record_digests(
            [
                NewDigest(
                    digest_id="d1",
                    subscriber="lab",
                    kind="daily",
                    period_start=T0,
                    period_end=T0,
                    now=T0,
                    deliveries=(delivery,),
                    cursor=T0,
                )
            ]
        )
    assert store.delivery_counts() == {}, "the digest's transaction was rolled back"


def test_only_outcomes_the_database_could_not_take_are_reported_as_late(store, caplog):
    deliveries = tuple(
        NewDelivery(f"x{i}", "email", f"{i}@lab.example", f"<x{i}@lab.example>", b"mail", ()) for i in (1, 2, 3)
    )
    store.record_digests([NewDigest("d1", "lab", "daily", T0, T0, T0, deliveries, T0)])
    caplog.set_level("INFO", logger="notifier.store")
    store.mark_all_sent([("x1", T0), ("x2", T0)])
    assert "could not take" not in caplog.text, "two outcomes written together were not late"

    fill_for_outcomes(store.db)
    store.mark_sent("x3", T0)  # kept, not raised
    assert "cannot record that delivery x3 is sent" in caplog.text
    lift(store.db)
    store.claim_due(T0, owner="me", lease=timedelta(minutes=5), limit=10)
    assert "store: recorded 1 delivery outcomes the database could not take before" in caplog.text
    assert store.delivery_counts() == {"sent": 3}


def test_a_file_that_is_not_a_database_is_a_store_error_naming_it(tmp_path):
    path = tmp_path / "notifier.sqlite3"
    path.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(StoreError, match=r"cannot open the database .*notifier\.sqlite3: file is not a database"):
        SqliteStore(path)


async def test_a_full_disk_while_planning_writes_nothing_and_the_next_cycle_delivers_everything_once(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG)
    settings = load_settings({}, {"subscribers": str(path), "data_dir": str(tmp_path / "data")})
    clock = Clock()
    async with Notifier(settings, load_config(path, {}), clock=clock) as app:
        app.store.ingest("cs.DC", [paper("2506.1", "A compiler for GPUs")], clock())
        fill(app.store.db)
        with pytest.raises(StoreError, match=FULL):
            await app.cycle(force_send=True, poll=False)
        assert app.store.delivery_counts() == {}
        assert [state.cursor for state in app.store.subscriber_states().values()] == [None, None]
        assert outbox_files(tmp_path, "email") == []

        lift(app.store.db)
        clock.now += timedelta(seconds=10)
        report = await app.cycle(force_send=True, poll=False)
        assert report.sent.sent == 4
        clock.now += timedelta(seconds=10)
        again = await app.cycle(force_send=True, poll=False)
        assert again.plan.deliveries == 0 and again.sent.sent == 0
        assert app.store.delivery_counts() == {"sent": 4}
    assert len(outbox_files(tmp_path, "email")) == 3


MAIL_ONLY = """\
subscribers:
  - name: lab
    email: [a@lab.example, b@lab.example]
    categories: [cs.DC]
    rules: [{name: compilers, query: compiler}]
  - name: updates
    email: u@lab.example
    categories: [cs.DC]
    rules: [{name: compilers, query: compiler}]
"""


async def test_outcomes_a_full_database_cannot_take_are_written_later_and_nothing_is_sent_twice(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(MAIL_ONLY)
    clock = Clock()
    with SmtpServer() as smtp:
        smtp.faults.delay = 0.3  # the disk fills up while the three messages are on their way
        smtp.faults.fail_next, smtp.faults.fail_reply = 1, "554 5.6.0 Message refused"  # one is marked failed
        environ = {
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(smtp.port),
            "NOTIFIER_SMTP_SECURITY": "none",
        }
        settings = load_settings(environ, {"subscribers": str(path), "data_dir": str(tmp_path / "data")})
        async with Notifier(settings, load_config(path, {}), clock=clock) as app:
            app.store.ingest("cs.DC", [paper("2506.1", "A compiler for GPUs")], clock())
            await app.plan(force=True)
            sending = asyncio.create_task(app.send())
            while app.store.delivery_counts() != {"sending": 3}:
                assert not sending.done(), "the three are on their way for 0.3 s"
                await asyncio.sleep(0.01)
            fill_for_outcomes(app.store.db)
            with pytest.raises(StoreError, match=FULL):
                await sending  # the next claim must write the outcomes first, and cannot
            assert len(smtp.messages) == 2, "two were accepted, one refused"
            assert app.store.delivery_counts() == {"sending": 3}, "the outcomes are kept, not yet written"
            clock.now += timedelta(minutes=10)  # the leases have expired
            with pytest.raises(StoreError, match=FULL):
                await app.send()
            assert len(smtp.messages) == 2, "nothing is claimed again while its outcome is unwritten"

            lift(app.store.db)
            clock.now += timedelta(seconds=10)
            again = await app.send()
            assert (again.sent, again.failed) == (0, 0)
            assert app.store.delivery_counts() == {"sent": 2, "failed": 1}
            (failed,) = app.store.deliveries(("failed",))
            assert failed.last_error is not None and "554" in failed.last_error
    accepted = sorted(to for message in smtp.messages for to in message.rcpt_tos)
    assert sorted([*accepted, failed.recipient]) == ["a@lab.example", "b@lab.example", "u@lab.example"]


# -- the daemon as a process, on a disk that fills up -----------------------------------------------------------

DAEMON_CONFIG = """\
subscribers:
  - name: audio
    email: [ann@lab.example, bob@lab.example]
    categories: [cs.SD, eess.AS]
    schedule: instant
    rules:
      - name: music
        query: music
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, mounted for the test (needs the right to mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(mount: Path, leave: int) -> Path:
    """Write a file that leaves ``leave`` bytes free on ``mount``."""
    stats = os.statvfs(mount)
    ballast = mount / "ballast"
    ballast.write_bytes(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))
    return ballast


@pytest.mark.slow
async def test_the_daemon_stays_up_on_a_full_disk_and_delivers_once_there_is_room(tmp_path, small_disk):
    (tmp_path / "subscribers.yaml").write_text(DAEMON_CONFIG)
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_DATA_DIR=str(small_disk))
            setup = await start_cli("status", env=env)  # creates the database while there is room
            await asyncio.wait_for(setup.communicate(), 60)
            ballast = fill_disk(small_disk, leave=96 * 1024)
            process = await start_cli("run", env=env)
            try:
                log = b""
                deadline = time.monotonic() + 30
                while FULL.encode() not in log:
                    assert time.monotonic() < deadline, log.decode()
                    assert process.stderr is not None
                    line = await asyncio.wait_for(process.stderr.readline(), 30)
                    assert line, f"the daemon exited:\n{log.decode()}"
                    log += line
                await asyncio.sleep(1)
                assert process.returncode is None, log.decode()
                assert smtp.messages == []
                status = await start_cli("status", env=env)
                shown, status_err = await asyncio.wait_for(status.communicate(), 60)
                assert status.returncode == 0, status_err.decode()
                assert "plan failures: none" in shown.decode(), "status works on a full disk"
                ballast.unlink()
                deadline = time.monotonic() + 60
                while len(smtp.messages) < 2:
                    assert time.monotonic() < deadline, "nothing was sent once there was room"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1)
            finally:
                if process.returncode is None:
                    process.terminate()
                _out, rest = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert "Traceback" not in log.decode() + rest.decode()
    assert f"cycle failed, will try again: {FULL}: {small_disk / 'notifier.sqlite3'}" in log.decode()
    assert sorted(to for message in smtp.messages for to in message.rcpt_tos) == ["ann@lab.example", "bob@lab.example"]
