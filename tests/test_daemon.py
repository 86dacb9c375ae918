"""The daemon as a process: it stops cleanly (``once`` too), survives kill -9 without losing or repeating mail, keeps
its last good config when an edit is broken, is the only sender on its data directory, and keeps sending while a
stalled arXiv holds a poll, which ends within its time budget; started on a broken edit, ``run`` and ``once`` use
the last config that loaded."""

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

pytestmark = pytest.mark.slow  # each test runs the CLI or the daemon in a child process

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


CARELESS = """\
  - name: careless
    email: "careless@@lab.example"
    categories: [cs.SD]
    rules:
      - {name: everything, query: music}
"""  # its address is line 10 of the file


@pytest.mark.parametrize("command", ["once", "run"])
async def test_a_broken_edit_before_a_start_leaves_everyone_the_last_good_config(tmp_path, command):
    config = tmp_path / "subscribers.yaml"
    config.write_text(config_text(1))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            env = cli_environment(tmp_path, arxiv, smtp)
            first = await start_cli("once", "--no-poll", env=env)  # loads the config, and keeps it
            await asyncio.wait_for(first.communicate(), 60)
            assert first.returncode == 0 and not smtp.messages
            config.write_text(config_text(1) + CARELESS)
            process = await start_cli(command, env=env)
            if command == "run":
                await wait_until(lambda: len(smtp.messages) >= 1)
                process.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(process.communicate(), 60)
    log = err.decode()
    assert process.returncode == (1 if command == "once" else 0), log
    assert "config rejected, using the last good one" in log
    assert "subscribers.yaml:10:12: subscriber 'careless': email:" in log, log
    assert [m.rcpt_tos for m in smtp.messages] == [["reader000@lab.example"]], "the others' digest went out"


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


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int | None, str, str]:
    process = await start_cli(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def wait_for_status(text: str, *, env: dict[str, str], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while text not in (await run_cli("status", env=env))[1]:
        assert time.monotonic() < deadline, f"notifier status never showed {text!r}"
        await asyncio.sleep(0.2)


# -- one sender per data directory ---------------------------------------------------------------------------------


def delivered_once_each(messages, recipients: int) -> None:
    """Every reader got the digest, and no message arrived twice."""
    assert {to for m in messages for to in m.rcpt_tos} == {f"reader{i:03d}@lab.example" for i in range(recipients)}
    repeats = [mid for mid, count in collections.Counter(m.message_id for m in messages).items() if count > 1]
    assert repeats == [], f"{len(repeats)} digests arrived twice"


async def test_a_second_once_beside_a_sending_once_gives_up_with_exit_5_and_nothing_is_sent_twice(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(30))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            smtp.faults.delay = 0.2
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_SMTP_POOL_SIZE="1", NOTIFIER_LOCK_WAIT="0.5")
            first = await start_cli("once", env=env)
            await wait_until(lambda: len(smtp.messages) >= 2)
            second = await start_cli("once", env=env)
            _out, err = await asyncio.wait_for(second.communicate(), 60)
            assert second.returncode == 5, err.decode()
            assert err.decode().strip().splitlines()[-1] == (
                f"error: another notifier is sending from {tmp_path / 'data'} (pid {first.pid}); try again later"
            )
            _out, err = await asyncio.wait_for(first.communicate(), 60)
            assert first.returncode == 0, err.decode()
    delivered_once_each(smtp.messages, 30)


async def test_a_second_once_that_outwaits_the_first_sends_nothing_new(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(20))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            smtp.faults.delay = 0.2
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_SMTP_POOL_SIZE="1", NOTIFIER_LOCK_WAIT="60")
            first = await start_cli("once", env=env)
            await wait_until(lambda: len(smtp.messages) >= 2)
            second = await start_cli("once", env=env)
            results = await asyncio.wait_for(asyncio.gather(first.communicate(), second.communicate()), 90)
            for process, (_out, err) in zip((first, second), results, strict=True):
                assert process.returncode == 0, err.decode()
            assert "waiting up to 60s" in results[1][1].decode()
    assert len(smtp.messages) == 20
    delivered_once_each(smtp.messages, 20)


