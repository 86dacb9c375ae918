"""Slack: SlackChannel through slack-sdk against the local Web API and webhook stand-in."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from notifier.channels.base import Channel
from notifier.channels.router import Channels
from notifier.channels.slack import SlackChannel
from notifier.channels.webhooks import display_recipient, webhook_refusal
from notifier.config.settings import load_settings
from notifier.errors import ConfigError, PermanentDeliveryError, TemporaryDeliveryError
from notifier.models import Outgoing, SlackMessage
from notifier.render.slack import encode_payload
from tests.slack_server import DEFAULT_TOKEN, SlackServer

REPO = Path(__file__).resolve().parents[1]


def parts(n: int) -> list[SlackMessage]:
    return [
        SlackMessage(
            text=f"({i + 1}/{n}) New papers for ada",
            blocks=(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*Paper {i}* <https://arxiv.org/abs/2506.0000{i}>"},
                },
            ),
        )
        for i in range(n)
    ]


def outgoing(recipient: str, n: int = 1, part: int = 0, payload: bytes | None = None) -> Outgoing:
    return Outgoing(
        delivery_id="d1",
        subscriber="ada",
        channel="slack",
        recipient=recipient,
        message_id="digest-1/ada/slack",
        payload=encode_payload(parts(n)) if payload is None else payload,
        part=part,
    )


@pytest.fixture
async def slack():
    async with SlackServer() as server:
        yield server


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def webhook_channel(slack: SlackServer, session: aiohttp.ClientSession, **kwargs) -> SlackChannel:
    """A token-less channel, as the daemon's webhook channel, that may post to the stand-in's host."""
    return SlackChannel(
        token=None, base_url=slack.api_url, session=session, webhook_hosts=[f"127.0.0.1:{slack.port}"], **kwargs
    )


def channel(slack: SlackServer, session: aiohttp.ClientSession | None, **kwargs) -> SlackChannel:
    options = {"token": DEFAULT_TOKEN, "base_url": slack.api_url, "session": session}
    options.update(kwargs)
    return SlackChannel(**options)


async def test_posts_with_unfurling_off(slack, session):
    ch = channel(slack, session)
    assert isinstance(ch, Channel) and ch.kind == "slack"
    await ch.send(outgoing("#papers"))
    (post,) = slack.posts
    assert post.channel == "#papers"
    assert post.text == "(1/1) New papers for ada"
    assert post.blocks == list(parts(1)[0].blocks)
    assert post.unfurl_links is False and post.unfurl_media is False
    await ch.aclose()
    assert not session.closed  # the caller's session stays open


async def test_own_session_is_closed_by_aclose(slack):
    ch = channel(slack, None)
    await ch.send(outgoing("C0123"))
    await ch.aclose()
    await ch.aclose()
    assert len(slack.posts) == 1
    with pytest.raises(TemporaryDeliveryError, match="closed"):
        await ch.send(outgoing("C0123"))


@pytest.mark.slow
async def test_429_then_success_honours_retry_after(slack, session):
    slack.faults.rate_limit_next = 1
    slack.faults.retry_after = 1
    ch = channel(slack, session)
    started = time.monotonic()
    await ch.send(outgoing("#papers"))
    assert time.monotonic() - started >= 1.0
    assert slack.calls == 2 and len(slack.posts) == 1


@pytest.mark.slow
async def test_429_after_retries_is_temporary_with_retry_after(slack, session):
    slack.faults.rate_limit_next = 5
    slack.faults.retry_after = 0
    ch = channel(slack, session, max_retries=2)
    with pytest.raises(TemporaryDeliveryError) as info:
        await ch.send(outgoing("#papers"))
    assert info.value.retry_after == 0
    assert slack.calls == 3 and slack.posts == []


async def test_long_retry_after_goes_back_to_the_outbox(slack, session):
    slack.faults.rate_limit_next = 1
    slack.faults.retry_after = 120
    ch = channel(slack, session)
    started = time.monotonic()
    with pytest.raises(TemporaryDeliveryError, match="ratelimited") as info:
        await ch.send(outgoing("#papers"))
    assert time.monotonic() - started < 1.0
    assert info.value.retry_after == 120


@pytest.mark.parametrize(
    ("setup", "recipient", "token", "error", "hint"),
    [
        (None, "#unknown", DEFAULT_TOKEN, "channel_not_found", "channel name or ID"),
        ("not_in_channel", "#papers", DEFAULT_TOKEN, "not_in_channel", "/invite @yourapp"),
        ("archived", "#papers", DEFAULT_TOKEN, "is_archived", "archived"),
        (None, "#papers", "xoxb-wrong", "invalid_auth", "check NOTIFIER_SLACK_TOKEN"),
    ],
)
async def test_refusals_are_permanent_with_a_hint(slack, session, setup, recipient, token, error, hint):
    if setup == "not_in_channel":
        slack.faults.not_in_channel.add(recipient)
    elif setup == "archived":
        slack.faults.archived.add(recipient)
    ch = channel(slack, session, token=token)
    with pytest.raises(PermanentDeliveryError, match=error) as info:
        await ch.send(outgoing(recipient))
    assert info.value.hint and hint in info.value.hint
    assert "xoxb" not in str(info.value)


async def test_server_error_is_temporary(slack, session):
    slack.faults.server_error_next = 1
    ch = channel(slack, session)
    with pytest.raises(TemporaryDeliveryError):
        await ch.send(outgoing("#papers"))
    await ch.send(outgoing("#papers"))
    assert len(slack.posts) == 1


async def test_unreachable_api_is_temporary(session):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ch = SlackChannel(token=DEFAULT_TOKEN, base_url=f"http://127.0.0.1:{port}/api/", session=session, max_retries=0)
    with pytest.raises(TemporaryDeliveryError, match="cannot reach"):
        await ch.send(outgoing("#papers"))


async def test_missing_token_with_a_channel_is_permanent(slack, session):
    ch = SlackChannel(token=None, base_url=slack.api_url, session=session)
    with pytest.raises(PermanentDeliveryError, match="no Slack token") as info:
        await ch.send(outgoing("#papers"))
    assert info.value.hint == "set NOTIFIER_SLACK_TOKEN"
    assert slack.calls == 0


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"text": "x"}', b'[{"blocks": []}]', b'[{"text": "  "}]', b'[{"text": "x", "blocks": "y"}]'],
)
async def test_malformed_payload_is_permanent(slack, session, payload):
    ch = channel(slack, session)
    with pytest.raises(PermanentDeliveryError, match=r"^Slack payload of digest-1/ada/slack "):
        await ch.send(outgoing("#papers", payload=payload))
    assert slack.calls == 0


async def test_a_payload_stored_by_earlier_versions_still_posts(slack, session):
    """Payloads already in a database were written by json.dumps of the message dicts; they post as they are."""
    stored = (
        b'[{"text": "arXiv digest \\u00b7 Tue 3 Jun \\u00b7 1 paper", "blocks": [{"type": "section", "text": '
        b'{"type": "mrkdwn", "text": "*<https://arxiv.org/abs/2506.00001|A paper>*"}}]}, {"text": "part two"}]'
    )
    ch = channel(slack, session)
    await ch.send(outgoing("#papers", payload=stored))
    first, second = slack.posts
    assert first.text == "arXiv digest · Tue 3 Jun · 1 paper"
    assert first.blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*<https://arxiv.org/abs/2506.00001|A paper>*"}}
    ]
    assert (second.text, second.blocks) == ("part two", None)


async def test_multipart_posts_in_order_and_reports_progress(slack, session):
    done: list[int] = []

    async def progress(n: int) -> None:
        done.append(n)

    ch = channel(slack, session)
    await ch.send(outgoing("#papers", n=3), progress)
    assert done == [1, 2, 3]
    assert [p.text for p in slack.posts] == [f"({i}/3) New papers for ada" for i in (1, 2, 3)]


async def test_multipart_resumes_after_the_accepted_parts(slack, session):
    done: list[int] = []

    async def progress(n: int) -> None:
        done.append(n)
        if n == 1:
            slack.faults.server_error_next = 1  # the second part fails

    ch = channel(slack, session)
    with pytest.raises(TemporaryDeliveryError):
        await ch.send(outgoing("#papers", n=3), progress)
    assert done == [1]
    await ch.send(outgoing("#papers", n=3, part=done[-1]), progress)
    assert done == [1, 2, 3]
    assert [p.text[:5] for p in slack.posts] == ["(1/3)", "(2/3)", "(3/3)"]  # each part exactly once


async def test_webhook_post(slack, session):
    ch = webhook_channel(slack, session)
    await ch.send(outgoing(slack.webhook_url(), n=2))
    assert [p.channel for p in slack.posts] == ["webhook:T000/B000/XXXX"] * 2
    assert slack.posts[0].unfurl_links is False and slack.posts[0].unfurl_media is False
    assert slack.posts[1].text == "(2/2) New papers for ada"


async def test_webhook_unknown_is_permanent(slack, session):
    ch = webhook_channel(slack, session)
    with pytest.raises(PermanentDeliveryError, match="404") as info:
        await ch.send(outgoing(slack.webhook_url("T000/B000/GONE")))
    assert info.value.hint and "webhook" in info.value.hint
    assert "GONE" not in str(info.value)  # the webhook URL is a secret and is not echoed


async def test_webhook_429_and_500_are_temporary(slack, session):
    ch = webhook_channel(slack, session, max_retries=0)
    slack.faults.rate_limit_next = 1
    slack.faults.retry_after = 7
    with pytest.raises(TemporaryDeliveryError) as info:
        await ch.send(outgoing(slack.webhook_url()))
    assert info.value.retry_after == 7
    slack.faults.server_error_next = 1
    with pytest.raises(TemporaryDeliveryError, match="500"):
        await ch.send(outgoing(slack.webhook_url()))
    assert slack.posts == []


async def test_webhook_429_then_success(slack, session):
    slack.faults.rate_limit_next = 1
    slack.faults.retry_after = 0
    ch = webhook_channel(slack, session)
    await ch.send(outgoing(slack.webhook_url()))
    assert len(slack.posts) == 1 and slack.calls == 2


async def test_a_webhook_on_a_host_not_allowed_is_refused_without_a_request(slack, session):
    ch = SlackChannel(token=None, base_url=slack.api_url, session=session)  # no NOTIFIER_WEBHOOK_HOSTS
    with pytest.raises(PermanentDeliveryError, match="NOTIFIER_WEBHOOK_HOSTS") as info:
        await ch.send(outgoing(slack.webhook_url()))
    assert f"http://127.0.0.1:{slack.port}" in str(info.value)
    assert "XXXX" not in str(info.value)
    assert slack.calls == 0


@pytest.mark.parametrize(
    ("url", "allowed", "refused"),
    [
        ("https://hooks.slack.com/services/T0/B0/secret", (), False),
        ("HTTPS://Hooks.Slack.com:443/services/T0/B0/secret", (), False),
        ("http://hooks.slack.com/services/T0/B0/secret", (), True),
        ("https://hooks.slack.com:8443/services/T0/B0/secret", (), True),
        ("https://hooks.slack.com.evil.example/services/T0/B0/secret", (), True),
        ("https://hooks.slack.com@evil.example/services/T0/B0/secret", (), True),
        ("https://evil.example/?to=hooks.slack.com", (), True),
        ("https://user:pw@hooks.slack.com/services/T0/B0/secret", (), True),
        ("https://[::1/x", (), True),
        ("https://mattermost.lab.example/hooks/secret", ("mattermost.lab.example",), False),
        ("http://mattermost.lab.example/hooks/secret", ("mattermost.lab.example",), False),
        ("https://mattermost.lab.example:8065/hooks/secret", ("mattermost.lab.example",), True),
        ("http://127.0.0.1:8065/hooks/secret", ("127.0.0.1:8065",), False),
        ("http://127.0.0.1:8066/hooks/secret", ("127.0.0.1:8065",), True),
        ("http://[::1]:8065/hooks/secret", ("[::1]:8065",), False),
        ("https://hooks.slack.com/services/T0/B0/secret", ("mattermost.lab.example",), False),
    ],
)
def test_webhooks_go_to_slack_and_the_allowed_hosts_only(url, allowed, refused):
    reason = webhook_refusal(url, allowed)
    assert (reason is not None) == refused, reason
    if refused:
        assert "secret" not in reason


def test_a_webhook_is_shown_by_its_host_and_a_fingerprint():
    first = display_recipient("https://hooks.slack.com/services/T0/B0/first-secret")
    second = display_recipient("https://hooks.slack.com/services/T0/B0/second-secret")
    assert first.startswith("https://hooks.slack.com/…") and second.startswith("https://hooks.slack.com/…")
    assert first != second, "two webhooks of one subscriber can be told apart"
    assert display_recipient("https://user:pw@hooks.slack.com/x").startswith("https://hooks.slack.com/…")
    assert display_recipient("#papers") == "#papers"
    assert display_recipient("ann@lab.example") == "ann@lab.example"


async def test_webhook_errors_never_quote_the_url(slack, session):
    secret = "T000/B000/s3cr3t-Zq7x"
    slack.webhooks.add(secret)
    ch = webhook_channel(slack, session, max_retries=0)
    errors: list[str] = []
    for fault in ("rate_limit_next", "server_error_next"):
        setattr(slack.faults, fault, 1)
        with pytest.raises(TemporaryDeliveryError) as info:
            await ch.send(outgoing(slack.webhook_url(secret)))
        errors.append(str(info.value))
    with pytest.raises(PermanentDeliveryError) as refused:
        await ch.send(outgoing(slack.webhook_url("T000/B000/s3cr3t-gone")))
    errors.append(str(refused.value))
    url = slack.webhook_url(secret)
    await slack.close()
    with pytest.raises(TemporaryDeliveryError) as unreachable:
        await ch.send(outgoing(url))
    errors.append(str(unreachable.value))
    for error in errors:
        assert "s3cr3t" not in error, error
        assert f"127.0.0.1:{slack.port}/…" in error, error


def test_webhook_hosts_are_read_from_the_environment_and_checked(tmp_path):
    environ = {
        "NOTIFIER_DATA_DIR": str(tmp_path),
        "NOTIFIER_WEBHOOK_HOSTS": " Chat.Lab.example, 127.0.0.1:8065,[::1]:80,",
    }
    assert load_settings(environ).webhook_hosts == ("chat.lab.example", "127.0.0.1:8065", "[::1]:80")
    with pytest.raises(ConfigError, match=r"^NOTIFIER_WEBHOOK_HOSTS: .*'https://chat.lab.example': a host, not a URL"):
        load_settings({**environ, "NOTIFIER_WEBHOOK_HOSTS": "https://chat.lab.example"})
    with pytest.raises(ValueError, match="port"):
        SlackChannel(token=None, webhook_hosts=["chat.lab.example:0"])


async def test_the_router_sends_every_webhook_through_the_webhook_channel(tmp_path, session):
    settings = load_settings({}, {"data_dir": str(tmp_path), "webhook_hosts": "127.0.0.1:8065"})
    channels = Channels(settings, session)
    try:
        for recipient in ("https://hooks.slack.com/services/T/B/x", "http://127.0.0.1:8065/hooks/x"):
            assert channels.channel_for(outgoing(recipient)) is channels.webhooks
        assert channels.channel_for(outgoing("#papers")) is channels.slack
    finally:
        await channels.aclose()


async def test_control_endpoint_lists_posts(slack, session):
    ch = channel(slack, session)
    await ch.send(outgoing("#papers"))
    async with session.get(f"http://127.0.0.1:{slack.port}/_control/posts") as response:
        posts = await response.json()
    assert posts[0]["channel"] == "#papers" and posts[0]["unfurl_links"] is False


async def test_standalone_server(session):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.slack_server", "--port", "0", cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/api/")
        api_url = line.split()[1]
        ch = SlackChannel(token=DEFAULT_TOKEN, base_url=api_url, session=session)
        await ch.send(outgoing("#papers", n=2))
        async with session.get(api_url.replace("/api/", "/_control/posts")) as response:
            posts = await response.json()
        assert [p["text"][:5] for p in posts] == ["(1/2)", "(2/2)"]
    finally:
        process.terminate()
        assert await process.wait() == 0
