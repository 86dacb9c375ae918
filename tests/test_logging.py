"""Logs as operators ship them: JSON lines, debug detail on, never a credential, whether delivery works or not."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

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
    assert process.returncode == 0, stderr
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
    assert any(entry["logger"] == "notifier.sender" for entry in entries), "deliveries were logged"
    if not accepted:
        assert any(entry["level"] == "error" and "535" in entry["message"] for entry in entries), stderr
