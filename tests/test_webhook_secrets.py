"""A webhook URL is a secret: deliveries to webhooks that are accepted, rate-limited, failing, unknown or on a host
not allowed are logged, recorded and listed by ``notifier status`` by their host alone."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime

import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.store.rows import NewDelivery, NewDigest
from tests.cli import start_cli
from tests.slack_server import SlackServer

CONFIG = """\
subscribers:
  - name: team
    email: team@lab.example
    categories: [cs.DC]
    rules:
      - {name: compilers, query: compiler}
"""
PAYLOAD = b'[{"text": "New papers for team"}]'
NOW = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)


def webhook_delivery(delivery_id: str, url: str) -> NewDelivery:
    return NewDelivery(
        delivery_id=delivery_id,
        channel="slack",
        recipient=url,
        message_id=f"<{delivery_id}@lab.example>",
        payload=PAYLOAD,
        papers=(("2506.00001", 1),),
    )


@pytest.mark.slow
async def test_webhook_secrets_stay_out_of_logs_and_status(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    hooks = {
        "d1": "T01/B01/s3cr3t-ratelimited",  # answered 429 with a long Retry-After
        "d2": "T01/B02/s3cr3t-failing",  # answered 500
        "d3": "T01/B03/s3cr3t-accepted",  # answered 200
        "d4": "T01/B04/s3cr3t-unknown",  # answered 404: a removed webhook
    }
    async with SlackServer(webhooks={hooks["d1"], hooks["d2"], hooks["d3"]}) as slack:
        slack.faults.rate_limit_next, slack.faults.retry_after = 1, 120
        slack.faults.server_error_next = 1
        settings = load_settings(
            {},
            {
                "subscribers": str(tmp_path / "subscribers.yaml"),
                "data_dir": str(tmp_path / "data"),
                "webhook_hosts": f"127.0.0.1:{slack.port}",
            },
        )
        deliveries = [webhook_delivery(key, slack.webhook_url(hook)) for key, hook in sorted(hooks.items())]
        deliveries.append(webhook_delivery("d5", "https://hooks.example.net/services/T01/B05/s3cr3t-elsewhere"))
        async with Notifier(settings, load_config(settings.subscribers, {}), clock=lambda: NOW) as app:
            app.store.record_digests(
                [
                    NewDigest(
                        digest_id="digest-1",
                        subscriber="team",
                        kind="daily",
                        period_start=NOW,
                        period_end=NOW,
                        now=NOW,
                        deliveries=tuple(deliveries),
                        cursor=NOW,
                    )
                ]
            )
            report = await app.send()
        posts = [post.channel for post in slack.posts]

    assert (report.sent, report.retry, report.failed) == (1, 2, 2)
    assert posts == [f"webhook:{hooks['d3']}"]
    assert f"http://127.0.0.1:{slack.port}/…" in caplog.text, "deliveries are logged by their host"
    assert "NOTIFIER_WEBHOOK_HOSTS" in caplog.text, "the refused host names the setting that allows it"
    assert "s3cr3t" not in caplog.text

    environment = {
        "NOTIFIER_SUBSCRIBERS": str(tmp_path / "subscribers.yaml"),
        "NOTIFIER_DATA_DIR": str(tmp_path / "data"),
    }
    process = await start_cli("status", env={**_inherited(), **environment})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    status = out.decode()
    assert process.returncode == 0, err.decode()
    listed = [line for line in status.splitlines() if line.strip().startswith(("retry", "failed"))]
    assert len(listed) == 4, status
    assert "https://hooks.example.net/…" in status
    assert "s3cr3t" not in status + err.decode()


def _inherited() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("NOTIFIER_")}
