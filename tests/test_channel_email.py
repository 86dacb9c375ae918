"""Email: message building, and SmtpChannel against a real local SMTP server with fault modes."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import ssl
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from email.parser import BytesParser
from email.policy import strict
from email.utils import parsedate_to_datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from notifier.channels.base import Channel
from notifier.channels.email import SmtpChannel
from notifier.errors import AddressError, PermanentDeliveryError, TemporaryDeliveryError
from notifier.models import Outgoing, RenderedEmail
from notifier.render.headers import clean_header_text
from notifier.render.mime import build_email, make_message_id
from tests.smtp_server import SmtpServer, make_self_signed, server_tls_context

REPO = Path(__file__).resolve().parents[1]
SENDER = "arXiv digest <digest@notifier.example.org>"
ENVELOPE_SENDER = "digest@notifier.example.org"
NOW = datetime(2025, 6, 3, 6, 30, tzinfo=UTC)
MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}@[A-Za-z0-9.-]+>$")


def rendered(subject: str = "3 new papers for you", n: int = 3) -> RenderedEmail:
    text = "\n\n".join(
        f"{i}. Über die Quantenverschränkung, part {i}\nhttps://arxiv.org/abs/2506.{i:05d}" for i in range(n)
    )
    html = "<html><body>" + "".join(f"<p style='margin:0'>Paper {i} — ∑ λ</p>" for i in range(n)) + "</body></html>"
    return RenderedEmail(subject=subject, text=text, html=html)


def email(content: RenderedEmail | None = None, **changes: Any) -> bytes:
    """:func:`build_email` of ``content`` (default :func:`rendered`) with plain headers, but for ``changes``."""
    headers: dict[str, Any] = {
        "sender": SENDER,
        "recipient": "ada@example.org",
        "message_id": "<abc@example.org>",
        "date": NOW,
        "list_id": "digest.example.org",
        "unsubscribe_url": None,
    }
    return build_email(content or rendered(), **{**headers, **changes})


def outgoing(recipient: str, key: str, payload: bytes | None = None) -> Outgoing:
    message_id = make_message_id(key, "notifier.example.org")
    if payload is None:
        payload = email(
            recipient=recipient,
            message_id=message_id,
            list_id="arXiv digest <digest.notifier.example.org>",
            unsubscribe_url="https://notifier.example.org/unsubscribe?t=abc",
        )
    return Outgoing(
        delivery_id=key,
        subscriber="ada",
        channel="email",
        recipient=recipient,
        message_id=message_id,
        payload=payload,
    )


def channel(server: SmtpServer, **kwargs) -> SmtpChannel:
    options = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "username": None,
        "password": None,
        "sender": ENVELOPE_SENDER,
        "timeout": 5.0,
    }
    options.update(kwargs)
    return SmtpChannel(**options)


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


def parse_strict(data: bytes):
    return BytesParser(policy=strict).parsebytes(data)


# ---------------------------------------------------------------------------------------------- building messages


def test_build_email_headers_and_structure():
    data = outgoing("ada@example.org", "k1").payload
    msg = parse_strict(data)
    assert msg["From"] == SENDER
    assert msg["To"] == "ada@example.org"
    assert msg["Subject"] == "3 new papers for you"
    assert parsedate_to_datetime(msg["Date"]) == NOW
    assert MESSAGE_ID.match(msg["Message-ID"])
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == "arXiv digest <digest.notifier.example.org>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["List-Unsubscribe"] == "<https://notifier.example.org/unsubscribe?t=abc>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert "Über die Quantenverschränkung" in parts[0].get_content()
    assert "∑ λ" in unescape(parts[1].get_content()), "as character references in a 7-bit HTML part"
    assert parts[1]["Content-Transfer-Encoding"] == "7bit"
    assert not msg.defects and not any(p.defects for p in parts)


def test_build_email_is_7bit_with_crlf_and_short_lines():
    long_html = "<p>" + "x" * 5000 + "</p>"
    subject = "A very long subject " + "with many words " * 40
    data = email(RenderedEmail(subject=subject, text="t " * 3000, html=long_html))
    data.decode("ascii")  # no 8-bit octets: no 8BITMIME needed
    lines = data.split(b"\r\n")
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
    assert max(len(line) for line in lines) <= 998
    msg = parse_strict(data)
    assert str(msg["Subject"]) == subject.strip()
    assert msg["List-Id"] == "<digest.example.org>"
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize(
    "subject",
    [
        "Papers\r\nBcc: victim@example.org",
        "Papers\nBcc: victim@example.org",
        "Papers\rBcc: victim@example.org",
        "Papers\x00\x0b\x1b[31m\u2028Bcc: victim@example.org",
        "Papers\r\n\r\n<html>body injection</html>",
    ],
)
def test_subject_cannot_inject_headers(subject):
    data = email(rendered(subject=subject))
    msg = parse_strict(data)
    assert msg["Bcc"] is None
    assert msg.get_all("To") == ["ada@example.org"]
    assert "\r" not in msg["Subject"] and "\n" not in msg["Subject"]
    assert msg.get_content_type() == "multipart/alternative"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^Bcc:", head, re.MULTILINE | re.IGNORECASE)


def test_clean_header_text():
    assert clean_header_text("  a\r\n\tb\x00c\u200bd  ") == "a b c d"
    assert clean_header_text("Ünïcode ∑ stays") == "Ünïcode ∑ stays"


def test_config_header_values_with_newlines_are_refused():
    with pytest.raises(AddressError, match="cannot send a digest to"):
        email(recipient="ada@example.org\r\nBcc: victim@example.org")
    with pytest.raises(ValueError, match="https or mailto"):
        email(unsubscribe_url="http://insecure.example.org/u")
    with pytest.raises(ValueError, match="Message-ID"):
        email(message_id="<abc@example.org>\r\nBcc: victim@example.org")


def test_mailto_unsubscribe_has_no_one_click_header():
    data = email(
        date=datetime(2025, 6, 3, 8, 30, tzinfo=timezone(timedelta(hours=2))),
        unsubscribe_url="mailto:unsubscribe@example.org",
    )
    msg = parse_strict(data)
    assert msg["List-Unsubscribe"] == "<mailto:unsubscribe@example.org>"
    assert msg["List-Unsubscribe-Post"] is None
    assert msg["Date"].endswith("+0200")


def test_make_message_id_is_stable_and_well_formed():
    first = make_message_id("digest-1/ada/email", "notifier.example.org")
    assert first == make_message_id("digest-1/ada/email", "notifier.example.org")
    assert first != make_message_id("digest-2/ada/email", "notifier.example.org")
    assert MESSAGE_ID.match(first)


# -------------------------------------------------------------------------------------------------------- sending


async def test_delivers_one_message_per_recipient_with_headers(smtp):
    ch = channel(smtp)
    assert isinstance(ch, Channel) and ch.kind == "email"
    message = outgoing("ada@example.org", "one")
    await ch.send(message)
    await ch.aclose()
    (received,) = smtp.wait_for(1)
    assert received.mail_from == ENVELOPE_SENDER
    assert received.rcpt_tos == ["ada@example.org"]
    assert received.message_id == message.message_id
    msg = parse_strict(received.data)
    assert msg["To"] == "ada@example.org"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_pool_reuses_connections(smtp):
    ch = channel(smtp, pool_size=2)
    messages = [outgoing(f"user{i}@example.org", f"m{i}") for i in range(20)]
    await asyncio.gather(*(ch.send(m) for m in messages))
    await ch.aclose()
    received = smtp.wait_for(20)
    assert smtp.connections <= 2
    assert sorted(r.message_id for r in received) == sorted(m.message_id for m in messages)
    assert all(len(r.rcpt_tos) == 1 for r in received)


async def test_reconnects_when_the_server_closed_the_connection(smtp):
    smtp.faults.close_after_each = True
    ch = channel(smtp, pool_size=1)
    for i in range(4):
        await ch.send(outgoing(f"user{i}@example.org", f"r{i}"))
        await asyncio.sleep(0.05)  # let the close arrive, as it would while idle
    await ch.aclose()
    assert len(smtp.wait_for(4)) == 4
    assert smtp.connections == 4


async def test_reconnects_when_the_close_is_noticed_only_on_the_next_command(smtp):
    ch = channel(smtp, pool_size=1)
    smtp.faults.close_after_each = True
    for i in range(3):
        await ch.send(outgoing(f"user{i}@example.org", f"q{i}"))  # no pause: the client may not have seen the FIN
    await ch.aclose()
    assert [r.rcpt_tos[0] for r in smtp.wait_for(3)] == [f"user{i}@example.org" for i in range(3)]


async def test_451_is_temporary_and_the_connection_stays_usable(smtp):
    ch = channel(smtp, pool_size=1)
    smtp.faults.fail_next = 1
    with pytest.raises(TemporaryDeliveryError, match="451"):
        await ch.send(outgoing("ada@example.org", "t1"))
    await ch.send(outgoing("ada@example.org", "t1"))
    await ch.aclose()
    assert len(smtp.wait_for(1)) == 1
    assert smtp.connections == 1


async def test_550_for_one_recipient_is_permanent_for_that_one_only(smtp):
    smtp.faults.reject = {"gone@example.org"}
    ch = channel(smtp, pool_size=2)
    recipients = ["a@example.org", "gone@example.org", "b@example.org", "c@example.org"]
    results = await asyncio.gather(
        *(ch.send(outgoing(r, f"p{i}")) for i, r in enumerate(recipients)), return_exceptions=True
    )
    await ch.aclose()
    assert [type(r).__name__ for r in results] == ["NoneType", "PermanentDeliveryError", "NoneType", "NoneType"]
    error = results[1]
    assert isinstance(error, PermanentDeliveryError)
    assert "550" in str(error) and error.hint and "subscribers.yaml" in error.hint
    assert sorted(r.rcpt_tos[0] for r in smtp.wait_for(3)) == ["a@example.org", "b@example.org", "c@example.org"]


async def test_5xx_on_data_is_permanent(smtp):
    smtp.faults.fail_next = 1
    smtp.faults.fail_reply = "554 5.6.0 Message refused"
    ch = channel(smtp)
    with pytest.raises(PermanentDeliveryError, match="554"):
        await ch.send(outgoing("ada@example.org", "d1"))
    await ch.aclose()


async def test_connection_dropped_mid_data_is_temporary(smtp):
    smtp.faults.drop_next = 1
    ch = channel(smtp, pool_size=1)
    with pytest.raises(TemporaryDeliveryError, match="dropped the connection during DATA"):
        await ch.send(outgoing("ada@example.org", "x1"))
    assert smtp.messages == []
    await ch.send(outgoing("ada@example.org", "x1"))  # the retry gets a fresh connection
    await ch.aclose()
    assert len(smtp.wait_for(1)) == 1


async def test_stalled_server_is_temporary_within_the_timeout(smtp):
    smtp.faults.stall = 10
    ch = channel(smtp, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TemporaryDeliveryError, match="did not answer DATA"):
        await ch.send(outgoing("ada@example.org", "s1"))
    assert time.monotonic() - started < 2.0
    await ch.aclose()


async def test_connection_refused_is_temporary_with_hint():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    ch = SmtpChannel(host="127.0.0.1", port=port, security="none", username=None, password=None, sender=ENVELOPE_SENDER)
    with pytest.raises(TemporaryDeliveryError) as info:
        await ch.send(outgoing("ada@example.org", "c1"))
    assert info.value.hint and "NOTIFIER_SMTP_HOST" in info.value.hint
    await ch.aclose()


async def test_closed_channel_refuses_and_aclose_is_idempotent(smtp):
    ch = channel(smtp)
    await ch.send(outgoing("ada@example.org", "z1"))
    await ch.aclose()
    await ch.aclose()
    with pytest.raises(TemporaryDeliveryError, match="closed"):
        await ch.send(outgoing("ada@example.org", "z2"))


# ------------------------------------------------------------------------------------------------- TLS and login


async def test_starttls_self_signed_is_refused_by_default(certs):
    cert, key = certs
    with SmtpServer(starttls_context=server_tls_context(cert, key)) as server:
        ch = channel(server, security="starttls")
        with pytest.raises(TemporaryDeliveryError) as info:
            await ch.send(outgoing("ada@example.org", "tls1"))
        assert info.value.hint and "certificate" in info.value.hint
        await ch.aclose()
        assert server.messages == []


async def test_starttls_with_trusted_context_or_without_validation(certs):
    cert, key = certs
    with SmtpServer(starttls_context=server_tls_context(cert, key)) as server:
        trusted = channel(server, security="starttls", tls_context=ssl.create_default_context(cafile=str(cert)))
        await trusted.send(outgoing("ada@example.org", "tls2"))
        await trusted.aclose()
        unchecked = channel(server, security="starttls", validate_certs=False)
        await unchecked.send(outgoing("bob@example.org", "tls3"))
        await unchecked.aclose()
        assert len(server.wait_for(2)) == 2


async def test_starttls_required_but_not_offered_is_permanent(smtp):
    ch = channel(smtp, security="starttls")
    with pytest.raises(PermanentDeliveryError) as info:
        await ch.send(outgoing("ada@example.org", "tls4"))
    assert info.value.hint and "security" in info.value.hint
    await ch.aclose()


async def test_implicit_tls(certs):
    cert, key = certs
    with SmtpServer(implicit_tls_context=server_tls_context(cert, key)) as server:
        ch = channel(server, security="tls", tls_context=ssl.create_default_context(cafile=str(cert)))
        await ch.send(outgoing("ada@example.org", "tls5"))
        await ch.aclose()
        assert len(server.wait_for(1)) == 1


async def test_login_succeeds_and_bad_password_is_permanent_with_hint(certs):
    cert, key = certs
    context = ssl.create_default_context(cafile=str(cert))
    with SmtpServer(starttls_context=server_tls_context(cert, key), login=("bot", "s3cret")) as server:
        good = channel(server, security="starttls", tls_context=context, username="bot", password="s3cret")
        await good.send(outgoing("ada@example.org", "auth1"))
        await good.aclose()
        bad = channel(server, security="starttls", tls_context=context, username="bot", password="wrong")
        with pytest.raises(PermanentDeliveryError) as info:
            await bad.send(outgoing("ada@example.org", "auth2"))
        await bad.aclose()
        assert "535" in str(info.value)
        assert info.value.hint == "check NOTIFIER_SMTP_USERNAME/PASSWORD"
        assert "wrong" not in str(info.value)
        assert len(server.wait_for(1)) == 1


async def test_standalone_server_writes_one_file_per_message(tmp_path):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.smtp_server",
        "--port",
        "0",
        "--maildir",
        str(tmp_path),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("READY ")
        port = int(line.split()[1])
        ch = SmtpChannel(
            host="127.0.0.1", port=port, security="none", username=None, password=None, sender=ENVELOPE_SENDER
        )
        sent = [outgoing(f"user{i}@example.org", f"f{i}") for i in range(3)]
        for message in sent:
            await ch.send(message)
        await ch.aclose()
    finally:
        process.terminate()
        await process.wait()
    files = sorted(tmp_path.glob("*.eml"))
    assert [f.name for f in files] == ["000001.eml", "000002.eml", "000003.eml"]
    assert [parse_strict(f.read_bytes())["Message-ID"] for f in files] == [m.message_id for m in sent]


def test_the_html_part_goes_as_it_is_with_character_references_when_that_reads_the_same():
    page = "<html><head><style>a { color: #00e; }</style></head>\n<body><p>Über &amp; ∑ λ · 😀</p>\n</body></html>"
    msg = parse_strict(email(RenderedEmail(subject="s", text="t\n", html=page)))
    _text, part = msg.iter_parts()
    assert part["Content-Transfer-Encoding"] == "7bit"
    assert unescape(part.get_content()).replace("\r\n", "\n") == unescape(page) + "\n"
    assert "&#220;ber &amp; &#8721; &#955; &#183; &#128512;" in part.get_content()


@pytest.mark.parametrize(
    "page",
    [
        "<p>" + "word " * 300 + "</p>",  # a line over 998 octets: a template that does not break its lines
        "<style>p::before { content: '·'; }</style><p>é</p>",  # a style element does not read references
        "<p>bell \x07 and é</p>",  # a control character
        "<p>\x80 and é</p>",  # HTML would read &#128; as the euro sign
        ("<p>" + "é" * 400 + "</p>\n") * 3,  # references would add more than Gmail's margin
    ],
)
def test_an_html_part_that_could_not_go_as_it_is_is_quoted_printable(page):
    msg = parse_strict(email(RenderedEmail(subject="s", text="t\n", html=page)))
    _text, part = msg.iter_parts()
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert part.get_content().replace("\r\n", "\n") == page.removesuffix("\n") + "\n"


def test_an_html_part_that_holds_the_boundary_is_quoted_printable():
    boundary = "=_" + hashlib.sha256(b"<abc@example.org>").hexdigest()[:32]
    page = f"<p>one</p>\n--{boundary}\nContent-Type: text/plain\n\n<p>two</p>"
    data = email(RenderedEmail(subject="s", text="t\n", html=page))
    msg = parse_strict(data)
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg.get_body(("html",))["Content-Transfer-Encoding"] == "quoted-printable"
    assert data.count(f"--{boundary}".encode()) == 3, "two parts and the end: the HTML's line is encoded"


def test_parts_decode_to_exactly_the_rendered_text_and_html():
    text = "Line one\n.\nFrom here\n" + "=_ and --=_boundary-like " * 20 + "\ntrailing space \nÜber ∑ λ\n"
    html = "<p>" + "long line with = signs and é " * 40 + "</p>\n<p>x</p>"
    data = email(RenderedEmail(subject="s", text=text, html=html))
    assert data == email(RenderedEmail(subject="s", text=text, html=html)), "the same message, the same bytes"
    lines = data.split(b"\r\n")
    body = lines[lines.index(b"") :]
    assert max(len(line) for line in body) <= 76
    msg = parse_strict(data)
    plain_part, html_part = msg.iter_parts()
    assert plain_part["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain_part.get_content().replace("\r\n", "\n") == text
    assert html_part.get_content().replace("\r\n", "\n") == html + "\n"
    assert not msg.defects and not any(p.defects for p in msg.iter_parts())
    lone = parse_strict(email(RenderedEmail(subject="s", text="a \ud800 b\n", html="<p>\udfff</p>")))
    assert [unescape(part.get_content().strip()) for part in lone.iter_parts()] == ["a \ufffd b", "<p>\ufffd</p>"]