async def test_status_and_preview_work_beside_a_running_daemon_and_once_does_not_send_beside_it(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(3))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_LOCK_WAIT="0.5")
            daemon = await start_cli("run", env=env)
            await wait_until(lambda: len(smtp.messages) >= 3)
            outputs = {
                args[0]: await run_cli(*args, env=env) for args in (("status",), ("preview", "audio"), ("check",))
            }
            once = await run_cli("once", env=env)
            daemon.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(daemon.communicate(), 15)
            assert daemon.returncode == 0, err.decode()
    for command in ("status", "preview", "check"):
        returncode, _out, err = outputs[command]
        assert returncode == 0, f"{command}: {err}"
    assert "deliveries: sent 3" in outputs["status"][1]
    returncode, _out, err = once
    assert returncode == 5, err
    assert f"another notifier is sending from {tmp_path / 'data'} (pid {daemon.pid})" in err
    assert len(smtp.messages) == 3


async def test_retry_beside_a_running_daemon_queues_the_failed_deliveries_for_it_to_send(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(2))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            smtp.faults.reject = {"reader001@lab.example"}
            env = cli_environment(tmp_path, arxiv, smtp)
            daemon = await start_cli("run", env=env)
            await wait_for_status("deliveries: failed 1, sent 1", env=env)
            smtp.faults.reject.clear()
            retry = await start_cli("retry", env=env)
            out, err = await asyncio.wait_for(retry.communicate(), 60)
            assert retry.returncode == 0, err.decode()
            assert out.decode() == (
                f"1 deliveries queued again; the notifier sending from {tmp_path / 'data'} (pid {daemon.pid})"
                " sends them, or the next run does\n"
            )
            await wait_until(lambda: len(smtp.messages) >= 2)
            daemon.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(daemon.communicate(), 15)
            assert daemon.returncode == 0, err.decode()
    delivered_once_each(smtp.messages, 2)


# -- signals -------------------------------------------------------------------------------------------------------


async def test_sigterm_during_once_lets_the_sends_in_flight_finish_and_nothing_arrives_twice(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(20))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            smtp.faults.delay = 0.3
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_SMTP_POOL_SIZE="2")
            process = await start_cli("once", env=env)
            await wait_until(lambda: len(smtp.messages) >= 4)
            process.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(process.communicate(), 15)
            assert process.returncode == 0, err.decode()
            assert len(smtp.messages) < 20, "stopped before it had sent everything"
            assert "stopped by signal" in out.decode()
            smtp.faults.delay = 0.0
            again = await start_cli("once", env=env)
            _out, err = await asyncio.wait_for(again.communicate(), 60)
            assert again.returncode == 0, err.decode()
    delivered_once_each(smtp.messages, 20)


# -- a stalled arXiv -----------------------------------------------------------------------------------------------


async def test_a_stalled_feed_does_not_stop_the_daemon_from_sending_a_due_digest(tmp_path):
    config = tmp_path / "subscribers.yaml"
    config.write_text(config_text(1))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            env = cli_environment(tmp_path, arxiv, smtp)
            first = await start_cli("once", env=env)
            _out, err = await asyncio.wait_for(first.communicate(), 60)
            assert first.returncode == 0, err.decode()
            assert len(smtp.messages) == 1
            # A new instant subscriber: its first digest holds the stored papers, and is due at once.
            config.write_text(config_text(1) + config_text(1).split("\n", 1)[1].replace("audio", "newcomer"))
            polled = len(arxiv.requests_to("/rss/"))
            arxiv.fail_next("/rss/", "stall", count=100, stall=600)
            daemon = await start_cli("run", env=env)
            await wait_until(lambda: len(smtp.messages) >= 2, seconds=20)
            assert len(arxiv.requests_to("/rss/")) == polled + 1, "the daemon's poll is the one still stalled"
            assert [r.status for r in arxiv.requests_to("/rss/")[polled:]] == [None], "and unanswered"
            daemon.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(daemon.communicate(), 15)
            assert daemon.returncode == 0, err.decode()
    assert smtp.messages[1].rcpt_tos == ["reader000@lab.example"]
    assert "newcomer" in smtp.messages[1].data.decode()


async def test_once_with_a_stalled_feed_finishes_within_the_poll_budget(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(config_text(2))
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        with SmtpServer() as smtp:
            arxiv.fail_next("/rss/", "stall", count=100, stall=600)
            env = cli_environment(tmp_path, arxiv, smtp, NOTIFIER_POLL_TIMEOUT="3", NOTIFIER_REQUEST_TIMEOUT="20")
            began = time.monotonic()
            process = await start_cli("once", env=env)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            took = time.monotonic() - began
    assert process.returncode == 3, err.decode()  # no feed could be fetched
    assert took < 15, f"once took {took:.0f}s"
    assert "feed cs.SD: error: " in out.decode() and "feed eess.AS: error: " in out.decode()
    assert "time budget of 3s (NOTIFIER_POLL_TIMEOUT)" in out.decode()
