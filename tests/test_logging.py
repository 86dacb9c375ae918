"""Logs as operators ship them: JSON lines, debug detail on, never a credential, whether delivery works or not."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from pathlib import Path

import pytest

from notifier.cli import setup_logging
from notifier.logs import RepeatFilter
from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli
from tests.slack_server import SlackServer
from tests.smtp_server import SmtpServer, make_self_signed, server_tls_context

ROOT = Path(__file__).resolve().parents[1]
SMTP_USER = "digest-bot"
SMTP_PASSWORD = "pw-Zq7x-smtp-secret-4471"
SLACK_TOKEN = "xoxb-4471-slack-secret-Zq7x"
CONFIG = """\
subscribers:
  - name: audio
    email: [ann@lab.example, bob@lab.example]
    slack: "#papers"
    categories: [cs.SD, eess.AS]
    schedule: instant
    rules:
      - name: music
        query: music
"""


def secret_forms() -> list[str]:
    """The secrets as they could leak: plain, and as SMTP AUTH PLAIN / LOGIN would encode them."""
    plain = [SMTP_PASSWORD, SLACK_TOKEN]
    encoded = [
        base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode(),
        base64.b64encode(SMTP_PASSWORD.encode()).decode(),
    ]
    return plain + encoded


@pytest.mark.parametrize("accepted", [True, False], ids=["credentials-accepted", "credentials-refused"])
@pytest.mark.slow
async def test_json_debug_logs_parse_line_by_line_and_never_show_a_secret(tmp_path, accepted):
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    cert, key = make_self_signed(tmp_path)
    login = (SMTP_USER, SMTP_PASSWORD if accepted else "another-password")
    async with (
        ArxivStandIn(day="2025-06-03") as arxiv,
        SlackServer(token=SLACK_TOKEN if accepted else "xoxb-another-token", channels={"#papers"}) as slack,
    ):
        with SmtpServer(starttls_context=server_tls_context(cert, key), login=login) as smtp:
            env = cli_environment(
                tmp_path,
                arxiv,
                smtp,
                NOTIFIER_SMTP_SECURITY="starttls",
                NOTIFIER_SMTP_VALIDATE_CERTS="false",
                NOTIFIER_SMTP_USERNAME=SMTP_USER,
                NOTIFIER_SMTP_PASSWORD=SMTP_PASSWORD,
                NOTIFIER_SLACK_TOKEN=SLACK_TOKEN,
                NOTIFIER_SLACK_API_URL=slack.api_url,
                NOTIFIER_LOG_FORMAT="json",
            )
            process = await start_cli("once", "-v", env=env)
            out, err = await asyncio.wait_for(process.communicate(), 90)
            received = len(smtp.messages)
        posts = len(slack.posts)
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == (0 if accepted else 4), stderr  # 4: refused logins fail the deliveries for good
    if accepted:
        assert (received, posts) == (2, 1), "the logins were used and worked"
        assert "deliveries: 3 sent" in stdout
    else:
        assert (received, posts) == (0, 0)
        assert "3 failed" in stdout

    for form in secret_forms():
        assert form not in stdout, f"a secret on stdout: {form[:6]}..."
        assert form not in stderr, f"a secret in the logs: {form[:6]}..."

    entries = [json.loads(line) for line in stderr.splitlines()]
    assert entries, "the run logged something"
    for entry in entries:
        assert set(entry) >= {"time", "level", "logger", "message"}, entry
    assert any(entry["logger"] == "notifier.outbox.sender" for entry in entries), "deliveries were logged"
    if not accepted:
        assert any(entry["level"] == "error" and "535" in entry["message"] for entry in entries), stderr


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def repeat_logged(window: float = 60.0) -> tuple[logging.Logger, io.StringIO, FakeClock]:
    """A logger of its own whose one handler writes ``name: message`` lines through a RepeatFilter."""
    stream, clock = io.StringIO(), FakeClock()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(RepeatFilter(handler, window=window, clock=clock))
    logger = logging.getLogger(f"flood.{id(stream)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, stream, clock


def test_a_flood_of_one_error_is_logged_once_then_summarised():
    logger, stream, clock = repeat_logged()
    for _ in range(10_000):
        logger.error("socket.accept() out of system resource")
    logger.error("another failure")
    logger.info("sending %d due deliveries", 50)
    logger.info("sending %d due deliveries", 50)  # lines below warnings are never held back
    clock.now += 61
    logger.warning("the next warning")
    name = logger.name
    assert stream.getvalue().splitlines() == [
        f"{name}: socket.accept() out of system resource",
        f"{name}: another failure",
        f"{name}: sending 50 due deliveries",
        f"{name}: sending 50 due deliveries",
        f"{name}: socket.accept() out of system resource (repeated 9999 more times within 60 s)",
        f"{name}: the next warning",
    ]


def test_a_repeat_after_the_window_is_logged_again():
    logger, stream, clock = repeat_logged(window=5)
    logger.error("store unreachable")
    clock.now += 6
    logger.error("store unreachable")
    assert stream.getvalue().splitlines() == [f"{logger.name}: store unreachable"] * 2


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for noisy in ("aiosmtplib", "slack_sdk", "asyncio", "mail.log"):
            logging.getLogger(noisy).setLevel(logging.NOTSET)


def test_the_command_line_logging_holds_back_a_flood(restored_logging, capsys):
    setup_logging(False, "json")
    log = logging.getLogger("asyncio")
    for _ in range(1000):
        log.error("socket.accept() out of system resource", exc_info=OSError(24, "Too many open files"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines[:3]
    assert json.loads(lines[0])["message"] == "socket.accept() out of system resource"
