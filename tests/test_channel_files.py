"""Files: the outbox-folder channel used for dry runs and the embedded default."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import strict

import pytest

from notifier.channels.base import Channel
from notifier.channels.files import FileChannel, safe_name
from notifier.errors import TemporaryDeliveryError
from notifier.models import Outgoing, RenderedEmail, SlackMessage
from notifier.render.mime import build_email
from notifier.render.slack import encode_payload


def outgoing(channel: str, message_id: str, payload: bytes) -> Outgoing:
    return Outgoing("d1", "ada", channel, "ada@example.org", message_id, payload)


async def test_email_is_written_as_eml(tmp_path):
    payload = build_email(
        RenderedEmail("Subject", "text", "<p>html</p>"),
        sender="digest@example.org",
        recipient="ada@example.org",
        message_id="<0123abcd@example.org>",
        date=datetime(2025, 6, 3, tzinfo=UTC),
        list_id="digest.example.org",
        unsubscribe_url=None,
    )
    ch = FileChannel(tmp_path, "email")
    assert isinstance(ch, Channel) and ch.kind == "email"
    await ch.send(outgoing("email", "<0123abcd@example.org>", payload))
    path = tmp_path / "email" / "0123abcd@example.org.eml"
    assert path.read_bytes() == payload
    assert BytesParser(policy=strict).parsebytes(path.read_bytes())["Message-ID"] == "<0123abcd@example.org>"
    await ch.aclose()
    await ch.aclose()


async def test_slack_is_written_as_json_and_rewriting_is_harmless(tmp_path):
    payload = encode_payload([SlackMessage(text="hello", blocks=())])
    ch = FileChannel(tmp_path, "slack")
    message = outgoing("slack", "digest-1/ada/slack", payload)
    await ch.send(message)
    await ch.send(message)
    files = sorted(p.name for p in (tmp_path / "slack").iterdir())
    assert files == ["digest-1_ada_slack.json"]  # one file, no temporary files left behind
    assert json.loads((tmp_path / "slack" / files[0]).read_bytes()) == [{"text": "hello", "blocks": []}]


async def test_an_outbox_folder_removed_between_writes_is_made_again(tmp_path):
    ch = FileChannel(tmp_path / "outbox", "slack")
    first = outgoing("slack", "first", encode_payload([SlackMessage(text="one", blocks=())]))
    second = outgoing("slack", "second", encode_payload([SlackMessage(text="two", blocks=())]))
    await ch.send(first)
    shutil.rmtree(tmp_path / "outbox")  # someone cleared the outbox
    await ch.send(second)
    assert sorted(p.name for p in (tmp_path / "outbox" / "slack").iterdir()) == ["second.json"]


async def test_messages_sent_at_once_are_written_together_and_one_that_fails_fails_alone(tmp_path):
    ch = FileChannel(tmp_path, "slack", writers=2)
    messages = [outgoing("slack", f"m{i}", encode_payload([SlackMessage(text=f"n{i}", blocks=())])) for i in range(7)]
    (tmp_path / "slack" / "m3.json").mkdir(parents=True)  # a folder where m3's file should go: it cannot be written
    outcomes = await asyncio.gather(*(ch.send(message) for message in messages), return_exceptions=True)
    assert [i for i, outcome in enumerate(outcomes) if outcome is not None] == [3]
    assert isinstance(outcomes[3], TemporaryDeliveryError)
    assert "cannot write" in str(outcomes[3]) and "m3.json" in str(outcomes[3])
    for i in (0, 1, 2, 4, 5, 6):
        assert json.loads((tmp_path / "slack" / f"m{i}.json").read_bytes()) == [{"text": f"n{i}", "blocks": []}]
    assert sorted(p.name for p in (tmp_path / "slack").iterdir() if p.name.startswith(".")) == []  # no temporaries


async def test_a_send_given_up_before_its_turn_writes_nothing(tmp_path):
    ch = FileChannel(tmp_path, "slack")
    kept = asyncio.create_task(ch.send(outgoing("slack", "kept", encode_payload([]))))
    dropped = asyncio.create_task(ch.send(outgoing("slack", "dropped", encode_payload([]))))
    await asyncio.sleep(0)  # both handed over; the write waits for the end of this turn of the event loop
    dropped.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert sorted(p.name for p in (tmp_path / "slack").iterdir()) == ["kept.json"]


@pytest.mark.parametrize(
    ("message_id", "name"),
    [("<abc@x.org>", "abc@x.org"), ("../../etc/passwd", "etc_passwd"), ("<>", "message"), (".hidden", "hidden")],
)
def test_safe_name_stays_inside_the_folder(message_id, name):
    assert safe_name(message_id) == name


async def test_unwritable_folder_is_temporary(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    ch = FileChannel(blocker, "email")
    with pytest.raises(TemporaryDeliveryError, match="cannot write"):
        await ch.send(outgoing("email", "<a@b>", b"data"))


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError):
        FileChannel(tmp_path, "fax")  # type: ignore[arg-type]
