"""The daemon's HTTP face, served on a free local port by a real Notifier and asked with a real HTTP client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.models import Paper
from notifier.web.server import HttpServer, describe_config_error
from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment
from tests.clock import Clock

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_URL = "https://notifier.lab.example"
CONFIG = """\
subscribers:
  - name: audio
    email: [ann@lab.example, bob@lab.example]
    slack: "#papers"
    categories: [cs.SD, eess.AS]
    rules:
      - name: music
        query: music
"""


class Served:
    """A Notifier with its HTTP server, a client session, and the clock they share."""

    def __init__(self, app: Notifier, server: HttpServer, session: aiohttp.ClientSession, clock: Clock):
        self.app = app
        self.server = server
        self.session = session
        self.clock = clock

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.url(path)) as response:
            return response.status, await response.text()

    async def post(self, path: str, data: object) -> tuple[int, str]:
        async with self.session.post(self.url(path), data=data) as response:
            return response.status, await response.text()


@pytest.fixture
async def arxiv() -> AsyncIterator[ArxivStandIn]:
    async with ArxivStandIn(day="2025-06-03") as server:
        yield server


@pytest.fixture
async def served(tmp_path: Path, arxiv: ArxivStandIn) -> AsyncIterator[Served]:
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG)
    environ = {
        "NOTIFIER_SUBSCRIBERS": str(path),
        "NOTIFIER_DATA_DIR": str(tmp_path / "data"),
        "NOTIFIER_ARXIV_RSS_URL": arxiv.rss_base_url,
        "NOTIFIER_ARXIV_API_URL": arxiv.api_url,
        "NOTIFIER_MIN_REQUEST_INTERVAL": "0",
        "NOTIFIER_PUBLIC_URL": PUBLIC_URL,
        "NOTIFIER_HTTP_ADDR": "127.0.0.1:0",
    }
    settings = load_settings(environ)
    clock = Clock()
    async with (
        Notifier(settings, load_config(path, {}), clock=clock) as app,
        HttpServer(app, settings.http_host, settings.http_port) as server,
        aiohttp.ClientSession() as session,
    ):
        yield Served(app, server, session, clock)


def unsubscribe_path(served: Served, address: str) -> str:
    return "/unsubscribe?" + served.app.unsubscribe_links.query("audio", address)


async def test_healthz_answers_ok(served):
    assert await served.get("/healthz") == (200, "ok\n")


async def test_readyz_is_ready_then_names_a_rejected_config_and_a_stale_feed(served):
    await served.app.cycle(force_send=True)
    status, body = await served.get("/readyz")
    assert status == 200, body
    served.app.config_error = "/etc/notifier/subscribers.yaml:8:17: query: missing ')'"
    served.clock.now += timedelta(days=7, hours=6)  # a week of announcements never seen: the feed is stale
    async with served.session.get(served.url("/readyz")) as response:
        assert response.status == 503
        problems = await response.json()
    assert problems == {
        "ready": False,
        "config": "rejected at line 8: query: missing ')'",
        "feeds": {"cs.SD": "stale", "eess.AS": "stale"},
    }


def test_a_config_error_without_a_place_is_still_described():
    assert describe_config_error("cannot read the subscribers file") == "rejected: cannot read the subscribers file"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name} {labels} not in\n{text}"
    return float(found[1])


async def test_metrics_count_polls_papers_digests_and_deliveries_after_a_cycle(served):
    report = await served.app.cycle(force_send=True)
    assert report.sent.sent == 3
    status, text = await served.get("/metrics")
    assert status == 200
    for feed in ("cs.SD", "eess.AS"):
        assert sample(text, "notifier_feed_polls_total", feed=feed, outcome="ok") == 1
    assert sample(text, "notifier_papers_ingested_total") == sum(poll.new_items for poll in report.polls) > 0
    assert sample(text, "notifier_digests_total") == 1
    assert sample(text, "notifier_matches_total") == report.plan.papers > 0
    assert sample(text, "notifier_deliveries_total", channel="email", state="sent") == 2
    assert sample(text, "notifier_deliveries_total", channel="slack", state="sent") == 1
    assert sample(text, "notifier_delivery_latency_seconds_count") == 3
    assert sample(text, "notifier_outbox_deliveries", state="sent") == 3
    assert sample(text, "notifier_outbox_deliveries", state="pending") == 0
    assert sample(text, "notifier_feed_last_announcement_timestamp_seconds", feed=feed) == served.clock.now.timestamp()


async def test_the_unsubscribe_link_shows_a_confirm_form_and_changes_nothing(served):
    status, page = await served.get(unsubscribe_path(served, "ann@lab.example"))
    assert status == 200
    assert '<form method="post"' in page and 'name="List-Unsubscribe" value="One-Click"' in page
    assert "ann@lab.example" in page
    assert served.app.store.unsubscribed("audio") == set()


async def test_one_click_post_unsubscribes_and_the_next_digest_skips_the_address(served):
    await served.app.poll()
    assert (await served.app.plan(force=True)).deliveries == 3
    path = unsubscribe_path(served, "Ann@Lab.example")
    status, page = await served.post(path, {"List-Unsubscribe": "One-Click"})
    assert status == 200, page
    assert served.app.store.unsubscribed("audio") == {"ann@lab.example"}
    assert served.app.store.delivery_counts() == {"pending": 2, "cancelled": 1}, "her pending digest is cancelled"
    assert (await served.post(path, {"List-Unsubscribe": "One-Click"}))[0] == 200, "a second click is fine too"

    served.clock.now += timedelta(days=1)
    new = Paper(
        arxiv_id="2506.99999",
        version=1,
        title="Music from nowhere",
        abstract="A new paper about music.",
        authors=("Ada Lovelace",),
        categories=("cs.SD",),
        announce_type="new",
        announced=date(2025, 6, 4),
    )
    served.app.store.ingest("cs.SD", [new], served.clock())
    served.clock.now += timedelta(minutes=1)
    report = await served.app.plan(force=True)
    assert report.deliveries == 2, "bob and #papers"
    to_ann = [row.state for row in served.app.store.deliveries() if row.recipient == "ann@lab.example"]
    assert to_ann == ["cancelled"]


async def test_the_confirm_form_posts_back_to_the_same_link(served):
    status, page = await served.get(unsubscribe_path(served, "bob@lab.example"))
    assert status == 200
    action = re.search(r'action="([^"]+)"', page)
    assert action
    target = urlsplit(action[1].replace("&amp;", "&"))
    assert target.path == "unsubscribe"  # relative, so it works behind a proxy that adds a path prefix
    status, _page = await served.post(f"/unsubscribe?{target.query}", {"List-Unsubscribe": "One-Click"})
    assert status == 200
    assert served.app.store.unsubscribed("audio") == {"bob@lab.example"}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_bad_token_is_forbidden_and_says_nothing_more(served, method):
    token = served.app.unsubscribe_links.token("audio", "ann@lab.example")
    tries = [
        {"s": "audio", "a": "ann@lab.example", "t": ("B" if token[0] == "A" else "A") + token[1:]},
        {"s": "audio", "a": "bob@lab.example", "t": token},  # ann's token for bob's address
        {"s": "other", "a": "ann@lab.example", "t": token},
        {"s": "audio", "a": "ann@lab.example"},
        {},
    ]
    for params in tries:
        async with served.session.request(
            method, served.url("/unsubscribe"), params=params, data={"List-Unsubscribe": "One-Click"}
        ) as response:
            assert response.status == 403
            page = await response.text()
        assert "lab.example" not in page and "audio" not in page
    assert served.app.store.unsubscribed("audio") == set()


async def test_a_post_without_the_one_click_body_does_not_unsubscribe(served):
    status, _page = await served.post(unsubscribe_path(served, "ann@lab.example"), {"other": "x"})
    assert status == 400
    assert served.app.store.unsubscribed("audio") == set()


def dockerfile_healthcheck() -> list[str]:
    """The HEALTHCHECK command of the Dockerfile, as an argument list."""
    text = (ROOT / "Dockerfile").read_text()
    found = re.search(r"^HEALTHCHECK .*?CMD (\[[^\n]*\])$", text, re.MULTILINE | re.DOTALL)
    assert found
    return list(json.loads(found[1]))


async def test_notifier_run_serves_http_until_sigterm_and_the_docker_healthcheck_passes(tmp_path, arxiv):
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    env = cli_environment(tmp_path, arxiv, NOTIFIER_HTTP_ADDR="127.0.0.1:0")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "run", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    port = None
    lines: list[str] = []
    while port is None:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line, "".join(lines)
        lines.append(line)
        if found := re.search(r"http listening on 127\.0\.0\.1:(\d+)", line):
            port = int(found[1])
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        assert response.status == 200

    program, *args = dockerfile_healthcheck()
    assert program == "python", shlex.join(args)
    check_env = {"PATH": os.environ["PATH"], "NOTIFIER_HTTP_ADDR": f"0.0.0.0:{port}"}
    check = await asyncio.create_subprocess_exec(sys.executable, *args, env=check_env)
    assert await asyncio.wait_for(check.wait(), 15) == 0

    process.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, "".join(lines) + err.decode()
    refused = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=check_env, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(refused.wait(), 15) == 1, "the healthcheck fails once the daemon is gone"
