"""The daemon as a process: it stops cleanly, survives kill -9 without losing or repeating mail, and keeps its
last good config when an edit is broken."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path

import pytest

from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli
from tests.smtp_server import SmtpServer

ROOT = Path(__file__).resolve().parents[1]


def config_text(recipients: int, schedule: str = "instant") -> str:
    emails = ", ".join(f"reader{i:03d}@lab.example" for i in range(recipients))
    return f"""\
subscribers:
  - name: audio
    email: [{emails}]
    categories: [cs.SD, eess.AS]
    schedule: "{schedule}"
    rules:
      - name: music
        query: music
"""


async def wait_until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_kill_9_mid_send_loses_nothing_and_repeats_at_most_the_message_in_flight(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(40))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            smtp.faults.delay = 0.1  # a slow server: each message takes a while to be accepted
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_SMTP_POOL_SIZE="1")
            process = await start_cli("once", env=env)
            await wait_until(lambda: len(smtp.messages) >= 10)
            process.kill()  # SIGKILL: no chance to clean up
            await process.wait()
            smtp.faults.delay = 0.0
            again = await start_cli("once", env=env)
            _out, err = await asyncio.wait_for(again.communicate(), 60)
            assert again.returncode == 0, err.decode()
            ids = [m.message_id for m in smtp.messages]
            recipients = {to for m in smtp.messages for to in m.rcpt_tos}
    assert recipients == {f"reader{i:03d}@lab.example" for i in range(40)}, "every reader got the digest"
    repeats = [mid for mid, count in collections.Counter(ids).items() if count > 1]
    assert len(repeats) <= 1, f"at most the one message in flight arrives twice, not {repeats}"


async def test_sigterm_stops_the_daemon_cleanly_after_it_has_sent(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(3))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            process = await start_cli("run", env=cli_environment(tmp_path, arxiv, smtp))
            await wait_until(lambda: len(smtp.messages) >= 3)
            process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            _out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, err.decode()
    assert time.monotonic() - began < 6
    assert "daemon stopping" in err.decode()


async def test_a_broken_edit_is_rejected_and_the_daemon_keeps_its_last_good_config(tmp_path):
    config = tmp_path / "subscribers.yaml"
    config.write_text(config_text(1))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            process = await start_cli("run", env=cli_environment(tmp_path, arxiv, smtp))
            await wait_until(lambda: len(smtp.messages) >= 1)
            config.write_text(config_text(1).replace("query: music", "query: '(music'"))
            os.utime(config, (time.time() + 5, time.time() + 5))
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(1.5)
            assert process.returncode is None, "still running"
            process.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(process.communicate(), 15)
    log = err.decode()
    assert process.returncode == 0, log
    assert "config rejected, keeping the last good one" in log
    assert "subscribers.yaml:8:17:" in log, log


@pytest.mark.parametrize("command", ["once", "status"])
async def test_a_fresh_install_runs_with_no_credentials(tmp_path, command):
    (tmp_path / "subscribers.yaml").write_text(config_text(2))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "NOTIFIER_SUBSCRIBERS": str(tmp_path / "subscribers.yaml"),
            "NOTIFIER_ARXIV_RSS_URL": arxiv.rss_base_url,
            "NOTIFIER_MIN_REQUEST_INTERVAL": "0.2",
        }
        process = await start_cli(command, env=env)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    data = tmp_path / ".local" / "share" / "arxiv-notifier"
    assert str(data) in out.decode()
    if command == "once":
        assert len(list((data / "outbox" / "email").glob("*.eml"))) == 2


async def test_a_renamed_subscriber_keeps_its_history_and_is_sent_nothing_twice(tmp_path):
    config = tmp_path / "subscribers.yaml"
    config.write_text(config_text(2, schedule="daily 08:00 UTC"))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            env = cli_environment(tmp_path, arxiv, smtp)
            first = await start_cli("once", env=env)
            _out, err = await asyncio.wait_for(first.communicate(), 60)
            assert first.returncode == 0, err.decode()
            sent = len(smtp.messages)
            assert sent == 2
            config.write_text(config_text(2, schedule="daily 08:00 UTC").replace("name: audio", "name: audio-lab"))
            rename_process = await start_cli("rename", "audio", "audio-lab", env=env)
            out, err = await asyncio.wait_for(rename_process.communicate(), 30)
            assert rename_process.returncode == 0, err.decode()
            assert "now belongs to 'audio-lab'" in out.decode()
            again = await start_cli("once", env=env)
            _out, err = await asyncio.wait_for(again.communicate(), 60)
            assert again.returncode == 0, err.decode()
            assert len(smtp.messages) == sent, "the renamed subscriber is not sent the same papers again"
